"""examples/alignkit-plugin-example, installed as a separate package: its algorithm trains
through the command line, `alignkit list` names its plugin, its step hook writes its log."""
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

if not any(ep.name == "example" for ep in entry_points(group="alignkit.plugins")):
    pytest.skip("alignkit-plugin-example is not installed; install it with "
                "`pip install --no-deps --no-build-isolation -e examples/alignkit-plugin-example`",
                allow_module_level=True)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}
#: a short run on the tiny model (as tests/trainer/helpers.py's SMALL)
SMALL = ["model=tiny", "data=hh-rlhf-small", "data.sources.0.max_examples=120", "data.sources.0.eval_size=8",
         "data.max_length=64", "trainer.batch_size=4", "trainer.eval_steps=0", "trainer.num_threads=1",
         "logger.tensorboard=false", "logger.plot=false", "trainer.progress=false"]


def alignkit(*args):
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)


def test_list_names_the_plugin():
    out = alignkit("list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:1] == ["dpop"] and "(plugin: example)" in line for line in lines), out.stdout
    assert any("word_overlap" in line and "(plugin: example)" in line for line in lines), out.stdout


def test_trains_through_the_entry_point(tmp_path):
    run_dir = tmp_path / "run"
    out = alignkit("train", "algo=dpop", "algo.lam=2.0", *SMALL, "trainer.max_steps=2", f"trainer.run_dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2] and "train/dpop/penalty" in train[0]
    assert "eval/preference_accuracy" in rows[-1]
    # the plugin's alignkit_on_step_end hook wrote one line per step into the run folder
    hook_rows = [json.loads(line) for line in (run_dir / "example_steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in hook_rows] == [1, 2]
    assert hook_rows[0]["train/loss"] == pytest.approx(train[0]["train/loss"])
    assert (run_dir / "final").is_dir()


def test_disabled_by_its_entry_point_name():
    from alignkit.registry import build_registry

    reg = build_registry(disabled=["example"])
    assert "dpop" not in reg.algorithms and "word_overlap" not in reg.reward_functions
    assert build_registry().algorithms["dpop"][1] == "example"


def test_imports_only_the_public_api():
    import ast

    public = {"alignkit.api", "alignkit.losses", "alignkit.ops", "alignkit.testing"}
    root = Path(__file__).resolve().parents[2] / "examples" / "alignkit-plugin-example"
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                if name == "alignkit" or name.startswith("alignkit."):
                    assert name in public, f"{path.relative_to(root)} imports {name}"
