"""Register schemas in Hydra's ConfigStore and compose run configs.

``compose_config(["algo=dpo", "trainer.lr=1e-4"])`` gives the same config as
``alignkit train algo=dpo trainer.lr=1e-4``; errors name the valid keys.
"""
from __future__ import annotations

import dataclasses
import re
from importlib import resources

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from alignkit.config.schema import ConfigValueError, DataConfig, DataSource, RunConfig
from alignkit.errors import UserError

CONFIG_MODULE = "alignkit.conf"
GROUPS = ("algo", "model", "data", "trainer", "logger", "experiment", "trainer/distributed")


class ConfigError(UserError, ValueError):
    """A composition error, with the valid keys or options spelt out."""


def conf_dir():
    return resources.files(CONFIG_MODULE)


def yaml_options(group: str) -> list[str]:
    d = conf_dir() / group
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml")) if d.is_dir() else []


def named_config_class(cls: type, name: str) -> type:
    """``cls`` with an extra ``name`` field defaulting to the algorithm's name."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"algorithm {name!r}: config_class must be a dataclass, got {cls!r}")
    if "name" in {f.name for f in dataclasses.fields(cls)}:
        return cls
    return dataclasses.make_dataclass(cls.__name__, [("name", str, dataclasses.field(default=name))], bases=(cls,))


#: (group, name) of each plugin entry register_configs stored last, so a later registry replaces them
_STORED: set[tuple[str, str]] = set()


def register_configs(registry) -> None:
    """Store the run schema, every algorithm's config and plugin data presets of ``registry``, and drop
    the entries an earlier registry stored that this one lacks (a disabled or uninstalled plugin's
    algorithm is then unknown, and a sweep launcher that pickles Hydra's state carries no stale class)."""
    cs = ConfigStore.instance()
    for group, name in _STORED:
        cs.repo.get(group, {}).pop(f"{name}.yaml", None)
    _STORED.clear()

    def store(group: str, name: str, node, provider: str) -> None:
        cs.store(group=group, name=name, node=node, provider=provider)
        _STORED.add((group, name))

    cs.store(name="run_schema", node=RunConfig)
    algo_yaml = set(yaml_options("algo"))
    for name, (spec, plugin) in registry.algorithms.items():
        node = named_config_class(spec.config_class, name)
        store("algo", f"{name}_schema", node, plugin)
        if name not in algo_yaml:  # a plugin without YAML is still selectable as algo=<name>
            store("algo", name, node, plugin)
    data_yaml = set(yaml_options("data"))
    for name, (preset, plugin) in registry.datasets.items():
        if name in data_yaml:
            continue
        conf = dict(preset.config)
        conf["sources"] = [DataSource(**s) for s in conf.get("sources", [])]
        store("data", name, DataConfig(**{"name": name, **conf}), plugin)


def _unknown_key(key: str, overrides: list[str]) -> ConfigError:
    """The error for an override whose key does not exist, naming the keys that do."""
    groups = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in GROUPS]
    parent, _, leaf = key.rpartition(".")
    try:
        base = _compose(groups)
    except Exception:  # noqa: BLE001 - the group selection itself is wrong
        return ConfigError(f"'{leaf}' is not a key of '{parent or '<root>'}'", "check the spelling")
    node = OmegaConf.select(base, parent) if parent else base
    if isinstance(node, DictConfig):
        valid = ", ".join(sorted(str(k) for k in node.keys()))
        return ConfigError(f"'{leaf}' is not a key of '{parent or '<root>'}'", f"valid keys: {valid}")
    return ConfigError(f"'{parent}' does not exist", f"top-level keys: {', '.join(sorted(base.keys()))}")


