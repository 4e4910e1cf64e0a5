"""Register schemas in Hydra's ConfigStore and compose run configs.

``compose_config(["algo=dpo", "trainer.lr=1e-4"])`` gives the same config as
``alignkit train algo=dpo trainer.lr=1e-4``; errors name the valid keys.
"""
from __future__ import annotations

import dataclasses
from importlib import resources

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from alignkit.config.schema import DataConfig, DataSource, RunConfig

CONFIG_MODULE = "alignkit.conf"
GROUPS = ("algo", "model", "data", "trainer", "logger", "experiment")


class ConfigError(ValueError):
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


def register_configs(registry) -> None:
    """Store the run schema, every algorithm's config and plugin data presets."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    algo_yaml = set(yaml_options("algo"))
    for name, (spec, plugin) in registry.algorithms.items():
        node = named_config_class(spec.config_class, name)
        cs.store(group="algo", name=f"{name}_schema", node=node, provider=plugin)
        if name not in algo_yaml:  # a plugin without YAML is still selectable as algo=<name>
            cs.store(group="algo", name=name, node=node, provider=plugin)
    data_yaml = set(yaml_options("data"))
    for name, (preset, plugin) in registry.datasets.items():
        if name in data_yaml:
            continue
        conf = dict(preset.config)
        conf["sources"] = [DataSource(**s) for s in conf.get("sources", [])]
        cs.store(group="data", name=name, node=DataConfig(**{"name": name, **conf}), provider=plugin)


def _valid_keys_hint(overrides: list[str], registry) -> str:
    """For the first override whose key does not exist, the keys that do."""
    groups = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in GROUPS]
    try:
        base = _compose(groups)
    except Exception:  # noqa: BLE001 - the group selection itself is wrong; hydra's message says so
        return ""
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in GROUPS or key.startswith("hydra"):
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig) and leaf not in node:
            valid = ", ".join(sorted(str(k) for k in node.keys()))
            return f"\n'{leaf}' is not a key of '{parent or '<root>'}'; valid keys: {valid}"
        if node is None:
            return f"\n'{parent}' does not exist; top-level keys: {', '.join(sorted(base.keys()))}"
    return ""


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def compose_config(overrides: list[str] | tuple = (), registry=None) -> DictConfig:
    """Compose the run config for ``overrides`` (without Hydra's run-time keys)."""
    from alignkit.registry import default_registry

    registry = registry or default_registry()
    register_configs(registry)
    try:
        cfg = _compose(list(overrides))
    except Exception as exc:  # noqa: BLE001 - re-raised with the valid keys
        raise ConfigError(f"{exc}{_valid_keys_hint(list(overrides), registry)}") from exc
    return cfg
