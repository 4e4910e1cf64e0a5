"""alignkit-plugin-example: one algorithm, one reward function, one lifecycle hook.

Registered through the ``alignkit.plugins`` entry point ``example`` (see pyproject.toml);
imports nothing from alignkit but the public API (``alignkit.api``, ``alignkit.losses``,
``alignkit.ops``, ``alignkit.testing``).
"""
from __future__ import annotations

import json

from alignkit.api import hookimpl

from .dpop import SPEC, DPOP, DPOPConfig, dpop_loss
from .rewards import word_overlap

__all__ = ["SPEC", "DPOP", "DPOPConfig", "dpop_loss", "word_overlap", "STEP_LOG"]

#: file the step hook appends to, in the run folder
STEP_LOG = "example_steps.jsonl"


@hookimpl
def alignkit_register_algorithms():
    return [SPEC]


@hookimpl
def alignkit_register_reward_functions():
    return {"word_overlap": word_overlap}


@hookimpl
def alignkit_on_step_end(run, step, metrics):
    """Append ``{"step", "train/loss"}`` to ``<run folder>/example_steps.jsonl`` after every
    optimiser step (main process only: under several processes each one calls the hook)."""
    if not run.is_main_process:
        return
    row = {"step": step, "train/loss": metrics.get("train/loss")}
    with open(run.output_dir / STEP_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