_TYPE_NAMES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def _composition_error(exc: Exception, overrides: list[str]) -> ConfigError:
    """One-line :class:`ConfigError` for an exception raised by Hydra's composition."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        return _unknown_key(str(cause.full_key), overrides)
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        msg = str(getattr(cause, "msg", cause)).split("\n")[0]
        wanted = next((v for k, v in _TYPE_NAMES.items() if msg.endswith(k)), None)
        key = str(cause.full_key)
        plain = key.replace("[", ".").replace("]", "")  # data.sources[0].weight -> data.sources.0.weight
        value = next((o.split("=", 1)[1] for o in reversed(overrides)  # the last override of a key wins
                      if o.split("=", 1)[0].lstrip("+~") == plain), "?")
        if wanted:
            return ConfigError(f"{key}={value} is not {wanted}", f"give {key} {wanted}")
        return ConfigError(f"{key}={value}: {msg}", f"fix the value of {key}")
    missing = re.search(r"Could not (?:find|load) '([^']+)'", str(exc))
    if isinstance(exc, MissingConfigException) and missing:
        wanted = missing.group(1)  # e.g. algo/dpoo, or algo/sft_schema when no enabled plugin provides sft
        group = wanted.rpartition("/")[0]
        if group == "algo" and wanted.endswith("_schema"):  # its YAML exists but no enabled plugin provides it
            return ConfigError(f"algorithm {wanted[5:-7]!r} is provided by no enabled plugin",
                               "remove its plugin from plugins.disable / ALIGNKIT_DISABLE_PLUGINS, or pick another "
                               "algorithm (alignkit list)")
        options = sorted({o for o in yaml_options(group) + _stored_options(group) if not o.endswith("_schema")})
        return ConfigError(f"unknown option {wanted!r}", f"available {group} options: {', '.join(options) or '(none)'}")
    return ConfigError(" ".join(str(exc).split()), "check the overrides (alignkit train --help lists every key)")


def _stored_options(group: str) -> list[str]:
    """Options of ``group`` stored in Hydra's ConfigStore (plugins' algorithms and data presets)."""
    repo = ConfigStore.instance().repo
    node = repo
    for part in group.split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return [k[:-5] for k in node if k.endswith(".yaml")] if isinstance(node, dict) else []


def validate(node, path: str = "") -> None:
    """Run every config dataclass's ``__post_init__`` range checks, children before parents,
    so a failure names its full key (``algo.generation.temperature=-1.0: must be >= 0``)."""
    from omegaconf import ListConfig

    if isinstance(node, DictConfig):
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                validate(child, f"{path}.{key}" if path else str(key))
        cls = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(cls) and hasattr(cls, "__post_init__"):
            try:
                OmegaConf.to_object(node)
            except ConfigValueError as exc:
                key = f"{path}.{exc.name}" if path else exc.name
                fix = (f"choose one of {', '.join(exc.rule[len('one of '):].split('|'))}" if exc.rule.startswith("one of")
                       else f"set {key} to a value {exc.rule}")
                raise ConfigError(f"{key}={exc.value!r} is out of range (must be {exc.rule})", fix) from None
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            if isinstance(item, (DictConfig, ListConfig)):
                validate(item, f"{path}.{i}")


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def compose_config(overrides: list[str] | tuple = (), registry=None) -> DictConfig:
    """Compose the run config for ``overrides`` (without Hydra's run-time keys) and range-check
    every value; errors are one-line :class:`ConfigError` s naming the key and the fix."""
    from alignkit.registry import registry_for

    registry = registry or registry_for(overrides)
    register_configs(registry)
    _reject_added_keys(list(overrides))
    try:
        cfg = _compose(list(overrides))
    except Exception as exc:  # noqa: BLE001 - re-raised as one line with the valid keys
        raise _composition_error(exc, list(overrides)) from exc
    validate(cfg)
    validate_algorithm(cfg, registry)
    return cfg


def _reject_added_keys(overrides: list[str]) -> None:
    """``+key=value`` may add keys only to free-form mappings (e.g. ``algo.reward.kwargs``): on a
    typed config it would add a key nothing reads, so it is an error naming the valid keys."""
    adds = [o for o in overrides if o.startswith("+") and not o.startswith("++") and "=" in o]
    if not adds:
        return
    base = _compose([o for o in overrides if not o.startswith(("+", "~"))])
    for o in adds:
        key = o[1:].split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(node)) and leaf not in node:
            raise _unknown_key(key, overrides)


def validate_algorithm(cfg: DictConfig, registry) -> None:
    """Checks that need the plugins, at composition: the rollout engine's name, the algorithm's own
    ``AlgorithmSpec.validate`` and a configured reward function's arguments against its signature."""
    from alignkit.errors import UserError
    from alignkit.registry import UnknownNameError

    engine = OmegaConf.select(cfg, "rollout.engine")
    if engine is not None and engine not in registry.rollout_engines:
        raise ConfigError(f"unknown rollout engine rollout.engine={engine}",
                          "pick one of: " + ", ".join(sorted(registry.rollout_engines)))

    try:
        spec = registry.algorithm(cfg.algo.name)
    except UnknownNameError:
        raise ConfigError(f"algorithm {cfg.algo.name!r} is provided by no enabled plugin",
                          "remove its plugin from plugins.disable / ALIGNKIT_DISABLE_PLUGINS, or pick one of: "
                          + ", ".join(sorted(registry.algorithms))) from None
    typed = OmegaConf.to_object(cfg.algo) if dataclasses.is_dataclass(OmegaConf.get_type(cfg.algo)) else cfg.algo
    if getattr(spec, "validate", None) is not None:
        try:
            spec.validate(typed)
        except UserError as exc:
            raise ConfigError(f"algo={cfg.algo.name}: {exc.what}", exc.fix or "fix the algo.* values") from None
        except ValueError as exc:
            raise ConfigError(f"algo={cfg.algo.name}: {exc}", "fix the algo.* values") from None
    reward = getattr(typed, "reward", None)
    if reward is not None and getattr(reward, "function", None):
        from alignkit.rollout.rewards import check_reward_function

        try:
            fn = registry.reward_function(reward.function)
        except UnknownNameError as exc:
            raise ConfigError(f"algo.reward.function={reward.function}: {exc}", "pick one of the listed names") \
                from None
        try:
            check_reward_function(fn, str(reward.function), dict(reward.kwargs or {}))
        except UserError as exc:
            raise ConfigError(exc.what, exc.fix) from None
