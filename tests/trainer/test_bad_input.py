"""Every user error is one line `alignkit: <what>; <fix>` with exit code 2, no traceback, and leaves no
run folder and no corrupt checkpoint behind."""
import gzip
import json
import os

import pytest
import torch

from alignkit.cli import main
from alignkit.config.compose import compose_config
from alignkit.errors import DiskFullError, NonFiniteError
from alignkit.trainer import Trainer

from .helpers import SMALL, alignkit

RUN = [*SMALL, "trainer.max_steps=2"]


def _pairs(n=12, **over):
    return [{"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}", **over}
            for i in range(n)]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _fails(tmp_path, capsys, *overrides, expect: str, cwd=None):
    """Run `alignkit train` in-process; assert the one-line message, exit 2 and an untouched tmp folder."""
    out_dir = tmp_path / "out"
    old = os.getcwd()
    os.chdir(cwd or tmp_path)
    try:
        rc = main(["train", *RUN, f"trainer.output_dir={out_dir}", *overrides])
    finally:
        os.chdir(old)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    line = err[-1]
    assert line.startswith("alignkit: ") and "; " in line and expect in line, line
    assert "Traceback" not in "\n".join(err)
    assert not out_dir.exists(), list(out_dir.rglob("*"))
    return line


@pytest.mark.parametrize("override, expect", [
    ("trainer.batch_size=0", "trainer.batch_size=0 is out of range (must be >= 1)"),
    ("trainer.grad_accum=0", "trainer.grad_accum=0 is out of range (must be >= 1)"),
    ("trainer.log_steps=0", "trainer.log_steps=0 is out of range (must be >= 1)"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0 is out of range (must be >= 1)"),
    ("trainer.lr=-1", "trainer.lr=-1.0 is out of range (must be > 0); set trainer.lr to a value > 0"),
    ("trainer.max_steps=abc", "trainer.max_steps=abc is not an integer; give trainer.max_steps an integer"),
    ("algo.beta=-1", "algo.beta=-1.0 is out of range (must be > 0)"),
    ("trainer.lrr=1e-4", "'lrr' is not a key of 'trainer'; valid keys: "),
])
def test_config_errors(tmp_path, capsys, override, expect):
    _fails(tmp_path, capsys, override, expect=expect)


def test_missing_relative_data_path_is_a_missing_file(tmp_path, capsys):
    _fails(tmp_path, capsys, "data.sources.0.path=data/train.jsonl", expect="data file not found: data/train.jsonl")


def test_missing_model_folder(tmp_path, capsys):
    _fails(tmp_path, capsys, "model=hf", "model.path=/nonexistent", expect="model folder not found: /nonexistent")


def test_malformed_json_line_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    rows = [json.dumps(r) for r in _pairs(5)]
    rows[2] = rows[2][:-1]  # line 3 loses its closing brace
    f.write_text("\n".join(rows) + "\n")
    _fails(tmp_path, capsys, f"data.sources.0.path={f}", "data.sources.0.format=preference",
           expect=f"{f}, line 3: invalid JSON")


def test_empty_file_says_it_is_empty(tmp_path, capsys):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    _fails(tmp_path, capsys, f"data.sources.0.path={f}", expect="the file is empty")


def test_missing_field_is_not_listed_as_present(tmp_path, capsys):
    rows = _pairs(6)
    del rows[3]["rejected"]
    f = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    line = _fails(tmp_path, capsys, f"data.sources.0.path={f}", "data.sources.0.format=preference",
                  expect=f"{f}, line 4")
    assert "missing field 'rejected'" in line and "['chosen', 'prompt']" in line


def test_existing_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    rc = main(["train", *RUN, f"trainer.run_dir={run}"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and line == (f"alignkit: run folder {run} already holds a run; continue it with "
                                "trainer.resume=auto, or choose another trainer.run_dir")
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_explicit_run_dir_leaves_no_stray_folder(tmp_path):
    out = alignkit("train", *RUN, f"trainer.run_dir={tmp_path / 'r'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_user_error_in_a_subprocess_has_no_traceback(tmp_path):
    out = alignkit("train", *RUN, "trainer.batch_size=0", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "alignkit: trainer.batch_size=0 is out of range (must be >= 1); set trainer.batch_size to a value >= 1"]
    debug = alignkit("train", *RUN, "trainer.batch_size=0", "--debug", cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert not any(tmp_path.iterdir())


def test_identical_and_empty_pairs_are_dropped_and_counted(tmp_path):
    rows = _pairs(14) + _pairs(3, rejected="good answer 0", chosen="good answer 0") + _pairs(2, chosen="  ")
    f = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    run = tmp_path / "run"
    out = alignkit("train", *RUN, f"data.sources.0.path={f}", "data.sources.0.format=preference",
                   "data.sources.0.eval_size=0", "data.sources.0.max_examples=null", f"trainer.run_dir={run}")
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads((run / "data_stats.json").read_text())["train"]
    assert stats["identical_pair"] == 3 and stats["empty_response"] == 2 and stats["examples"] == 14


def _trainer(tmp_path, *overrides):
    cfg = compose_config([*RUN, f"trainer.run_dir={tmp_path / 'run'}", *overrides])
    t = Trainer(cfg)
    t.setup()
    return t


def test_non_finite_gradient_stops_before_the_update(tmp_path):
    t = _trainer(tmp_path, "trainer.max_steps=6", "trainer.save_steps=1")
    real = t.algorithm.compute_loss

    def poisoned(batch):
        loss, metrics = real(batch)
        if t.state.step == 4:
            loss = loss * torch.tensor(float("nan"))
        return loss, metrics

    t.algorithm.compute_loss = poisoned
    with pytest.raises(NonFiniteError) as e:
        t.fit()
    assert str(e.value).startswith("the gradient norm is nan at step 4; the run stopped before applying it; ")
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-1", "step-2", "step-3"] and not (tmp_path / "run" / "final").exists()
    assert all(torch.isfinite(p).all() for p in t.run.policy.parameters())  # the NaN step was never applied


def test_non_finite_weights_are_never_saved(tmp_path):
    t = _trainer(tmp_path, "trainer.max_steps=2", "trainer.save_steps=1")
    real = t.optimizer_step

    def step_then_corrupt():  # an update that leaves a weight non-finite (the gradients were finite)
        out = real()
        with torch.no_grad():
            next(t.run.policy.parameters())[0, 0] = float("inf")
        return out

    t.optimizer_step = step_then_corrupt
    with pytest.raises(NonFiniteError, match="is not finite at step 1; checkpoint .* was not written"):
        t.fit()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_disk_full_while_saving_is_one_line_and_leaves_no_partial(tmp_path, monkeypatch):
    t = _trainer(tmp_path, "trainer.max_steps=2", "trainer.save_steps=1")

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1587200 vs 1587088")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError) as e:
        t.fit()
    msg = str(e.value)
    assert msg.startswith(f"the disk is full while writing {tmp_path / 'run' / 'checkpoints' / 'step-1'} (")
    assert "free space or move trainer.output_dir, then resume with trainer.resume=auto" in msg and "\n" not in msg
    assert not list((tmp_path / "run").rglob("*.partial"))
