"""`alignkit data` as a user meets it (subprocesses), and data steps from plugins."""
import json
import os
import subprocess
import sys

import pytest

from datagen_helpers import read_jsonl, write_jsonl

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def alignkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


def test_data_lists_the_steps(capsys):
    from alignkit.cli import HELP
    from alignkit.datagen.cli import main

    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for step in ("self-instruct", "score", "select", "pairs", "dedup", "mix"):
        assert f"  {step} " in shown
    assert main([]) == 2  # no step: the same list, as an error
    assert "data <step>" in HELP
    from alignkit.cli import cmd_list

    assert cmd_list([]) == 0
    listed = capsys.readouterr().out
    assert "data steps (alignkit data <step>):" in listed and "  self-instruct  new instructions" in listed
    assert "  alpaca        sft        instruction [+ input] + output" in listed
    assert "  oasst-ranked  ranked     OpenAssistant message trees" in listed
    assert "translators (alignkit data translate translator=<name>):\n  model " in listed


def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"score": 1}\n{"score": 2,}\n')
    out = alignkit("data", "select", "input=in.jsonl", "output=k.jsonl", "top_k=1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "alignkit: in.jsonl, line 2: invalid JSON: Expecting property name enclosed in double quotes at column 13; "
        "fix or remove that line (each line of a JSON-lines file must be one JSON object)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_config_errors_and_a_run_through_the_cli(tmp_path, capsys, monkeypatch):
    from alignkit.datagen.cli import main

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "s.jsonl", [{"id": 1, "score": 2.0}, {"id": 2, "score": 4.5}])
    assert main(["select", "input=s.jsonl", "output=k.jsonl", "treshold=4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignkit: 'treshold' is not a key of 'select'; valid keys:") and "threshold" in err
    assert main(["select", "output=k.jsonl"]) == 2
    assert capsys.readouterr().err == "alignkit: alignkit data select needs input; pass input=...\n"
    assert main(["selekt"]) == 2
    assert "unknown data step 'selekt'; choose one of: arithmetic, dedup, mix, pairs" in capsys.readouterr().err
    assert main(["select", "input=s.jsonl", "output=k.jsonl", "threshold=4"]) == 0
    assert "counts: dropped 1, input 2, kept 1" in capsys.readouterr().out
    assert read_jsonl(tmp_path / "k.jsonl") == [{"id": 2, "score": 4.5}]
    prov = json.loads((tmp_path / "k.provenance.json").read_text())
    assert prov["command"] == "alignkit data select input=s.jsonl output=k.jsonl threshold=4"


def _documented_plugin(monkeypatch):
    """The plugin example of ``alignkit.datagen``'s docstring, as an importable module."""
    import textwrap
    import types

    import alignkit.datagen

    code = textwrap.dedent(alignkit.datagen.__doc__.split("::\n", 1)[1].split("\nShared machinery", 1)[0])
    module = types.ModuleType("documented_data_step")
    exec(compile(code, "alignkit.datagen docstring", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def test_the_documented_plugin_registers_a_data_step(tmp_path, monkeypatch):
    from alignkit.datagen.compose import compose_step, data_step, data_steps
    from alignkit.datagen.run import execute
    from alignkit.registry import build_registry

    reg = build_registry(extra_modules=[_documented_plugin(monkeypatch)])
    assert data_steps(reg)["upper"][1] == "documented_data_step"
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}, {"prompt": "yo"}])
    spec = data_step(reg, "upper")
    step = execute(spec, compose_step(spec, [f"input={src}", f"output={tmp_path / 'u.jsonl'}"]), reg)
    assert read_jsonl(tmp_path / "u.jsonl") == [{"prompt": "HI"}, {"prompt": "YO"}]
    assert step.counts == {"rows": 2} and (tmp_path / "u.provenance.json").exists()


def test_two_plugins_claiming_one_step_name_are_named():
    from alignkit.datagen.compose import data_steps
    from alignkit.registry import PluginError, build_registry

    with pytest.raises(PluginError, match="data step 'dedup' is registered by two plugins: 'datagen' and "
                                          "'datagen_clashing_plugin'"):
        data_steps(build_registry(extra_modules=["datagen_clashing_plugin"]))
