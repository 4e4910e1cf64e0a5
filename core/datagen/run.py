"""Running one data step: :class:`StepRun` (what a step function is handed) and :func:`execute`.

A step function ``run(cfg, step)`` reads its inputs with :meth:`StepRun.read`,
starts (or resumes) with :meth:`StepRun.start`, commits rows batch by batch with
:meth:`StepRun.commit_batch`, then writes its output with
:meth:`StepRun.write`. :func:`execute` does the rest: refuses to overwrite an output
unless ``overwrite=true``, writes the provenance record next to the output (command,
config, models, input fingerprints, output fingerprints, counts, time) and removes the
partial folder once everything is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from alignkit.data.load import resolve_path
from alignkit.datagen.io import Rows, file_fingerprint, output_suffix, read_rows, side_path, write_rows
from alignkit.datagen.work import WorkDir
from alignkit.errors import UserError

__all__ = ["StepRun", "execute", "run_key"]

log = logging.getLogger(__name__)

#: config keys that do not change what a step writes (a run resumes across changes to them)
VOLATILE_KEYS = ("overwrite", "resume", "progress")


def run_key(cfg: DictConfig, fingerprints: Sequence[str]) -> str:
    """Hash of everything that determines a step's output: its config (less :data:`VOLATILE_KEYS`)
    and the content of its inputs."""
    conf = OmegaConf.to_container(cfg, resolve=True)
    for k in VOLATILE_KEYS:
        conf.pop(k, None)
    blob = json.dumps({"config": conf, "inputs": list(fingerprints)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class StepRun:
    """The context a data step runs in; see the module docstring."""

    def __init__(self, name: str, cfg: DictConfig, registry: Any = None, command: str = ""):
        self.name = name
        self.cfg = cfg
        self.registry = registry
        self.command = command
        self.output = Path(resolve_path(str(cfg.output)))
        self.inputs: list[Rows] = []
        self.counts: Counter = Counter()
        self.files: dict[str, tuple[Path, int | None]] = {}  #: what was written: name -> (path, rows or None)
        self.models: dict[str, dict] = {}  #: provenance of each model loaded
        self.work: WorkDir | None = None
        self.resumed_from: int | None = None  #: ``done`` of the interrupted run this one continued
        self.seconds = 0.0  #: how long the step ran (this run only, when it resumed another)

    # -- inputs ------------------------------------------------------------------
    def read(self, path: str, key: str = "input") -> Rows:
        """Read an input file (recorded for provenance and the resume key)."""
        rows = read_rows(path, key)
        self.inputs.append(rows)
        return rows

    def formats(self) -> dict:
        """Every registered data format by name (built-in and plugins')."""
        return {name: spec for name, (spec, _) in self.registry.data_formats.items()}

    # -- resumable progress --------------------------------------------------------
    def start(self) -> dict:
        """Open ``<output>.partial/`` and return the state of an interrupted run of the same config
        and inputs (``{}`` when starting fresh); restores the counts it had reached."""
        key = run_key(self.cfg, [r.fingerprint for r in self.inputs])
        self.work = WorkDir(side_path(self.output, "partial"), key)
        state = self.work.open(bool(self.cfg.get("resume", True)))
        if state:
            self.resumed_from = int(state.get("done", 0))
            for name, n in state.get("counts", {}).items():  # the totals at the last commit (counts made
                self.counts[name] = n  # before start(), e.g. records the input's format skipped, included)
            log.info("%s: resuming from %s (%d done)", self.name, self.work.path, self.resumed_from)
        return state

    def checkpoint(self, done: int, **extra: Any) -> None:
        """Commit a finished batch: ``done`` items processed, the counts so far and ``extra`` state."""
        self.work.commit({"done": int(done), "counts": dict(self.counts), **extra})

    def commit_batch(self, done: int, streams: dict[str, Sequence[dict]], **extra: Any) -> None:
        """Append a finished batch's rows to their streams (``{"rows": [...], ...}``), then :meth:`checkpoint`."""
        for name, rows in streams.items():
            self.work.append(name, rows)
        self.checkpoint(done, **extra)

    def seed(self, index: int) -> int:
        """A seed for batch ``index`` that depends on ``cfg.seed`` only, so a resumed run samples
        exactly what an uninterrupted one would."""
        return int(hashlib.sha256(f"{self.cfg.get('seed', 0)}:{self.name}:{index}".encode()).hexdigest()[:8], 16)

    def progress(self, total: int, initial: int = 0, unit: str = "it"):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit=unit, desc=self.name, disable=not self.cfg.progress,
                    dynamic_ncols=True)

    # -- models --------------------------------------------------------------------
    def device(self):
        import torch

        want = str(self.cfg.get("device", "auto"))
        if want == "cuda" and not torch.cuda.is_available():
            raise UserError("device=cuda but no CUDA device is available", "use device=auto or device=cpu")
        return torch.device("cuda" if want != "cpu" and torch.cuda.is_available() else "cpu")

    def load_model(self, model_cfg: Any = None, role: str = "model") -> tuple[Any, Any]:
        """``(model, tokenizer)`` of ``model_cfg`` (default ``cfg.model``) in eval mode on the step's
        device; random-init presets are seeded with ``cfg.seed`` so every run gets the same model."""
        import torch

        from alignkit.models.build import build_model, build_tokenizer, resolve_model_path

        model_cfg = model_cfg if model_cfg is not None else self.cfg.model
        if int(self.cfg.get("num_threads", 0)) > 0:
            torch.set_num_threads(int(self.cfg.num_threads))
        torch.manual_seed(int(self.cfg.get("seed", 0)))
        tokenizer = build_tokenizer(model_cfg)
        model = build_model(model_cfg, tokenizer=tokenizer).to(self.device()).eval().requires_grad_(False)
        self.models[role] = {"name": str(model_cfg.name), "source": str(model_cfg.source),
                             "path": resolve_model_path(model_cfg), "fingerprint": self.fingerprint(model),
                             "chat_template": bool(getattr(tokenizer, "chat_template", None))}
        return model, tokenizer

    @staticmethod
    def fingerprint(model: Any) -> str:
        """A short hash of a model's class, config and weights (the ranked-list cache's fingerprint)."""
        from alignkit.ranking.lists import model_fingerprint

        return model_fingerprint(model)

    def tokenization(self) -> Any:
        """The data config prompts are tokenised with (``max_prompt_length``, ``max_length``)."""
        from alignkit.config.schema import DataConfig

        return DataConfig(name=f"data-{self.name}", max_length=int(self.cfg.max_length),
                          max_prompt_length=int(self.cfg.max_prompt_length), truncation="truncate")

    # -- outputs -------------------------------------------------------------------
    def write(self, rows: Sequence[dict], tag: str | None = None, path: str | Path | None = None,
              name: str | None = None) -> Path:
        """Write the main output (no ``tag``), a side file ``<stem>.<tag>`` or ``path`` (recorded as ``name``)."""
        if tag is None and path is None and not rows:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "no counts"
            raise UserError(f"{self.name} has nothing to write to {self.output} ({counts})",
                            "check the inputs and the filters the counts name")
        target = Path(path) if path is not None else (side_path(self.output, tag) if tag else self.output)
        name = name or (tag.split(".")[0] if tag else ("output" if path is None else str(path)))
        written = write_rows(target, rows)
        self.files[name] = (written, len(rows))
        return written

    def add_file(self, name: str, path: Path) -> None:
        """Record a file that is not a table (a plot) among the outputs."""
        self.files[name] = (Path(path), None)

    def provenance(self, seconds: float) -> dict:
        from alignkit import __version__
        from alignkit.environment import package_versions

        return {
            "step": self.name,
            "command": self.command,
            "alignkit_version": __version__,
            "packages": package_versions(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2),
            "resumed_from": self.resumed_from,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "models": self.models,
            "inputs": [{"key": r.key, "path": r.path, "fingerprint": r.fingerprint, "rows": len(r),
                        "provenance": _provenance_of(r.file)} for r in self.inputs],
            "outputs": {name: {"path": str(p), "rows": n, "fingerprint": file_fingerprint(p)}
                        for name, (p, n) in self.files.items()},
            "counts": dict(self.counts),
        }


def _provenance_of(file: Path) -> str | None:
    """The provenance record of an input made by an earlier step, when it has one."""
    p = side_path(file, "provenance.json")
    return str(p) if p.exists() else None


def execute(spec: Any, cfg: DictConfig, registry: Any = None, command: str = "") -> StepRun:
    """Run ``spec`` with ``cfg``: output checks, the step, provenance, cleanup."""
    step = StepRun(spec.name, cfg, registry, command)
    output_suffix(str(cfg.output))
    if step.output.exists() and not cfg.overwrite:
        raise UserError(f"output {cfg.output} already exists",
                        "pass overwrite=true to replace it, or choose another output=")
    start = time.perf_counter()
    spec.run(cfg, step)
    if "output" not in step.files:
        raise RuntimeError(f"data step {spec.name!r} finished without writing its output")
    seconds = time.perf_counter() - start
    record = step.provenance(seconds)
    side_path(step.output, "provenance.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    if step.work is not None:
        step.work.remove()
    step.seconds = seconds
    return step
