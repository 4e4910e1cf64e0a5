"""Run outputs: ``metrics.jsonl``, TensorBoard events, ``curves.png`` and, when enabled, MLflow / W&B runs
(:mod:`alignkit.trainer.trackers`)."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path


class MetricsLogger:
    """Writes one JSON object per logged step (``{"step": N, "train/loss": ...}``)
    to ``metrics.jsonl``, the same scalars to TensorBoard and to the MLflow / W&B runs
    ``logger.mlflow`` / ``logger.wandb`` ask for, and keeps the history for :meth:`plot`."""

    def __init__(self, run_dir: Path, cfg, resume_step: int = 0, run_config=None):
        """``resume_step``: the step a resumed run continues after; rows and events of later steps
        (written before the interruption) are dropped, so no step is logged twice (trackers cannot
        drop them: see :mod:`alignkit.trainer.trackers`). ``run_config``: the run's config, stored
        by the trackers (default: the run folder's ``config.yaml``)."""
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._path = self.run_dir / "metrics.jsonl"
        self._kept = self._truncate(resume_step) if self._path.exists() else []
        self._jsonl = open(self._path, "a") if cfg.jsonl else None
        self._tb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=resume_step + 1)
        self._trackers = None
        if getattr(cfg, "mlflow", False) or getattr(cfg, "wandb", False):
            from alignkit.trainer.trackers import open_trackers

            self._trackers = open_trackers(self.run_dir, cfg, self._plain_config(run_config))

    def _plain_config(self, run_config) -> dict:
        from omegaconf import DictConfig, OmegaConf

        if run_config is None and (self.run_dir / "config.yaml").is_file():
            run_config = OmegaConf.load(self.run_dir / "config.yaml")
        if isinstance(run_config, DictConfig):
            return OmegaConf.to_container(run_config, resolve=True)
        return dict(run_config or {})

    def _truncate(self, resume_step: int) -> list[dict]:
        """Keep the rows of steps up to ``resume_step`` (0 keeps the step-0 evaluation only when resuming)."""
        rows = [json.loads(line) for line in self._path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r["step"] <= resume_step] if resume_step > 0 else []
        self._path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def restore_history(self) -> None:
        """Reload the kept rows into :attr:`history` (for ``curves.png`` of a resumed run)."""
        for row in self._kept:
            for k, v in row.items():
                if k != "step":
                    self.history[k].append((row["step"], float(v)))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        for k, v in clean.items():
            self.history[k].append((step, v))
            if self._tb is not None and math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self._jsonl.flush()
        if self._trackers is not None:
            self._trackers.log(step, clean)

    def plot(self, path: Path | None = None) -> Path | None:
        """Training curves, one panel per metric (train and eval of one name share a panel)."""
        if not self.cfg.plot or not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels: dict[str, list[str]] = defaultdict(list)
        for key in sorted(self.history):
            if key.startswith(("train/", "eval/")) and key not in ("train/lr", "train/grad_norm"):
                panels[key.split("/", 1)[1]].append(key)
        names = sorted(panels)[:12]
        if not names:
            return None
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            for key in panels[name]:
                xs, ys = zip(*self.history[key])
                ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, ms=3, label=key.split("/")[0])
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        path = Path(path or self.run_dir / "curves.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._trackers is not None:
            self._trackers.close()
            self._trackers = None
