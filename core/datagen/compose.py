"""The registered data steps and their configs, composed by Hydra from overrides.

Each step's config dataclass is stored in Hydra's ConfigStore as the primary config
``datagen_<step>``; a step that loads a model selects ``model=`` from ``conf/model`` through
its defaults list, so ``alignkit data score model=smollm2-135m judge.retries=3`` composes
like ``alignkit train``: unknown keys name the valid ones, values are type- and
range-checked, and keys without a value (``input``, ``output``) are named.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignkit.config.compose import CONFIG_MODULE, ConfigError, _composition_error, validate
from alignkit.datagen.spec import DataStepSpec
from alignkit.registry import _collect

__all__ = ["data_steps", "data_step", "compose_step"]


def data_steps(registry: Any) -> dict[str, tuple[DataStepSpec, str]]:
    """Every step registered through ``alignkit_register_data_steps``: name -> (spec, plugin)."""
    table: dict = {}
    _collect(registry.pm, "alignkit_register_data_steps", "data step", table, lambda s: s.name)
    return table


def data_step(registry: Any, name: str) -> DataStepSpec:
    steps = data_steps(registry)
    if name not in steps:
        raise ConfigError(f"unknown data step {name!r}", f"choose one of: {', '.join(sorted(steps))}")
    return steps[name][0]


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _unknown_key(config_name: str, key: str, overrides: list[str]) -> ConfigError:
    """The error for a key the step's config does not have, naming the keys it does have."""
    groups = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "model"]
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(_compose(config_name, groups), parent) if parent else _compose(config_name, groups)
    if isinstance(node, DictConfig):
        valid = ", ".join(sorted(str(k) for k in node.keys()))
        return ConfigError(f"'{leaf}' is not a key of '{parent or config_name[len('datagen_'):]}'",
                           f"valid keys: {valid}")
    return ConfigError(f"'{parent}' does not exist", "check the spelling")


def compose_step(spec: DataStepSpec, overrides: list[str] | tuple = (), complete: bool = True) -> DictConfig:
    """The config of ``spec`` for ``overrides``, checked; a one-line :class:`ConfigError` otherwise
    (``complete=False``: keys without a value, such as ``input``, are allowed)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    config_name = f"datagen_{spec.name}"
    ConfigStore.instance().store(name=config_name, node=spec.config_class)
    try:
        cfg = _compose(config_name, list(overrides))
    except Exception as exc:  # noqa: BLE001 - re-raised as one line
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
            raise _unknown_key(config_name, str(cause.full_key), list(overrides)) from exc
        raise _composition_error(exc, list(overrides)) from exc
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and complete:
        raise ConfigError(f"alignkit data {spec.name} needs {', '.join(missing)}",
                          f"pass {' '.join(k + '=...' for k in missing)}")
    if not missing:  # range checks build the dataclasses, which needs every value
        validate(cfg)
    return cfg
