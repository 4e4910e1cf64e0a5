"""Run the command line in subprocesses and compare run folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}
#: a short, quick DPO run on the tiny model (overridable per test)
SMALL = ["model=tiny", "data=hh-rlhf-small", "data.sources.0.max_examples=120", "data.sources.0.eval_size=8",
         "data.max_length=64", "trainer.batch_size=4", "trainer.eval_steps=0", "trainer.num_threads=1",
         "logger.tensorboard=false", "logger.plot=false", "trainer.progress=false"]
#: GRPO on the tiny model with a rule reward, per-sequence loss aggregation
ONLINE = ["algo=grpo", "algo.reward.function=char_frequency", "algo.agg=seq-mean-token-mean",
          "algo.generation.max_new_tokens=12"]


def alignkit(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=timeout)


def torchrun(nproc: int, *args, port: int, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
           "-m", "alignkit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)


def start(*args, nproc: int = 1, port: int = 0, cwd=None) -> subprocess.Popen:
    """Start a run in the background (``torchrun`` when ``nproc > 1``); its own process group."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
               "-m", "alignkit", *args]
    else:
        cmd = [sys.executable, "-m", "alignkit", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd,
                            start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {path} appeared:\n"
                                 + proc.stderr.read()[-3000:])
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "final" / "model.safetensors"))


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
