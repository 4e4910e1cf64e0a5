"""Benchmark tasks through EleutherAI's lm-evaluation-harness (``pip install 'alignkit[eval]'``).

:func:`run_lm_eval` evaluates a saved model folder (a run's ``final/``, any Hugging Face causal
LM) on lm-eval tasks: its built-in tasks (which download their data when online) or task YAML
files of your own in ``include_path`` whose data are local files, e.g.::

    task: my_mc
    dataset_path: json
    dataset_kwargs: {data_files: {test: /data/my_mc.jsonl}}
    test_split: test
    output_type: multiple_choice
    doc_to_text: "{{question}}"
    doc_to_choice: "{{choices}}"
    doc_to_target: "{{label}}"
    metric_list: [{metric: acc}]

The harness does the prompting, the log-likelihood scoring of the choices and the metrics, so
scores are comparable with published lm-eval numbers.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from alignkit.errors import UserError

__all__ = ["run_lm_eval"]

INSTALL_FIX = "pip install 'alignkit[eval]'"


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("lm-eval is not installed", INSTALL_FIX) from None
    return lm_eval, TaskManager


def _task_manager(TaskManager: Any, tasks: list[str], include_path: str | None):
    """A TaskManager knowing every name in ``tasks``: the ``include_path`` tasks alone when they
    suffice (indexing lm-eval's thousands of built-in tasks takes seconds), else built-ins too."""
    if include_path is not None:
        path = Path(include_path).expanduser()
        if not path.exists():
            raise UserError(f"lm-eval task folder not found: {include_path}",
                            "give include_path a folder (or YAML file) holding the task configs")
        own = TaskManager(include_path=str(path), include_defaults=False)
        if set(tasks) <= set(own.all_tasks):
            return own
    manager = TaskManager(include_path=str(Path(include_path).expanduser()) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        near = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        where = f" or in {include_path}" if include_path else ""
        raise UserError(f"unknown lm-eval task{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}",
                        f"{hint}use a task name of lm-eval's built-in tasks{where} (`lm-eval ls tasks` lists them), "
                        "or give include_path a folder of task YAML files")
    return manager


def _metric_name(key: str) -> str:
    """``"acc,none"`` -> ``"acc"``; another filter stays as a suffix: ``"exact_match,strict"`` -> ``"exact_match/strict"``."""
    metric, _, filt = key.partition(",")
    return metric if filt in ("", "none") else f"{metric}/{filt}"


def run_lm_eval(model_path: str, tasks: list[str], *, include_path: str | None = None, limit: int | None = None,
                batch_size: int = 8, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Scores of the model in ``model_path`` on lm-eval ``tasks``: ``{task: {metric: value, ...,
    "n": examples scored}}`` (``acc``, ``acc_stderr``, ``acc_norm``, ... as the task defines them).

    ``include_path``: a folder (or file) of task YAML configs, searched besides the built-in
    tasks; ``limit``: at most this many examples per task (for quick checks)."""
    lm_eval, TaskManager = _lm_eval()
    tasks = [str(t) for t in tasks]
    if not tasks:
        raise UserError("no lm-eval tasks given", "name at least one task")
    if limit is not None and limit < 1:
        raise UserError(f"limit={limit} is out of range", "give limit >= 1, or None for every example")
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} is out of range", "give batch_size >= 1")
    folder = Path(model_path).expanduser()
    if (folder / "config.json").is_file():
        pretrained = str(folder)
    elif not folder.exists() and model_path.count("/") == 1 and not model_path.startswith((".", "/", "~")):
        pretrained = model_path  # a hub name (org/model): lm-eval loads it through transformers
    else:
        raise UserError(f"not a model folder: {model_path} (no config.json)",
                        "give the folder of a saved Hugging Face model, e.g. a run's final/")
    manager = _task_manager(TaskManager, tasks, include_path)
    out = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": pretrained, "dtype": "auto"},
        tasks=tasks, task_manager=manager, limit=limit, batch_size=batch_size, device=device,
        log_samples=False)
    if out is None:  # not the main process of a distributed run
        return {}
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in out["results"].items():
        row = {_metric_name(k): float(v) for k, v in metrics.items()
               if k not in ("alias", "sample_len") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        n = out.get("n-samples", {}).get(task, {})
        if "effective" in n:
            row["n"] = float(n["effective"])
        scores[task] = row
    return scores
