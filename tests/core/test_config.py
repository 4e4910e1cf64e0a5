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
    group, option = "/".join(rel.parts[:-1]), rel.with_suffix("").name
    extra = ["model.path=some/model"] if (group, option) == ("model", "hf") else []
    cfg = compose_config([f"{group}={option}", *extra])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=group != "experiment")
    if group == "algo":
        assert cfg.algo.name == option
    elif group in ("model", "data"):
        assert cfg[group].name == option
    elif group == "trainer/distributed":
        assert cfg.trainer.distributed.strategy == option


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


@pytest.mark.parametrize("override, message", [
    ("trainer.batch_size=0", "trainer.batch_size=0 is out of range (must be >= 1); set trainer.batch_size to a value >= 1"),
    ("trainer.grad_accum=0", "trainer.grad_accum=0 is out of range (must be >= 1)"),
    ("trainer.log_steps=0", "trainer.log_steps=0 is out of range (must be >= 1)"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0 is out of range (must be >= 1)"),
    ("trainer.lr=-1", "trainer.lr=-1.0 is out of range (must be > 0)"),
    ("trainer.max_steps=abc", "trainer.max_steps=abc is not an integer; give trainer.max_steps an integer"),
    ("trainer.mixed_precision=fp8", "choose one of no, bf16, fp16"),
    ("algo.beta=-1", "algo.beta=-1.0 is out of range (must be > 0)"),
    ("data.max_length=1", "data.max_length=1 is out of range (must be >= 2)"),
    ("data.sources.0.weight=0", "data.sources.0.weight=0.0 is out of range (must be > 0)"),
    ("ops.backend=fast", "ops.backend='fast' is out of range (must be one of auto|kernel|reference)"),
])
def test_out_of_range_values_fail_at_composition_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        compose_config([override])
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides, message", [
    (["algo=grpo", "algo.generation.temperature=-1"], "algo.generation.temperature=-1.0 is out of range (must be >= 0)"),
    (["algo=rloo", "algo.num_samples=1"], "algo.num_samples=1 is out of range (must be >= 2)"),
    (["algo=ppo", "algo.lam=2"], "algo.lam=2.0 is out of range (must be in [0, 1])"),
    (["algo=raft", "algo.alpha=0"], "algo.alpha=0.0 is out of range (must be in (0, 1])"),
    (["algo=dpo", "algo.loss_type=ipo2"], "choose one of sigmoid, ipo, hinge, robust"),
])
def test_algorithm_configs_check_their_ranges(overrides, message):
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    assert message in str(e.value)


def test_boundary_values_pass():
    cfg = compose_config(["algo=grpo", "algo.beta=0", "algo.generation.temperature=0", "trainer.max_grad_norm=0",
                          "trainer.eval_steps=0"])
    assert cfg.algo.beta == 0 and cfg.trainer.max_grad_norm == 0


def test_register_configs_drops_what_an_earlier_registry_stored():
    """The ConfigStore holds the current registry's plugin entries only: an algorithm of a plugin that is
    gone is unknown again, and no class of it is left in Hydra's state (which sweep launchers pickle)."""
    from dataclasses import dataclass
    from types import SimpleNamespace

    from hydra.core.config_store import ConfigStore

    from alignkit.config.compose import register_configs
    from alignkit.registry import registry_for

    @dataclass
    class GoneConfig:
        name: str = "gone_algo"
        beta: float = 0.5

    real = registry_for([])
    extra = SimpleNamespace(algorithms={**real.algorithms,
                                        "gone_algo": (SimpleNamespace(config_class=GoneConfig), "gone-plugin")},
                            datasets=real.datasets)
    try:
        register_configs(extra)
        algo = ConfigStore.instance().repo["algo"]
        assert {"gone_algo.yaml", "gone_algo_schema.yaml"} <= set(algo)
    finally:
        register_configs(real)
    assert "gone_algo.yaml" not in algo and "gone_algo_schema.yaml" not in algo
    assert "dpo_schema.yaml" in algo
