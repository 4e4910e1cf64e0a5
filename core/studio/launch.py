"""Compose and launch ``alignkit train`` from the studio: the overrides are checked by composing the config
first (errors are shown as ``alignkit train`` prints them), then the run starts as its own process, its output
in a log file the launch page shows while it runs. Run folders go under the dashboard's ``runs`` folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.errors import UserError
from alignkit.studio import data as dv

_OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][\w.\[\]/-]*=.*$")


@dataclass
class Launch:
    number: int
    command: list[str]
    log: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        code = self.process.poll()
        return "running" if code is None else ("finished" if code == 0 else f"failed (exit code {code})")

    def tail(self, lines: int = 200) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    @property
    def run_folder(self) -> str | None:
        m = re.search(r"^run folder: (.+)$", self.tail(), re.M)
        return m.group(1).strip() if m else None


def overrides_for(home: Path, runs: Path, algo: str, model: str, data: str, max_steps: int, extra: str) -> list[str]:
    """The ``alignkit train`` arguments of a launch form; anything but ``key=value`` lines is refused."""
    lines = [line.strip() for line in (extra or "").splitlines() if line.strip()]
    bad = [line for line in lines if not _OVERRIDE.match(line)]
    if bad:
        raise UserError(f"{bad[0]!r} is not a key=value override", "write one key=value per line (no flags)")
    saved = (dv.conf_root(home) / "data" / f"{data}.yaml").is_file()
    return ([dv.searchpath_override(home)] if saved else []) + [
        f"algo={algo}", f"model={model}", f"data={data}", f"trainer.max_steps={int(max_steps)}", *lines,
        f"trainer.output_dir={runs}"]


class Launcher:
    """The runs started from this server (kept in memory; their folders stay on the runs page)."""

    def __init__(self, home: Path):
        self.home = home
        self.launches: dict[int, Launch] = {}
        self._lock = threading.Lock()

    def check(self, overrides: list[str]) -> None:
        """Compose the config as ``alignkit train`` would: a bad key or value raises its one-line error."""
        from alignkit.config.compose import compose_config

        with dv._COMPOSE_LOCK:
            compose_config(overrides)

    def start(self, overrides: list[str]) -> Launch:
        self.check(overrides)
        folder = self.home / "launches"
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            number = len(self.launches) + 1
            log = folder / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{number}.log"
            command = [sys.executable, "-m", "alignkit", "train", *overrides]
            with open(log, "w") as out:
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=dict(os.environ, TQDM_DISABLE="1"), start_new_session=True)
            self.launches[number] = Launch(number, command, log, proc)
            return self.launches[number]
