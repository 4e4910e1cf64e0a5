"""The sweep summary from hand-made job folders: exact CSV, Markdown, JSON; the search space parser; the
pruning reporter against a real Optuna study."""
import json

import pytest

from alignkit.sweeps.summary import Objective, override_pairs, summarize, to_csv, write_summary


def _job(sweep, num, record=None, metrics=(), overrides=None):
    d = sweep / str(num)
    d.mkdir(parents=True)
    if record is not None:
        (d / "job.json").write_text(json.dumps({"job": num, **record}))
    else:  # a job killed before it ended: Hydra's .hydra/ only
        (d / ".hydra").mkdir()
        (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    return d


@pytest.fixture
def sweep(tmp_path):
    s = tmp_path / "multirun" / "2026-01-01_00-00-00_dpo"
    base = ["model=tiny", "trainer.max_steps=2"]
    _job(s, 0, {"status": "ok", "seconds": 12.5, "error": "", "overrides": [*base, "algo.beta=0.1"]},
         [{"step": 0, "eval/loss": 0.69}, {"step": 2, "train/loss": 0.6, "eval/loss": 0.5}])
    _job(s, 1, {"status": "ok", "seconds": 3, "error": "", "overrides": [*base, "algo.beta=0.5"]},
         [{"step": 2, "train/loss": 0.4, "eval/loss": 0.3}])
    _job(s, 2, {"status": "failed", "seconds": 0.25, "error": "alignkit: a, b; c", "overrides": [*base, "algo.beta=-1"]})
    _job(s, 3, None, overrides=[*base, "algo.beta=0.7"])
    _job(s, 10, {"status": "pruned", "seconds": 1.0, "error": "", "overrides": [*base, "algo.beta=0.9"]},
         [{"step": 1, "train/loss": 0.65, "eval/loss": 0.66}])
    (s / "not-a-job").mkdir()
    (s / "multirun.yaml").write_text("{}\n")
    return s


def test_csv_exact(sweep):
    assert to_csv(summarize(sweep)) == (
        "job,status,seconds,run_dir,error,algo.beta,eval/loss,train/loss\n"
        "0,ok,12.5,0,,0.1,0.5,0.6\n"
        "1,ok,3.0,1,,0.5,0.3,0.4\n"
        '2,failed,0.25,2,"alignkit: a, b; c",-1,,\n'
        "3,failed,0.0,3,the job left no job.json (killed before it ended?); see the log in its folder,0.7,,\n"
        "10,pruned,1.0,10,,0.9,0.66,0.65\n")


def test_override_columns_never_contain_a_slash():
    assert override_pairs(["algo.beta=0.1", "+x=1", "~y=2", "trainer/distributed=fsdp", "algo.beta=0.2"]) == {
        "algo.beta": "0.2", "x": "1", "y": "2", "trainer.distributed": "fsdp"}


def test_files_best_job_and_json(sweep):
    s = write_summary(sweep, Objective("eval/loss", "minimize"))
    assert {p.name for p in s.files} == {"sweep.csv", "sweep.md", "sweep.json", "sweep.png"}
    assert (sweep / "sweep.png").stat().st_size > 1000
    assert [r["job"] for r in s.failed] == [2, 3]
    # the pruned job's 0.66 and the failed ones never win; the lowest eval/loss of an ok job does
    assert s.best == {"job": 1, "command": "alignkit train model=tiny trainer.max_steps=2 algo.beta=0.5"}
    data = json.loads((sweep / "sweep.json").read_text())
    assert data["objective"] == {"metric": "eval/loss", "direction": "minimize"}
    assert data["best"] == s.best and data["sweep_dir"] == str(sweep)
    assert data["jobs"][0] == {"job": 0, "status": "ok", "seconds": 12.5, "run_dir": "0", "error": "",
                               "algo.beta": "0.1", "eval/loss": 0.5, "train/loss": 0.6}
    md = (sweep / "sweep.md").read_text()
    assert "| job | status | seconds | run_dir | error | algo.beta | eval/loss | train/loss |" in md
    assert "| 2 | failed | 0.25 | 2 | alignkit: a, b; c | -1 |  |  |" in md
    assert "5 jobs: 2 ok, 2 failed, 1 pruned" in md
    assert "Objective: minimize `eval/loss`" in md and "Best: job 1 (eval/loss = 0.3)" in md
    assert "```bash\nalignkit train model=tiny trainer.max_steps=2 algo.beta=0.5\n```" in md
    assert write_summary(sweep, Objective("eval/loss", "maximize")).best["job"] == 0
    assert write_summary(sweep).best is None and json.loads((sweep / "sweep.json").read_text())["objective"] is None


def test_search_space_from_params_and_command_line():
    pytest.importorskip("optuna")
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from alignkit.errors import UserError
    from alignkit.sweeps.optuna_sweeper import search_space

    fixed, space = search_space(
        ["model=tiny", "trainer.lr=interval(1e-4, 1e-2)", "trainer.batch_size=range(2, 8, 2)"],
        {"algo.beta": "tag(log, interval(0.01, 1.0))", "trainer.lr": "choice(0.1, 0.2)", "algo": "choice(dpo, ipo)",
         "trainer.seed": "tag(int, interval(1, 5))"})
    assert fixed == ["model=tiny"]
    assert space == {"algo.beta": FloatDistribution(0.01, 1.0, log=True),
                     "trainer.lr": FloatDistribution(1e-4, 1e-2),  # the command line wins
                     "algo": CategoricalDistribution(["dpo", "ipo"]),
                     "trainer.seed": IntDistribution(1, 5),
                     "trainer.batch_size": CategoricalDistribution([2, 4, 6])}
    with pytest.raises(UserError, match="no parameter to search"):
        search_space(["model=tiny"], None)


def test_trial_reporter_prunes_a_worse_trial(tmp_path):
    optuna = pytest.importorskip("optuna")
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from alignkit.sweeps.optuna_sweeper import TrialReporter, storage_url

    cfg = OmegaConf.create({"objective": "eval/loss", "storage": None, "study_name": "s", "pruner": "median",
                            "pruner_startup_trials": 1, "pruner_warmup_steps": 0})
    study = optuna.create_study(study_name="s", storage=storage_url(None, str(tmp_path)), direction="minimize")
    first = study.ask()
    first.report(0.5, 2)
    first.report(0.3, 3)
    study.tell(first, 0.4)
    study.ask()  # trial 1: the job below
    run = SimpleNamespace(accelerator=SimpleNamespace(num_processes=1))
    reporter = TrialReporter.for_job(cfg, str(tmp_path), 1, max_steps=4)
    reporter.alignkit_on_evaluate(run=run, step=2, metrics={"eval/loss": 0.45})  # better than trial 0 at step 2: goes on
    reporter.alignkit_on_evaluate(run=run, step=4, metrics={"eval/loss": 9.0})  # the final evaluation: never pruned
    with pytest.raises(optuna.TrialPruned, match="pruned at step 3"):
        reporter.alignkit_on_evaluate(run=run, step=3, metrics={"eval/loss": 0.9})
    assert study.trials[1].intermediate_values == {2: 0.45, 3: 0.9}
