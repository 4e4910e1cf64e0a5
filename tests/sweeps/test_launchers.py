"""Sweeps end to end on the tiny model, through `alignkit train -m` in this process: the Ray launcher on a
local Ray cluster, submitit's local executor, and an Optuna search. Every job's folder is complete and
its metrics equal those of the same run launched alone; a failing job is reported and the others finish."""
import json
import shlex
from pathlib import Path

import pytest

from alignkit.cli import main
from alignkit.config.compose import compose_config
from alignkit.sweeps.summary import FIXED_COLUMNS, final_metrics
from alignkit.trainer import train

TINY = ["model=tiny", "data=hh-rlhf-small", "data.sources.0.max_examples=24", "data.sources.0.eval_size=4",
        "data.max_length=64", "trainer.max_steps=2", "trainer.batch_size=2", "logger=none", "trainer.progress=false",
        "trainer.num_threads=1"]
JOB_FILES = ("config.yaml", "metrics.jsonl", "data_stats.json", "final/model.safetensors", "job.json",
             ".hydra/overrides.yaml")


def _sweep_dir(out: Path) -> Path:
    (d,) = (out / "multirun").iterdir()
    return d


def _model_metrics(run_dir: Path) -> dict:
    return {k: v for k, v in final_metrics(run_dir).items() if not k.startswith("time/")}


def _alone(tmp_path: Path, overrides: list[str]) -> dict:
    """The metrics of the same run launched on its own."""
    run_dir = tmp_path / "alone" / "-".join(o.replace("=", "_") for o in overrides)
    result = train(compose_config([*TINY, *overrides, f"trainer.run_dir={run_dir}"]))
    return _model_metrics(result.output_dir)


def _rows(sweep: Path) -> list[dict]:
    return json.loads((sweep / "sweep.json").read_text())["jobs"]


def _check_jobs(sweep: Path, tmp_path: Path, betas: list[str]) -> None:
    for job, beta in enumerate(betas):
        d = sweep / str(job)
        for name in JOB_FILES:
            assert (d / name).exists(), (job, name)
        assert json.loads((d / "job.json").read_text())["status"] == "ok"
        assert _model_metrics(d) == _alone(tmp_path, [f"algo.beta={beta}"])  # same seed, same metrics


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_launcher_three_jobs(ray_cluster, tmp_path):
    out = tmp_path / "out"
    rc = main(["train", "-m", "algo.beta=0.1,0.3,0.5", *TINY, f"trainer.output_dir={out}", "hydra/launcher=ray"])
    assert rc == 0
    sweep = _sweep_dir(out)
    rows = _rows(sweep)
    assert [(r["job"], r["status"], r["algo.beta"]) for r in rows] == [(0, "ok", "0.1"), (1, "ok", "0.3"),
                                                                       (2, "ok", "0.5")]
    _check_jobs(sweep, tmp_path, ["0.1", "0.3", "0.5"])
    header = (sweep / "sweep.csv").read_text().splitlines()[0].split(",")
    assert tuple(header[:6]) == (*FIXED_COLUMNS, "algo.beta") and "eval/loss" in header


def test_submitit_local_failing_job_is_reported(tmp_path, capsys):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "out"
    rc = main(["train", "-m", "algo.beta=0.1,-1.0,0.5", *TINY, f"trainer.output_dir={out}",
               "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"])
    assert rc == 1  # the sweep's exit code says a job failed ...
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("alignkit: 1 of 3 sweep jobs failed (job 1: algo.beta=-1.0 is out of range")
    sweep = _sweep_dir(out)
    rows = _rows(sweep)  # ... and the others ran to the end
    assert [(r["job"], r["status"]) for r in rows] == [(0, "ok"), (1, "failed"), (2, "ok")]
    assert rows[1]["error"] == "alignkit: algo.beta=-1.0 is out of range (must be > 0); set algo.beta to a value > 0"
    assert rows[1]["eval/loss"] == "" and not (sweep / "1" / "final").exists()
    for job, beta in ((0, "0.1"), (2, "0.5")):
        assert (sweep / str(job) / "final" / "model.safetensors").exists()
        assert _model_metrics(sweep / str(job)) == _alone(tmp_path, [f"algo.beta={beta}"])


def test_basic_launcher_writes_the_summary(tmp_path):
    out = tmp_path / "out"
    assert main(["train", "-m", "trainer.seed=1,2", *TINY, f"trainer.output_dir={out}",
                 "hydra.callbacks.sweep_summary.metric=eval/loss"]) == 0
    sweep = _sweep_dir(out)
    data = json.loads((sweep / "sweep.json").read_text())
    assert [(r["job"], r["status"], r["trainer.seed"]) for r in data["jobs"]] == [(0, "ok", "1"), (1, "ok", "2")]
    assert data["objective"] == {"metric": "eval/loss", "direction": "minimize"}
    best = min(data["jobs"], key=lambda r: r["eval/loss"])
    assert data["best"]["job"] == best["job"] and f"trainer.seed={best['trainer.seed']}" in data["best"]["command"]
    assert (sweep / "sweep.png").exists() and (sweep / "sweep.md").exists()


