"""Config composition: every file under conf/ composes; bad overrides fail clearly."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import alignkit.conf
from alignkit.config.compose import ConfigError, compose_config

CONF = Path(alignkit.conf.__file__).parent


def _all_yaml():
    return sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml") if p.name != "config.yaml")


@pytest.mark.parametrize("rel", _all_yaml(), ids=str)
def test_every_config_file_composes(rel):
    group, option = rel.parts[0], rel.with_suffix("").name
    extra = ["model.path=some/model"] if (group, option) == ("model", "hf") else []
    cfg = compose_config([f"{group}={option}", *extra])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=group != "experiment")
    if group == "algo":
        assert cfg.algo.name == option
    elif group in ("model", "data"):
        assert cfg[group].name == option


def test_conf_walk_found_every_group():
    groups = {p.parts[0] for p in _all_yaml()}
    assert {"algo", "model", "data", "trainer", "logger"} <= groups


def test_default_run_is_dpo_tiny_hh():
    cfg = compose_config([])
    assert (cfg.algo.name, cfg.model.name, cfg.data.name) == ("dpo", "tiny", "hh-rlhf")
    assert cfg.algo.beta == 0.1 and cfg.algo.loss_type == "sigmoid"


def test_overrides_apply_with_types():
    cfg = compose_config(["algo=dpo", "algo.beta=0.5", "trainer.lr=1e-4", "trainer.max_steps=7"])
    assert cfg.algo.beta == 0.5 and cfg.trainer.lr == pytest.approx(1e-4) and cfg.trainer.max_steps == 7


def test_misspelt_key_names_valid_keys():
    with pytest.raises(ConfigError) as e:
        compose_config(["trainer.lrr=1e-4"])
    msg = str(e.value)
    assert "lrr" in msg and "valid keys" in msg and "max_steps" in msg and "lr," in msg


def test_misspelt_algo_key_names_the_algorithms_keys():
    with pytest.raises(ConfigError) as e:
        compose_config(["algo=dpo", "algo.betta=0.2"])
    assert "betta" in str(e.value) and "beta" in str(e.value) and "loss_type" in str(e.value)


def test_wrong_type_fails():
    with pytest.raises(ConfigError) as e:
        compose_config(["trainer.max_steps=ten"])
    assert "max_steps" in str(e.value)


def test_unknown_algorithm_lists_options():
    with pytest.raises(ConfigError) as e:
        compose_config(["algo=dpoo"])
    assert "dpo" in str(e.value) and "sft" in str(e.value)


def test_data_source_fields_are_typed():
    with pytest.raises(ConfigError):
        compose_config(["data.sources.0.weight=heavy"])
