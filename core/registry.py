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
from alignkit.errors import UserError

ENTRY_POINT_GROUP = "alignkit.plugins"


class PluginError(UserError, RuntimeError):
    """A plugin failed to load or register, or two plugins clash."""


class UnknownNameError(UserError, KeyError):
    """A name (algorithm, reward function, ...) that no plugin registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def _env_list(var: str) -> list[str]:
    return [s.strip() for s in os.environ.get(var, "").split(",") if s.strip()]


def _hook_suggestion(exc: pluggy.PluginValidationError) -> str:
    """The closest hook names for the unknown hooks of a plugin that failed validation."""
    import difflib

    known = [n for n in dir(hookspecs) if n.startswith("alignkit_")]
    impls = [n for n in dir(exc.plugin) if n.startswith("alignkit_") and n not in known] if exc.plugin else []
    hints = [f"{n!r} -> {m[0]!r}" for n in impls for m in [difflib.get_close_matches(n, known, n=1)] if m]
    return "did you mean " + ", ".join(hints) if hints else "hooks are listed in alignkit/hookspecs.py"


def build_plugin_manager(disabled: Iterable[str] = (), extra_modules: Iterable[str] = (),
                         broken: list | None = None) -> pluggy.PluginManager:
    """Load every plugin of the entry-point group except ``disabled`` ones. With a ``broken``
    list, a plugin that fails to import or validate is recorded there as ``(name, error)`` and
    skipped instead of raising (``alignkit list`` keeps working)."""
    pm = pluggy.PluginManager("alignkit")
    pm.add_hookspecs(hookspecs)
    blocked = set(disabled) | set(_env_list("ALIGNKIT_DISABLE_PLUGINS"))
    for name in blocked:
        pm.set_blocked(name)
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    modules = [*extra_modules, *_env_list("ALIGNKIT_PLUGINS")]
    unknown = sorted(blocked - {ep.name for ep in eps} - set(modules))
    if unknown:
        raise PluginError(f"plugins.disable names {', '.join(repr(u) for u in unknown)}, which no installed plugin "
                          "is called", f"plugin names (entry-point names): {', '.join(ep.name for ep in eps)}")

    def fail(err: PluginError) -> None:
        if broken is None:
            raise err
        broken.append((err.plugin_name, err))

    for ep in eps:
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
            fail(_named(PluginError(f"plugin {ep.name!r} (entry point {ep.value!r}) failed to import: {exc!r}",
                                    f"fix it or disable it with plugins.disable=[{ep.name}]"), ep.name))
            continue
        pm.register(plugin, name=ep.name)
    for mod in modules:
        if pm.is_blocked(mod) or pm.has_plugin(mod):
            continue
        try:
            module = importlib.import_module(mod)
            if pm.is_registered(module):  # installed too: already loaded through its entry point
                continue
            pm.register(module, name=mod)
        except Exception as exc:  # noqa: BLE001
            fail(_named(PluginError(f"plugin module {mod!r} failed to import: {exc!r}",
                                    "fix it or remove it from ALIGNKIT_PLUGINS"), mod))
    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            err = _named(PluginError(f"plugin {name!r} implements a hook alignkit does not define",
                                     _hook_suggestion(exc)), name)
            if broken is None:
                raise err from exc
            broken.append((name, err))
            pm.unregister(exc.plugin)
    return pm


def _named(err: PluginError, name: str) -> PluginError:
    err.plugin_name = name
    return err


@dataclass
class Registry:
    """What all plugins registered, each entry remembering its plugin's name."""

    pm: pluggy.PluginManager
    algorithms: dict[str, tuple[Any, str]] = field(default_factory=dict)
    data_formats: dict[str, tuple[Any, str]] = field(default_factory=dict)
    datasets: dict[str, tuple[Any, str]] = field(default_factory=dict)
    reward_functions: dict[str, tuple[Callable, str]] = field(default_factory=dict)
    eval_metrics: dict[str, tuple[Any, str]] = field(default_factory=dict)  #: ``alignkit eval`` metrics
    rollout_engines: dict[str, tuple[Any, str]] = field(default_factory=dict)  #: ``rollout.engine=`` choices
    broken: list = field(default_factory=list)  #: ``(plugin, error)`` of a tolerant build

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

    def rollout_engine(self, name: str):
        """The :class:`alignkit.api.RolloutEngineSpec` registered as ``name``."""
        return self._get(self.rollout_engines, "rollout engine", name)

    # -- lifecycle -------------------------------------------------------------
    @property
    def hook(self):
        return self.pm.hook


