"""Plugin discovery through entry points, including a separate test package."""
import sys
from pathlib import Path

import pytest

from alignkit.registry import PluginError, UnknownNameError, build_registry

PKG_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "example_plugin"


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Make a distribution with the given entry points visible to importlib.metadata
    (a *.dist-info folder on sys.path: what pip would leave behind)."""
    def install(entry_points: dict[str, str], dist="alignkit_example_plugin"):
        site = tmp_path / f"site_{dist}"
        info = site / f"{dist}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[alignkit.plugins]\n{lines}\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.syspath_prepend(str(PKG_ROOT))
        return site

    yield install
    for mod in [m for m in sys.modules if m.startswith("alignkit_example_plugin")]:
        del sys.modules[mod]


def test_builtins_register_through_entry_points():
    reg = build_registry()
    for name in ("sft", "rm", "dpo"):
        assert reg.algorithms[name][1] == name  # provided by the plugin of that entry-point name
    assert "hh" in reg.data_formats and reg.data_formats["hh"][1] == "core"


def test_third_party_package_is_discovered(install_plugin):
    install_plugin({"example": "alignkit_example_plugin"})
    reg = build_registry()
    spec = reg.algorithm("mean_sft")
    assert reg.algorithms["mean_sft"][1] == "example"
    assert spec.description == "example third-party algorithm"
    assert reg.reward_function("count_a")(["p"], ["banana"]) == [3.0]


def test_unknown_algorithm_lists_available():
    with pytest.raises(UnknownNameError) as e:
        build_registry().algorithm("dpoo")
    assert "dpoo" in str(e.value) and "dpo" in str(e.value) and "sft" in str(e.value)


def test_two_plugins_claiming_one_name(install_plugin):
    install_plugin({"clashing": "alignkit_example_plugin.clash"})
    with pytest.raises(PluginError) as e:
        build_registry()
    assert "'dpo'" in str(e.value) and "'clashing'" in str(e.value)


def test_plugin_raising_during_registration_is_named(install_plugin):
    install_plugin({"explosive": "alignkit_example_plugin.broken"})
    with pytest.raises(PluginError, match="explosive.*boom in registration"):
        build_registry()


def test_plugin_failing_to_import_is_named(install_plugin):
    install_plugin({"ghost": "alignkit_example_plugin.does_not_exist"})
    with pytest.raises(PluginError, match="ghost"):
        build_registry()


def test_misspelt_hook_is_an_error(install_plugin):
    install_plugin({"typo": "alignkit_example_plugin.typo"})
    with pytest.raises(PluginError, match="typo.*alignkit_register_algorithmz"):
        build_registry()


def test_disabling_a_plugin(install_plugin, monkeypatch):
    install_plugin({"clashing": "alignkit_example_plugin.clash"})
    reg = build_registry(disabled=["clashing"])  # the clash is gone once one side is disabled
    assert reg.algorithms["dpo"][1] == "dpo"
    reg = build_registry(disabled=["dpo", "clashing"])
    assert "dpo" not in reg.algorithms
    monkeypatch.setenv("ALIGNKIT_DISABLE_PLUGINS", "sft,clashing")
    assert "sft" not in build_registry().algorithms


def test_third_party_algorithm_trains_and_gets_lifecycle_hooks(install_plugin, quick_overrides):
    install_plugin({"example": "alignkit_example_plugin"})
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    reg = build_registry()
    cfg = compose_config(["algo=mean_sft", "algo.scale=2.0", "trainer.max_steps=2", "trainer.save_steps=1",
                          "data.sources.0.max_examples=40", "data.sources.0.eval_size=8", *quick_overrides], reg)
    assert cfg.algo.scale == 2.0
    result = train(cfg, registry=reg)
    import alignkit_example_plugin as plugin

    kinds = [e[0] for e in plugin.EVENTS]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert ("step", 1, True) in plugin.EVENTS and ("step", 2, True) in plugin.EVENTS
    assert ("checkpoint", 1) in plugin.EVENTS and kinds.count("eval") == 2  # start and end
    assert (result.output_dir / "final" / "model.safetensors").exists()


def test_disable_from_config(quick_overrides):
    from alignkit.config.compose import ConfigError, compose_config
    from alignkit.trainer import Trainer

    with pytest.raises(ConfigError, match="algorithm 'sft' is provided by no enabled plugin; remove its plugin"):
        compose_config(["algo=sft", "plugins.disable=[sft]", "trainer.max_steps=1", *quick_overrides])
    with pytest.raises(UnknownNameError, match="unknown algorithm 'sft'"):
        Trainer(compose_config(["algo=sft", *quick_overrides]), registry=build_registry(disabled=["sft"]))


# -- errors that name the fix -------------------------------------------------------------------
def _cli(argv, capsys):
    from alignkit.cli import main

    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip().splitlines()


def test_plugins_disable_resolves_a_clash_on_the_command_line(install_plugin, capsys, tmp_path, monkeypatch):
    import alignkit.registry

    install_plugin({"clashing": "alignkit_example_plugin.clash"})
    monkeypatch.setattr(alignkit.registry, "_DEFAULT", None)  # a fresh process builds its registry anew
    rc, _, err = _cli(["train", "trainer.max_steps=abc", f"trainer.output_dir={tmp_path}"], capsys)
    assert rc == 2 and err[-1] == ("alignkit: algorithm 'dpo' is registered by two plugins: 'clashing' and 'dpo'; "
                                   "disable one with plugins.disable=[clashing] or plugins.disable=[dpo]")
    # the suggested fix works: the registry is built after the override is read (composition then fails
    # on the next problem, the deliberately bad max_steps, proving the clash is gone)
    rc, _, err = _cli(["train", "plugins.disable=[clashing]", "trainer.max_steps=abc",
                       f"trainer.output_dir={tmp_path}"], capsys)
    assert rc == 2 and err[-1] == "alignkit: trainer.max_steps=abc is not an integer; give trainer.max_steps an integer"


def test_alignkit_list_survives_a_clash_and_marks_the_broken_plugin(install_plugin, capsys):
    install_plugin({"clashing": "alignkit_example_plugin.clash"})
    rc, out, _ = _cli(["list"], capsys)
    assert rc == 0 and "(plugin: sft)" in out and "(plugin: rm)" in out
    assert "broken plugins (skipped):" in out
    assert "BROKEN: algorithm 'dpo' is registered by two plugins: 'clashing' and 'dpo'" in out


def test_disabling_an_unknown_plugin_lists_the_loaded_names(capsys):
    rc, _, err = _cli(["list", "plugins.disable=[alignkit-extra]"], capsys)
    assert rc == 2 and err[-1].startswith("alignkit: plugins.disable names 'alignkit-extra', which no installed "
                                          "plugin is called; plugin names (entry-point names): coh, core, ")
    assert {"dpo", "sft", "rewards"} <= set(err[-1].split("): ", 1)[1].split(", "))


def test_misspelt_hook_suggests_the_closest_name(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text(
        "from alignkit.api import hookimpl\n\n@hookimpl\ndef alignkit_on_step_ned(run, step, metrics):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ALIGNKIT_PLUGINS", "typo_plugin")
    with pytest.raises(PluginError) as e:
        build_registry()
    assert str(e.value) == ("plugin 'typo_plugin' implements a hook alignkit does not define; did you mean "
                            "'alignkit_on_step_ned' -> 'alignkit_on_step_end'")


def test_plus_key_on_a_typed_group_is_rejected_with_the_valid_keys():
    from alignkit.config.compose import ConfigError, compose_config

    with pytest.raises(ConfigError) as e:
        compose_config(["+algo.betta=1"])
    assert str(e.value).startswith("'betta' is not a key of 'algo'; valid keys: beta, label_smoothing")
    cfg = compose_config(["algo=grpo", "algo.reward.function=length_target", "+algo.reward.kwargs.target=7"])
    assert cfg.algo.reward.kwargs.target == 7  # a free-form mapping still takes new keys


@pytest.mark.parametrize("overrides, message", [
    (["+algo.reward.kwargs.targett=7"], "reward function 'length_target' takes no argument 'targett'; did you mean "
                                        "'target'? its arguments: target, unit"),
    (["algo.reward.function=length_targe"], "algo.reward.function=length_targe: unknown reward function "
                                            "'length_targe'; available: "),
])
def test_reward_function_arguments_are_checked_at_composition(overrides, message):
    from alignkit.config.compose import ConfigError, compose_config

    base = ["algo=grpo", "algo.reward.function=length_target"]
    with pytest.raises(ConfigError) as e:
        compose_config(base + overrides)
    assert str(e.value).startswith(message)


def test_reward_functions_get_references_only_when_they_take_them():
    from alignkit.rollout.rewards import RewardScorer, check_reward_function

    def plain(prompts, completions, *, scale=1.0):
        return [scale * len(c) for c in completions]

    def with_refs(prompts, completions, references=None):
        return [float(r is not None) for r in references]

    assert check_reward_function(plain, "plain", {"scale": 2.0}) is False
    scorer = RewardScorer(function=plain, kwargs={"scale": 2.0}, name="plain")
    scorer.pass_references = False
    assert scorer(["p", "q"], ["ab", "c"], references=["x", None]).tolist() == [4.0, 2.0]
    assert check_reward_function(with_refs, "with_refs", {}) is True


def test_algorithm_spec_validate_runs_at_composition(install_plugin, tmp_path, monkeypatch):
    from alignkit.algorithm import AlgorithmSpec
    from alignkit.config.compose import ConfigError, compose_config

    reg = build_registry()
    spec = reg.algorithm("dpo")

    def no_ipo_smoothing(cfg):
        if cfg.loss_type == "ipo" and cfg.label_smoothing:
            raise ValueError("algo.label_smoothing has no meaning for loss_type=ipo")

    reg.algorithms["dpo"] = (AlgorithmSpec(spec.name, spec.config_class, spec.algorithm_class, spec.description,
                                           validate=no_ipo_smoothing), "dpo")
    with pytest.raises(ConfigError) as e:
        compose_config(["algo.loss_type=ipo", "algo.label_smoothing=0.1"], reg)
    assert str(e.value) == ("algo=dpo: algo.label_smoothing has no meaning for loss_type=ipo; fix the algo.* values")
