"""Exact resume: a run killed at a random step (SIGKILL) and resumed ends with the uninterrupted run's
weights; SIGINT / SIGTERM save a checkpoint and stop with a one-line hint; checkpoints are data."""
import os
import random
import signal

import pytest
import torch

from .helpers import ONLINE, SMALL, alignkit, max_weight_diff, start, steps, wait_for

STEPS = ["trainer.max_steps=10", "trainer.save_steps=1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference runs, one per case, computed once."""
    cache = {}

    def get(name, args, nproc=1, port=0):
        if name not in cache:
            d = tmp_path_factory.mktemp("ref") / name
            proc = start("train", *SMALL, *args, *STEPS, f"trainer.run_dir={d}", nproc=nproc, port=port)
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            cache[name] = d
        return cache[name]

    return get


CASES = {  # name: (overrides, processes, seed of the kill step)
    "dpo-seed1": (["algo=dpo"], 1, 1),
    "dpo-seed2": (["algo=dpo"], 1, 2),
    "grpo-seed3": (ONLINE, 1, 3),
    "dpo-2proc-seed4": (["algo=dpo"], 2, 4),
    "dpo-fsdp-seed5": (["algo=dpo", "trainer/distributed=fsdp"], 2, 5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, uninterrupted, name):
    args, nproc, seed = CASES[name]
    port = 29700 + seed
    ref = uninterrupted(name.rsplit("-seed", 1)[0], args, nproc, port + 20)
    kill_after = random.Random(seed).randint(2, 8)
    run = tmp_path / "run"
    proc = start("train", *SMALL, *args, *STEPS, f"trainer.run_dir={run}", nproc=nproc, port=port)
    wait_for(run / "checkpoints" / f"step-{kill_after}" / "trainer_state.pt", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists()
    resumed = start("train", *SMALL, *args, *STEPS, f"trainer.run_dir={run}", "trainer.resume=auto", nproc=nproc,
                    port=port)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert max_weight_diff(ref, run) <= 1e-6
    assert steps(run) == steps(ref)  # the resumed metrics.jsonl continues without a duplicate step
    assert not list(run.rglob("*.partial"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, uninterrupted, sig):
    run = tmp_path / "run"
    args = [*SMALL, "algo=dpo", "trainer.max_steps=10", "trainer.save_steps=0"]
    proc = start("train", *args, f"trainer.run_dir={run}")
    wait_for(run / "metrics.jsonl", proc)  # training has started
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"alignkit: {sig.name} at step ") and "checkpoint saved to" in last
    assert f"trainer.run_dir={run} trainer.resume=auto" in last and "Traceback" not in err
    ckpts = list((run / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.pt").exists()
    resumed = alignkit("train", *args, f"trainer.run_dir={run}", "trainer.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref = uninterrupted("dpo", ["algo=dpo"])
    assert max_weight_diff(ref, run) <= 1e-6


def test_checkpoint_is_data_not_code(uninterrupted):
    ckpt = uninterrupted("dpo", ["algo=dpo"]) / "checkpoints" / "step-5"
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)  # raises on any pickled object
    assert state["step"] == 5 and state["data"] == {"epoch": 0, "offset": 20}
    assert {"optimizer", "scheduler", "rng", "algorithm", "metrics"} <= set(state)
    assert (ckpt / "weights.safetensors").exists() and (ckpt / "model" / "model.safetensors").exists()


def test_save_total_limit_keeps_the_newest(tmp_path):
    run = tmp_path / "run"
    out = alignkit("train", *SMALL, "trainer.max_steps=6", "trainer.save_steps=1", "trainer.save_total_limit=2",
                   f"trainer.run_dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-5"]


def test_stale_partial_folders_are_removed_on_start(tmp_path, uninterrupted):
    run = tmp_path / "run"
    args = [*SMALL, "trainer.max_steps=3", "trainer.save_steps=1"]
    assert alignkit("train", *args, f"trainer.run_dir={run}").returncode == 0
    (run / "checkpoints" / "step-9.partial").mkdir()
    (run / "final.partial").mkdir()
    out = alignkit("train", *args[:-2], "trainer.max_steps=4", f"trainer.run_dir={run}", "trainer.resume=auto")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not list(run.rglob("*.partial")) and steps(run) == [0, 1, 2, 3, 4]
