"""The runs dashboard's work: run folders and multirun sweeps under a folder, their config
differences, final metrics, curves (``metrics.jsonl``), eval reports and generations."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from alignkit.errors import UserError


def find_runs(root: Path, limit: int = 500) -> tuple[list[Path], list[Path]]:
    """(run folders, sweep folders) under ``root``: a run has ``config.yaml``; a sweep has ``sweep.csv``."""
    runs, sweeps = [], []
    if not root.is_dir():
        return runs, sweeps
    for cfg in sorted(root.rglob("config.yaml")):
        if ".hydra" in cfg.parts:
            continue
        runs.append(cfg.parent)
        if len(runs) >= limit:
            break
    sweeps = sorted(p.parent for p in root.rglob("sweep.csv"))
    return runs, sweeps


def inside(root: Path, path: str) -> Path:
    """``path`` resolved, refused when outside ``root`` (the dashboard shows nothing else)."""
    p = Path(path).expanduser()
    p = (p if p.is_absolute() else root / p).resolve()
    if p != root.resolve() and root.resolve() not in p.parents:
        raise UserError(f"{path} is outside the runs folder {root}", "pick a run listed on the runs page")
    return p


def flat_config(run: Path) -> dict[str, str]:
    from omegaconf import OmegaConf

    def walk(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1], json.dumps(node) if isinstance(node, (list, dict)) else str(node)

    try:
        return dict(walk(OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=False)))
    except Exception:  # noqa: BLE001 - a broken config shows as empty, the run still lists
        return {}


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
    return rows


def final_metrics(rows: list[dict]) -> dict[str, float]:
    """The last logged value of every metric."""
    out = {}
    for r in rows:
        out.update({k: v for k, v in r.items() if k != "step" and isinstance(v, (int, float))})
    return out


def runs_table(root: Path, runs: list[Path]) -> dict:
    """Rows of runs with the config keys that differ between them and their final eval metrics."""
    configs = {r: flat_config(r) for r in runs}
    keys = sorted({k for c in configs.values() for k in c})
    differ = [k for k in keys if len({c.get(k) for c in configs.values()}) > 1
              and not k.startswith(("trainer.run_dir", "trainer.output_dir"))]
    finals = {r: final_metrics(read_metrics(r)) for r in runs}
    metric_keys = sorted({k for f in finals.values() for k in f if k.startswith("eval/")})
    rows = []
    for r in runs:
        report = r / "eval" / "eval.json"
        rows.append({"path": str(r.relative_to(root)) if root in r.parents else str(r),
                     "config": [configs[r].get(k, "") for k in differ],
                     "metrics": [finals[r].get(k) for k in metric_keys],
                     "steps": max((m.get("step", 0) for m in read_metrics(r)), default=0),
                     "has_eval": report.is_file(), "has_human_eval": (r / "eval" / "human_eval.json").is_file()})
    return {"config_keys": differ, "metric_keys": metric_keys, "rows": rows}


def read_sweep(folder: Path) -> dict:
    """A sweep's ``sweep.csv``: fixed columns, override columns and metric columns (names with a ``/``)."""
    with open(folder / "sweep.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames or []
    fixed = ["job", "status", "seconds", "run_dir", "error"]
    rest = [h for h in header if h not in fixed]
    return {"folder": folder, "overrides": [h for h in rest if "/" not in h], "metrics": [h for h in rest if "/" in h],
            "rows": rows}


def curves(rows: list[dict], width: int = 560, height: int = 180) -> list[dict]:
    """One SVG polyline per metric: ``{"name", "points", "min", "max", "last", "steps"}``."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                series.setdefault(k, []).append((int(r.get("step", 0)), float(v)))
    out = []
    for name, pts in sorted(series.items()):
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        sx = (width - 10) / (x1 - x0 or 1)
        sy = (height - 10) / (y1 - y0 or 1)
        poly = " ".join(f"{5 + (x - x0) * sx:.1f},{height - 5 - (y - y0) * sy:.1f}" for x, y in pts)
        out.append({"name": name, "points": poly, "min": y0, "max": y1, "last": ys[-1], "steps": (x0, x1),
                    "n": len(pts)})
    return out


def eval_report(run: Path) -> dict | None:
    path = run / "eval" / "eval.json"
    if not path.is_file():
        return None
    from alignkit.evaluation.report import summary_rows

    res = json.loads(path.read_text())
    return {"rows": summary_rows(res), "samples": ((res.get("generation") or {}).get("samples")) or [],
            "human": json.loads((run / "eval" / "human_eval.json").read_text())
            if (run / "eval" / "human_eval.json").is_file() else None}
