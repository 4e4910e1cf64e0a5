"""The sweep summary every multirun writes into its sweep folder (``hydra.sweep.dir``).

Each job leaves ``job.json`` in its run folder (:mod:`alignkit.sweeps.job`); the summary reads those and
each job's ``metrics.jsonl``, so it works for every launcher, whichever process or machine ran the jobs:

- ``sweep.csv``: one row per job: ``job, status, seconds, run_dir, error``, then one column per override
  key whose value differs between jobs, then one column per final metric (the last logged value; metric
  names contain a ``/``, override keys do not);
- ``sweep.md``: the same table in Markdown, the objective (when a search) and the best job as a command;
- ``sweep.png``: the objective (or the first eval metric) per job;
- ``sweep.json``: ``{"sweep_dir", "objective", "best", "jobs"}``.

``alignkit studio`` reads the same files.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from alignkit.errors import UserError

JOB_FILE = "job.json"
FIXED_COLUMNS = ("job", "status", "seconds", "run_dir", "error")
DIRECTIONS = ("minimize", "maximize")


@dataclass
class Objective:
    metric: str
    direction: str = "minimize"  # minimize | maximize

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "minimize" else a > b


@dataclass
class Summary:
    sweep_dir: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    objective: Objective | None = None
    best: dict[str, Any] | None = None  #: ``{"job", "command"}``
    files: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]


def final_metrics(run_dir: Path) -> dict[str, float]:
    """The last logged value of every metric (keys with a ``/``) in ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    out: dict[str, float] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        if line.strip():
            out.update({k: v for k, v in json.loads(line).items() if "/" in k})
    return out


def override_pairs(overrides: list[str]) -> dict[str, str]:
    """``["algo.beta=0.1", "+x=1", "trainer/distributed=fsdp"]`` -> ``{"algo.beta": "0.1", "x": "1",
    "trainer.distributed": "fsdp"}`` (the last value of a key wins; a group's ``/`` becomes ``.``, as only
    metric names contain a ``/``)."""
    pairs: dict[str, str] = {}
    for o in overrides:
        key, _, value = o.partition("=")
        pairs[key.lstrip("+~").replace("/", ".")] = value
    return pairs


def read_job(job_dir: Path) -> dict[str, Any]:
    """A job's record: its ``job.json``, or a failed record when the job left none (killed, lost node)."""
    job_dir = Path(job_dir)
    if (job_dir / JOB_FILE).is_file():
        return json.loads((job_dir / JOB_FILE).read_text())
    overrides = []
    if (job_dir / ".hydra" / "overrides.yaml").is_file():  # Hydra writes it when the job starts
        from omegaconf import OmegaConf

        overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    num = int(job_dir.name) if job_dir.name.isdigit() else -1
    return {"job": num, "status": "failed", "seconds": 0.0, "overrides": overrides,
            "error": f"the job left no {JOB_FILE} (killed before it ended?); see the log in its folder"}


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: subfolders holding a ``job.json`` or Hydra's ``.hydra/``."""
    found = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and ((p / JOB_FILE).is_file() or (p / ".hydra").is_dir())]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def summarize(sweep_dir: Path | str, objective: Objective | None = None) -> Summary:
    """Collect every job of ``sweep_dir`` into the summary's columns and rows (nothing written)."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    for d in job_dirs(sweep_dir):
        rec = read_job(d)
        jobs.append((d, rec, override_pairs(rec.get("overrides", [])), final_metrics(d)))
    keys: list[str] = []
    for _, _, pairs, _ in jobs:
        keys += [k for k in pairs if k not in keys]
    varying = [k for k in keys if len({pairs.get(k) for _, _, pairs, _ in jobs}) > 1]
    metrics = sorted({k for *_, m in jobs for k in m})
    rows = []
    for d, rec, pairs, m in jobs:
        row = {"job": int(rec["job"]), "status": rec["status"], "seconds": round(float(rec.get("seconds", 0.0)), 2),
               "run_dir": d.relative_to(sweep_dir).as_posix(), "error": rec.get("error") or ""}
        row |= {k: pairs.get(k, "") for k in varying}
        row |= {k: m.get(k, "") for k in metrics}
        row["_overrides"] = rec.get("overrides", [])
        rows.append(row)
    rows.sort(key=lambda r: r["job"])
    summary = Summary(sweep_dir, [*FIXED_COLUMNS, *varying, *metrics], rows, objective)
    summary.best = _best(summary)
    return summary


def _best(summary: Summary) -> dict[str, Any] | None:
    obj = summary.objective
    if obj is None:
        return None
    best = None
    for r in summary.rows:
        v = r.get(obj.metric, "")
        if r["status"] == "ok" and isinstance(v, (int, float)) and math.isfinite(v):
            if best is None or obj.better(v, best[obj.metric]):
                best = r
    if best is None:
        return None
    return {"job": best["job"], "command": command_for(best["_overrides"])}


def command_for(overrides: list[str]) -> str:
    """The command that runs one job alone."""
    return " ".join(["alignkit", "train", *(shlex.quote(o) for o in overrides)])


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def to_csv(summary: Summary) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(summary.columns)
    for r in summary.rows:
        w.writerow([_cell(r.get(c, "")) for c in summary.columns])
    return buf.getvalue()


def _md_cell(v: Any) -> str:
    if isinstance(v, float) and "/" not in str(v):
        v = f"{v:.4g}"
    return str(v).replace("|", "\\|")


def to_markdown(summary: Summary) -> str:
    cols = summary.columns
    lines = [f"# Sweep {summary.sweep_dir.name}", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_cell(r.get(c, "")) for c in cols) + " |" for r in summary.rows]
    counts = {s: sum(r["status"] == s for r in summary.rows) for s in ("ok", "failed", "pruned")}
    lines += ["", f"{len(summary.rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    if summary.objective is not None:
        lines += ["", f"Objective: {summary.objective.direction} `{summary.objective.metric}`"]
    if summary.best is not None:
        value = next(r[summary.objective.metric] for r in summary.rows if r["job"] == summary.best["job"])
        lines += ["", f"Best: job {summary.best['job']} ({summary.objective.metric} = {value:.4g})", "",
                  "```bash", summary.best["command"], "```"]
    return "\n".join(lines) + "\n"


def to_json(summary: Summary) -> dict[str, Any]:
    obj = summary.objective
    return {"sweep_dir": str(summary.sweep_dir),
            "objective": {"metric": obj.metric, "direction": obj.direction} if obj else None,
            "best": summary.best,
            "jobs": [{c: r.get(c, "") for c in summary.columns} for r in summary.rows]}


def plot_metric(summary: Summary) -> str | None:
    """The objective's metric, else the first eval metric, else the first metric."""
    if summary.objective is not None:
        return summary.objective.metric
    metrics = [c for c in summary.columns if "/" in c]
    return next((m for m in metrics if m.startswith("eval/")), metrics[0] if metrics else None)


