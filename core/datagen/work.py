"""Resumable progress of a data step: the ``<output>.partial/`` folder.

A step appends its rows to named JSON-lines *streams* (``rows``, ``skipped``, ...) batch by
batch and, after each finished batch, commits its state: how many lines of each stream
belong to finished batches, plus the step's own progress (``done``, counters, anything
JSON). Lines are flushed and fsynced before ``state.json`` is atomically replaced, so a
run killed at any moment restarts from its last committed batch: on resume each stream is
cut back to its committed length and the step skips what ``done`` says is done.

``state.json`` also holds the run's key (a hash of the config and the inputs' content):
a partial folder left by a run with other settings or inputs is never continued.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from alignkit.errors import UserError

__all__ = ["WorkDir"]


class WorkDir:
    """The partial folder of one step run; see the module docstring."""

    def __init__(self, path: Path, key: str):
        self.path = Path(path)
        self.key = key
        self.lengths: dict[str, int] = {}  #: committed lines per stream

    # -- opening -----------------------------------------------------------------
    def open(self, resume: bool) -> dict:
        """The committed state of an interrupted run with this key (``{}`` when starting fresh).

        ``resume=False`` discards any partial folder; a folder with another key is an error."""
        state_file = self.path / "state.json"
        if self.path.exists() and (not resume or not state_file.exists()):
            shutil.rmtree(self.path)
        if not self.path.exists():
            self.path.mkdir(parents=True)
            return {}
        saved = json.loads(state_file.read_text())
        if saved.get("key") != self.key:
            raise UserError(f"{self.path} holds an interrupted run with other settings or inputs",
                            "rerun with the same settings to continue it, or pass resume=false to start over")
        self.lengths = {k: int(v) for k, v in saved.get("lengths", {}).items()}
        for stream, n in self.lengths.items():
            self._truncate(stream, n)
        return saved.get("state", {})

    def _file(self, stream: str) -> Path:
        return self.path / f"{stream}.jsonl"

    def _truncate(self, stream: str, n: int) -> None:
        """Keep the first ``n`` lines of ``stream`` (lines of an uncommitted batch go)."""
        f = self._file(stream)
        if not f.exists():
            return
        with open(f, "rb") as fh:
            lines = fh.readlines()[:n]
        with open(f, "wb") as fh:
            fh.writelines(lines)

    # -- writing -----------------------------------------------------------------
    def append(self, stream: str, rows: Sequence[dict]) -> None:
        """Append rows to ``stream``; they count once :meth:`commit` has run."""
        with open(self._file(stream), "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self, state: dict[str, Any]) -> None:
        """Record ``state`` and every stream's current length, atomically."""
        self.lengths = {f.stem: _count_lines(f) for f in self.path.glob("*.jsonl")}
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps({"key": self.key, "lengths": self.lengths, "state": state}))
        os.replace(tmp, self.path / "state.json")

    # -- reading -----------------------------------------------------------------
    def rows(self, stream: str) -> list[dict]:
        """The committed rows of ``stream`` (``[]`` when it has none)."""
        f = self._file(stream)
        if not f.exists():
            return []
        with open(f, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _count_lines(f: Path) -> int:
    with open(f, "rb") as fh:
        return sum(1 for _ in fh)