def _collect(pm: pluggy.PluginManager, hook_name: str, kind: str, table: dict, key: Callable[[Any], str],
             broken: list | None = None) -> None:
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
            err = _named(PluginError(f"plugin {impl.plugin_name!r} raised in {hook_name}: {exc!r}",
                                     f"fix it or disable it with plugins.disable=[{impl.plugin_name}]"),
                         impl.plugin_name)
            if broken is None:
                raise err from exc
            broken.append((impl.plugin_name, err))
            continue
        items = result.items() if isinstance(result, dict) else ((key(x), x) for x in (result or []))
        for name, item in items:
            if name in table:
                err = _named(PluginError(
                    f"{kind} {name!r} is registered by two plugins: {table[name][1]!r} and {impl.plugin_name!r}",
                    f"disable one with plugins.disable=[{table[name][1]}] or plugins.disable=[{impl.plugin_name}]"),
                    impl.plugin_name)
                if broken is None:
                    raise err
                broken.append((impl.plugin_name, err))
                continue
            table[name] = (item, impl.plugin_name)


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The registry with every installed plugin, built once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = build_registry()
    return _DEFAULT


def build_registry(disabled: Iterable[str] = (), extra_modules: Iterable[str] = (),
                   tolerant: bool = False) -> Registry:
    """Build the plugin manager and collect every registration hook. ``tolerant``: record broken
    plugins and clashes in :attr:`Registry.broken` instead of raising (for ``alignkit list``)."""
    broken: list | None = [] if tolerant else None
    pm = build_plugin_manager(disabled, extra_modules, broken)
    reg = Registry(pm)
    _collect(pm, "alignkit_register_algorithms", "algorithm", reg.algorithms, lambda s: s.name, broken)
    _collect(pm, "alignkit_register_data_formats", "data format", reg.data_formats, lambda s: s.name, broken)
    _collect(pm, "alignkit_register_datasets", "dataset preset", reg.datasets, lambda s: s.name, broken)
    _collect(pm, "alignkit_register_reward_functions", "reward function", reg.reward_functions,
             lambda f: f.__name__, broken)
    _collect(pm, "alignkit_register_eval_metrics", "eval metric", reg.eval_metrics, lambda s: s.name, broken)
    _collect(pm, "alignkit_register_rollout_engines", "rollout engine", reg.rollout_engines, lambda s: s.name,
             broken)
    reg.broken = broken or []
    return reg


def disabled_in(overrides: Iterable[str]) -> list[str]:
    """The plugin names of a ``plugins.disable=[...]`` command-line override (so the registry can
    be built without them before the config is composed)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    names: list[str] = []
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == "plugins.disable":
            value = OverridesParser.create().parse_overrides([o])[0].value()
            names = [str(v) for v in (value if isinstance(value, list) else [value])]
    return names


def registry_for(overrides: Iterable[str] = (), disabled: Iterable[str] = ()) -> Registry:
    """The registry a run uses: every plugin but those its ``plugins.disable`` override (or, for a
    composed config, ``disabled`` = ``cfg.plugins.disable``) switches off."""
    disabled = list(disabled) or disabled_in(overrides)
    return build_registry(disabled=disabled) if disabled else default_registry()
