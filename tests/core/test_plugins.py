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
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    cfg = compose_config(["algo=sft", "plugins.disable=[sft]", "trainer.max_steps=1", *quick_overrides])
    with pytest.raises(UnknownNameError, match="unknown algorithm 'sft'"):
        train(cfg)
