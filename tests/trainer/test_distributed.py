"""Data parallel under torchrun (2 CPU processes, gloo: DDP and FSDP2) equals one process with the same
global batch."""
import pytest

from .helpers import ONLINE, SMALL, alignkit, losses, max_weight_diff, steps, torchrun

STEPS = ["trainer.max_steps=20"]


@pytest.mark.parametrize("algo, port", [
    (["algo=dpo"], 29611),
    (ONLINE, 29612),
    (["algo=dpo", "trainer/distributed=fsdp"], 29614),
], ids=["dpo-ddp", "grpo-ddp", "dpo-fsdp"])
def test_two_processes_equal_one(tmp_path, algo, port):
    one, two = tmp_path / "one", tmp_path / "two"
    a = alignkit("train", *SMALL, *algo, *STEPS, f"trainer.run_dir={one}")
    assert a.returncode == 0, a.stderr[-3000:]
    b = torchrun(2, "train", *SMALL, *algo, *STEPS, f"trainer.run_dir={two}", port=port)
    assert b.returncode == 0, b.stderr[-3000:]
    la, lb = losses(one), losses(two)
    assert sorted(la) == list(range(1, 21)) and sorted(lb) == sorted(la)  # one row per step: rank 0 logs alone
    assert max(abs(la[s] - lb[s]) for s in la) <= 1e-5
    assert max_weight_diff(one, two) <= 5e-5  # 20 Adam steps on float32 sums taken in another order
    assert steps(two).count(0) == 1 and b.stdout.count("run folder:") == 1
    assert (two / "final" / "config.json").exists() and (two / "final" / "model.safetensors").exists()


def test_global_batch_must_split_over_processes(tmp_path):
    out = torchrun(2, "train", *SMALL, "trainer.batch_size=3", "trainer.max_steps=1", f"trainer.run_dir={tmp_path / 'r'}",
                   port=29613)
    assert out.returncode != 0
    assert "alignkit: trainer.batch_size=3 is global and must split evenly over 2 processes; use a multiple of 2" \
        in out.stderr
    assert not (tmp_path / "r").exists()