def test_optuna_search_six_trials(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "out"
    rc = main(["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=6", "hydra.sweeper.objective=eval/loss",
               "hydra.sweeper.direction=minimize", "hydra.sweeper.seed=3", *TINY, "trainer.max_steps=4",
               "trainer.eval_steps=2", f"trainer.output_dir={out}"])
    assert rc == 0
    sweep = _sweep_dir(out)
    data = json.loads((sweep / "sweep.json").read_text())
    jobs = data["jobs"]
    assert [r["job"] for r in jobs] == list(range(6)) and {r["status"] for r in jobs} <= {"ok", "pruned"}
    assert len({(r["algo.beta"], r["trainer.lr"]) for r in jobs}) == 6  # six different configs searched
    done = [r for r in jobs if r["status"] == "ok"]
    best = min(done, key=lambda r: r["eval/loss"])
    assert best["eval/loss"] < max(r["eval/loss"] for r in done)  # better than the worst trial
    assert data["objective"] == {"metric": "eval/loss", "direction": "minimize"} and data["best"]["job"] == best["job"]
    header = (sweep / "sweep.csv").read_text().splitlines()[0]
    assert header.startswith("job,status,seconds,run_dir,error,algo.beta,trainer.lr,")
    # the best job's command runs the same training again
    command = shlex.split(data["best"]["command"])
    assert command[:2] == ["alignkit", "train"]
    rerun = train(compose_config([*command[2:], f"trainer.run_dir={tmp_path / 'best'}"]))
    assert rerun.metrics["eval/loss"] == best["eval/loss"]
    assert "Objective: minimize `eval/loss`" in (sweep / "sweep.md").read_text()


@pytest.mark.slow
def test_submitit_two_tasks_train_one_data_parallel_run(tmp_path):
    """tasks_per_node=2: two processes with torchrun's variables train one run (batch size is global), with
    the metrics of the one-process run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "out"
    assert main(["train", "-m", "algo.beta=0.1", *TINY, f"trainer.output_dir={out}", "hydra/launcher=submitit_local",
                 "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10"]) == 0
    sweep = _sweep_dir(out)
    (log,) = sweep.glob(".submitit/*/*_1_log.out")
    assert "global_rank=1(2)" in log.read_text()
    assert _rows(sweep)[0]["status"] == "ok"
    got, alone = _model_metrics(sweep / "0"), _alone(tmp_path, ["algo.beta=0.1"])
    assert got.keys() == alone.keys()
    for k in got:
        assert got[k] == pytest.approx(alone[k], rel=1e-5, abs=1e-6), k


def test_interrupted_job_stops_the_later_jobs(tmp_path, monkeypatch):
    """Ctrl-C in job 0 (it saved a checkpoint): job 0 reports how to resume, job 1 does not start."""
    import alignkit.cli as cli
    from alignkit.trainer.loop import TrainingInterrupted

    def interrupted(cfg, overrides, registry=None):
        raise TrainingInterrupted("SIGINT at step 1: checkpoint saved to x", "resume with trainer.resume=auto", 2)

    monkeypatch.setattr(cli, "_train_one", interrupted)
    out = tmp_path / "out"
    assert main(["train", "-m", "algo.beta=0.1,0.5", *TINY, f"trainer.output_dir={out}"]) == 1
    rows = _rows(_sweep_dir(out))
    assert [(r["status"], r["error"]) for r in rows] == [
        ("failed", "alignkit: SIGINT at step 1: checkpoint saved to x; resume with trainer.resume=auto"),
        ("failed", "not started: the sweep was interrupted (SIGINT at step 1: checkpoint saved to x)")]


@pytest.mark.parametrize("setting, message", [
    ("hydra.sweeper.objective=accuracy", "alignkit: hydra.sweeper.objective=accuracy: not a metric name; give a "
                                         "metric as logged in metrics.jsonl, e.g. eval/preference_accuracy"),
    ("hydra.sweeper.n_trials=0", "alignkit: hydra.sweeper.n_trials=0 is not a positive integer; set "
                                 "hydra.sweeper.n_trials >= 1")])
def test_bad_search_setting_is_one_line(tmp_path, capsys, setting, message):
    pytest.importorskip("optuna")
    assert main(["train", "-m", "hydra/sweeper=optuna", setting, f"trainer.output_dir={tmp_path / 'out'}"]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "out").exists()


def test_requeued_job_resumes_its_checkpoint(tmp_path):
    """A job run again in its folder (a Slurm requeue, a Ray retry) continues from its newest checkpoint
    and ends with the metrics of the uninterrupted job."""
    import shutil

    sweep = tmp_path / "sweep"
    args = ["train", "-m", "algo.beta=0.1", *TINY, "trainer.save_steps=1", f"hydra.sweep.dir={sweep}"]
    assert main(args) == 0
    first = _model_metrics(sweep / "0")
    assert (sweep / "0" / "checkpoints" / "step-1").is_dir()
    shutil.rmtree(sweep / "0" / "final")  # killed after step 2, before the end
    (sweep / "0" / "job.json").unlink()
    assert main(args) == 0
    assert "resumed from" in next((sweep / "0").glob("*.log")).read_text()
    assert _model_metrics(sweep / "0") == first and (sweep / "0" / "final" / "model.safetensors").exists()
