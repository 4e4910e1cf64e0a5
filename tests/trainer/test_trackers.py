"""MLflow and Weights & Biases runs next to metrics.jsonl (logger.mlflow / logger.wandb), offline."""
import json
import time

import pytest

from alignkit.config.compose import compose_config
from alignkit.errors import UserError
from alignkit.trainer import train

RUN = ["model=tiny", "data=hh-rlhf-small", "data.sources.0.max_examples=16", "data.sources.0.eval_size=4",
       "data.max_length=48", "data.max_prompt_length=24", "trainer.batch_size=2", "trainer.max_steps=2",
       "trainer.eval_steps=0", "trainer.eval_at_start=false", "trainer.progress=false", "logger.tensorboard=false",
       "logger.plot=false"]


def _rows(run_dir):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


def test_mlflow_file_store_holds_config_and_metrics(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path / "run"
    result = train(compose_config([*RUN, "logger=mlflow", "logger.project=ak-test", f"trainer.run_dir={run_dir}"]))
    assert result.output_dir == run_dir
    assert (run_dir / "mlruns").is_dir()
    ids = json.loads((run_dir / "trackers.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "ak-test"
    rows = _rows(run_dir)
    expected = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert [s for s, _ in expected] == [1, 2]
    history = [(m.step, m.value) for m in client.get_metric_history(ids["mlflow"], "train/loss")]
    assert [s for s, _ in history] == [s for s, _ in expected]
    assert [v for _, v in history] == pytest.approx([v for _, v in expected], rel=1e-12)
    assert run.data.metrics["eval/loss"] == pytest.approx(rows[-1]["eval/loss"], rel=1e-12)
    params = run.data.params
    assert params["trainer.max_steps"] == "2" and params["algo.name"] == "dpo" and params["model.name"] == "tiny"
    assert params["data.sources.0.max_examples"] == "16" and params["logger.mlflow"] == "True"


def _wandb_records(path):
    """The protobuf records of a ``.wandb`` file. wandb >= 0.19 ships no Python reader (its Go core
    writes the file), so this walks the container, LevelDB's log format (32 KiB blocks of chunks with
    a 7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST) after W&B's 7-byte file header, and
    decodes each record with wandb's own protobuf classes."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if len(data) < 7:  # the core process has not written the file header yet
        return
    assert data[:4] == b":W&B"
    pos, chunk, block = 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # a chunk still being written
            return
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def test_wandb_offline_run_holds_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    wandb_dir = tmp_path / "wandb-files"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    run_dir = tmp_path / "run"
    train(compose_config([*RUN, "logger=wandb", f"trainer.run_dir={run_dir}"]))
    ids = json.loads((run_dir / "trackers.json").read_text())
    runs = list((wandb_dir / "wandb").glob(f"offline-run-*-{ids['wandb']}"))
    assert len(runs) == 1 and not (run_dir / "wandb").exists()  # $WANDB_DIR wins over the run folder
    (log_file,) = runs[0].glob("*.wandb")
    records = []
    for _ in range(100):  # wandb's core process may still be writing the file after finish() returns
        records = list(_wandb_records(log_file))
        if records and records[-1].WhichOneof("record_type") == "exit":
            break
        time.sleep(0.2)
    history, config, name = [], {}, None
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":
            name, project = rec.run.display_name, rec.run.project
    logged = [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h]
    rows = _rows(run_dir)
    expected = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert [s for s, _ in logged] == [s for s, _ in expected] == [1, 2]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-12)
    assert history[-1]["eval/loss"] == pytest.approx(rows[-1]["eval/loss"], rel=1e-12)
    assert config["trainer"]["max_steps"] == 2 and config["algo"]["name"] == "dpo"
    assert (name, project) == ("run", "alignkit")


def test_missing_tracker_package_is_a_composition_error(tmp_path, monkeypatch):
    from accelerate.utils import imports

    from alignkit.cli import main

    monkeypatch.setattr(imports, "is_mlflow_available", lambda: False)
    with pytest.raises(UserError) as err:
        compose_config(["logger=mlflow"])
    assert str(err.value) == ("logger.mlflow=true needs MLflow, which is not installed; "
                              "pip install 'alignkit[mlflow]' (or set logger.mlflow=false)")
    monkeypatch.setattr(imports, "is_wandb_available", lambda: False)
    out = tmp_path / "outputs"
    assert main(["train", *RUN, "logger.wandb=true", f"trainer.output_dir={out}"]) == 2
    assert not out.exists()  # refused before any run folder was made


def test_flatten_config():
    from alignkit.trainer.trackers import flatten_config

    assert flatten_config({"a": {"b": 1, "c": None}, "d": [{"e": "x"}, 2], "f": [], "g": {}}) == \
        {"a.b": 1, "a.c": "null", "d.0.e": "x", "d.1": 2, "f": "[]", "g": "{}"}