def plot(summary: Summary, path: Path) -> Path | None:
    """A bar per job of :func:`plot_metric` (failed jobs have none): the best job orange, pruned ones grey
    (their last intermediate value)."""
    metric = plot_metric(summary)
    rows = [r for r in summary.rows if isinstance(r.get(metric), (int, float))]
    pts = [(r["job"], r[metric]) for r in rows]
    if metric is None or not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = summary.best["job"] if summary.best else None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(pts) + 2), 3.2))
    colors = ["tab:orange" if r["job"] == best else "tab:blue" if r["status"] == "ok" else "tab:gray" for r in rows]
    ax.bar(range(len(pts)), [v for _, v in pts], color=colors)
    ax.set_xticks(range(len(pts)), [str(j) for j, _ in pts])
    ax.set_xlabel("job", fontsize=8)
    title = metric + (f" ({summary.objective.direction})" if summary.objective else "")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_summary(sweep_dir: Path | str, objective: Objective | None = None) -> Summary:
    """Write ``sweep.csv``, ``sweep.md``, ``sweep.json`` and ``sweep.png`` into ``sweep_dir``."""
    summary = summarize(sweep_dir, objective)
    d = summary.sweep_dir
    (d / "sweep.csv").write_text(to_csv(summary))
    (d / "sweep.md").write_text(to_markdown(summary))
    (d / "sweep.json").write_text(json.dumps(to_json(summary), indent=2) + "\n")
    summary.files = [d / "sweep.csv", d / "sweep.md", d / "sweep.json"]
    png = plot(summary, d / "sweep.png")
    if png is not None:
        summary.files.append(png)
    return summary


class SweepJobsFailed(UserError):
    """Some jobs of a multirun failed (the others ran to the end); the summary lists each one's error."""

    exit_code = 1

    def __init__(self, summary: Summary):
        failed = summary.failed
        first = failed[0]
        super().__init__(f"{len(failed)} of {len(summary.rows)} sweep jobs failed (job {first['job']}: "
                         f"{first['error'].removeprefix('alignkit: ')})",
                         f"see {summary.sweep_dir / 'sweep.md'} and each failed job's log in its folder")


#: the summary the last multirun of this process wrote (the command line reports its failed jobs)
last_summary: Summary | None = None


def objective_of(config) -> Objective | None:
    """The objective of a search: its sweeper's ``objective`` and ``direction`` (None for other sweepers)."""
    from omegaconf import OmegaConf

    metric = OmegaConf.select(config, "hydra.sweeper.objective", default=None)
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default="minimize")
    return Objective(str(metric), str(direction)) if metric else None


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.sweep_summary`` in conf/config.yaml): writes the summary when a
    multirun ends. ``metric``/``direction``: the objective of a plain sweep (a search brings its own)."""

    def __init__(self, metric: str | None = None, direction: str = "minimize") -> None:
        self.metric, self.direction = metric, direction

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        global last_summary
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        own = Objective(self.metric, self.direction) if self.metric else None
        last_summary = write_summary(sweep_dir, objective_of(config) or own)
        print(f"\nsweep summary: {sweep_dir / 'sweep.md'}\n" + to_markdown(last_summary), flush=True)
