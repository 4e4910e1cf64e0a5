"""The plugin manager: finds plugins, collects what they register, names culprits.

Plugins come from the ``alignkit.plugins`` entry-point group (built-ins too), plus
modules named in the ``ALIGNKIT_PLUGINS`` environment variable (comma-separated
import paths, handy for local experiments). A plugin is disabled by its
entry-point name with ``plugins.disable=[name]`` in the run config or the
``ALIGNKIT_DISABLE_PLUGINS`` environment variable.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable

import pluggy

from alignkit import hookspecs

ENTRY_POINT_GROUP = "alignkit.plugins"


class PluginError(RuntimeError):
    """A plugin failed to load or register, or two plugins clash."""


class UnknownNameError(KeyError):
    """A name (algorithm, reward function, ...) that no plugin registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def _env_list(var: str) -> list[str]:
    return [s.strip() for s in os.environ.get(var, "").split(",") if s.strip()]


def build_plugin_manager(disabled: Iterable[str] = (), extra_modules: Iterable[str] = ()) -> pluggy.PluginManager:
    """Load every plugin of the entry-point group except ``disabled`` ones."""
    pm = pluggy.PluginManager("alignkit")
    pm.add_hookspecs(hookspecs)
    blocked = set(disabled) | set(_env_list("ALIGNKIT_DISABLE_PLUGINS"))
    for name in blocked:
        pm.set_blocked(name)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value!r}) failed to import: {exc!r}") from exc
        pm.register(plugin, name=ep.name)
    for mod in [*extra_modules, *_env_list("ALIGNKIT_PLUGINS")]:
        if pm.is_blocked(mod) or pm.has_plugin(mod):
            continue
        try:
            pm.register(importlib.import_module(mod), name=mod)
        except Exception as exc:  # noqa: BLE001
            raise PluginError(f"plugin module {mod!r} failed to import: {exc!r}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements a hook alignkit does not define: {exc}") from exc
    return pm


@dataclass
class Registry:
    """What all plugins registered, each entry remembering its plugin's name."""

    pm: pluggy.PluginManager
    algorithms: dict[str, tuple[Any, str]] = field(default_factory=dict)
    data_formats: dict[str, tuple[Any, str]] = field(default_factory=dict)
    datasets: dict[str, tuple[Any, str]] = field(default_factory=dict)
    reward_functions: dict[str, tuple[Callable, str]] = field(default_factory=dict)

    # -- lookups ---------------------------------------------------------------
    def _get(self, table: dict, kind: str, name: str):
        if name not in table:
            known = ", ".join(sorted(table)) or "(none)"
            raise UnknownNameError(f"unknown {kind} {name!r}; available: {known}")
        return table[name][0]

    def algorithm(self, name: str):
        """The :class:`alignkit.AlgorithmSpec` registered as ``name``."""
        return self._get(self.algorithms, "algorithm", name)

    def data_format(self, name: str):
        return self._get(self.data_formats, "data format", name)

    def dataset(self, name: str):
        return self._get(self.datasets, "dataset preset", name)

    def reward_function(self, name: str) -> Callable[..., list[float]]:
        return self._get(self.reward_functions, "reward function", name)

    # -- lifecycle -------------------------------------------------------------
    @property
    def hook(self):
        return self.pm.hook


def _collect(pm: pluggy.PluginManager, hook_name: str, kind: str, table: dict, key: Callable[[Any], str]) -> None:
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
            raise PluginError(f"plugin {impl.plugin_name!r} raised in {hook_name}: {exc!r}") from exc
        items = result.items() if isinstance(result, dict) else ((key(x), x) for x in (result or []))
        for name, item in items:
            if name in table:
                raise PluginError(
                    f"{kind} {name!r} is registered by two plugins: {table[name][1]!r} and {impl.plugin_name!r}; "
                    f"disable one with plugins.disable=[...] or ALIGNKIT_DISABLE_PLUGINS"
                )
            table[name] = (item, impl.plugin_name)


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The registry with every installed plugin, built once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = build_registry()
    return _DEFAULT


def build_registry(disabled: Iterable[str] = (), extra_modules: Iterable[str] = ()) -> Registry:
    """Build the plugin manager and collect every registration hook."""
    pm = build_plugin_manager(disabled, extra_modules)
    reg = Registry(pm)
    _collect(pm, "alignkit_register_algorithms", "algorithm", reg.algorithms, lambda s: s.name)
    _collect(pm, "alignkit_register_data_formats", "data format", reg.data_formats, lambda s: s.name)
    _collect(pm, "alignkit_register_datasets", "dataset preset", reg.datasets, lambda s: s.name)
    _collect(pm, "alignkit_register_reward_functions", "reward function", reg.reward_functions, lambda f: f.__name__)
    return reg
