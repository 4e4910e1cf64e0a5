"""The command line as a user meets it (subprocesses, like a shell)."""
import os
import subprocess
import sys

from omegaconf import OmegaConf

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
TINY_RUN = ["model=tiny", "data=hh-rlhf-small", "data.sources.0.max_examples=24", "data.sources.0.eval_size=4",
            "data.max_length=64", "trainer.max_steps=1", "trainer.batch_size=2", "logger=none", "trainer.progress=false"]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=900)


def test_help_reads_like_a_tool():
    out = run("--help")
    assert out.returncode == 0
    for word in ("train", "list", "bench", "profile", "examples:", "alignkit train -m"):
        assert word in out.stdout


def test_unknown_command_fails():
    out = run("trian")
    assert out.returncode == 2


def test_list_shows_algorithms_with_plugins_and_presets():
    out = run("list")
    assert out.returncode == 0, out.stderr
    assert "dpo" in out.stdout and "(plugin: dpo)" in out.stdout and "(plugin: sft)" in out.stdout
    assert "smollm2-135m" in out.stdout and "tiny" in out.stdout and "hh-rlhf" in out.stdout


def test_typo_is_reported_with_valid_keys(tmp_path):
    out = run("train", "trainer.lrr=1", f"trainer.output_dir={tmp_path}")
    assert out.returncode == 2
    assert "'lrr' is not a key of 'trainer'" in out.stderr and "max_steps" in out.stderr
    assert not any(tmp_path.iterdir())  # no run folder for a typo


def test_multirun_writes_one_folder_per_run(tmp_path):
    out = run("train", "-m", "algo.beta=0.05,0.5", *TINY_RUN, f"trainer.output_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/config.yaml"))
    assert [p.name for p in runs] == ["0", "1"]
    betas = []
    for r in runs:
        assert (r / "final" / "model.safetensors").exists() and (r / "metrics.jsonl").exists()
        betas.append(OmegaConf.load(r / "config.yaml").algo.beta)
    assert betas == [0.05, 0.5]
    assert out.stdout.count("run folder:") == 2


def test_explicit_run_dir_is_created(tmp_path):
    target = tmp_path / "new" / "nested"
    args = [a for a in TINY_RUN if a != "logger=none"]
    out = run("train", *args, f"trainer.run_dir={target}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (target / "metrics.jsonl").read_text().strip() and (target / "final" / "config.json").exists()
    assert f"run folder: {target}" in out.stdout
