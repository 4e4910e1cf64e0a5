"""alignkit's Hydra plugins: ``hydra/launcher=ray`` and ``hydra/sweeper=optuna``.

Hydra instantiates launchers and sweepers only from the ``hydra_plugins`` namespace; the classes live in
:mod:`alignkit.sweeps` and are exposed here under that namespace (configs: ``alignkit.conf``'s
``hydra/launcher/ray.yaml`` and ``hydra/sweeper/optuna.yaml``).
"""
from alignkit.sweeps.optuna_sweeper import OptunaSweeper as _OptunaSweeper
from alignkit.sweeps.ray_launcher import RayLauncher as _RayLauncher


class RayLauncher(_RayLauncher):
    __doc__ = _RayLauncher.__doc__


class OptunaSweeper(_OptunaSweeper):
    __doc__ = _OptunaSweeper.__doc__


__all__ = ["RayLauncher", "OptunaSweeper"]
