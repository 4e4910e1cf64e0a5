"""Sweeps: the summary every multirun writes, the per-job record, and alignkit's Hydra launcher (Ray)
and sweeper (Optuna). See docs/sweeps.md."""
from __future__ import annotations


def register_hydra_plugins() -> None:
    """Make alignkit's launcher and sweeper known to Hydra. Hydra finds ``hydra_plugins.alignkit`` by
    scanning the ``hydra_plugins`` namespace, which misses packages installed in editable mode; the
    classes are registered by name here, so both installs work."""
    from hydra.core.plugins import Plugins

    import hydra_plugins.alignkit as ours

    for cls in (ours.RayLauncher, ours.OptunaSweeper):
        Plugins.instance().register(cls)
