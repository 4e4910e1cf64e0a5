"""`alignkit profile` (against a stub trainer) and `alignkit bench --quick` smoke tests."""
import json
import types

import pytest
import torch

import alignkit.ops as ops


def _stub_train(cfg, step_callback=None, **kw):
    """A stand-in for alignkit.trainer.train: a tiny DPO-ish loop over the ops."""
    w = torch.randn(50, 8, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    for step in range(1, cfg["max_steps"] + 1):
        h = torch.randn(2, 4, 8)
        y = torch.randint(0, 50, (2, 4))
        logp = ops.fused_linear_logprobs(h, w, y).sum(-1)
        loss = ops.dpo_loss(logp[:1], logp[1:], torch.zeros(1), torch.zeros(1))[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step_callback:
            step_callback(step)
    return types.SimpleNamespace(output_dir=cfg["dir"], metrics={})


def test_profile_with_stub_trainer(tmp_path, monkeypatch, capsys):
    import alignkit.config.compose
    import alignkit.profile
    import alignkit.trainer

    seen = {}

    def compose(overrides):
        seen["overrides"] = overrides
        steps = int(next(o.split("=")[1] for o in overrides if o.startswith("trainer.max_steps=")))
        return {"max_steps": steps, "dir": tmp_path}

    monkeypatch.setattr(alignkit.config.compose, "compose_config", compose)
    monkeypatch.setattr(alignkit.trainer, "train", _stub_train)
    assert alignkit.profile.main(["algo=dpo", "model=tiny", "--steps", "3"]) == 0
    assert seen["overrides"] == ["algo=dpo", "model=tiny", "trainer.max_steps=3"]
    trace = tmp_path / "profile_trace.json"
    assert trace.exists() and "traceEvents" in json.loads(trace.read_text())
    out = capsys.readouterr().out
    assert "alignkit::fused_linear_logprobs_fwd" in out and "alignkit kernels (alignkit::*" in out


def test_profile_compare_on_the_tiny_model(quick_overrides, tmp_path, capsys):
    """``--compare`` runs the same DPO steps with the kernels and with the reference ops and unfused
    logits, and reports both: only the kernels' run spends time in alignkit::* ops, and both runs
    have a step time and a peak memory."""
    import alignkit.profile

    png = tmp_path / "compare.png"
    overrides = ["algo=dpo", *quick_overrides, "trainer.batch_size=2", "data.max_length=64",
                 "data.sources.0.max_examples=24", "data.sources.0.eval_size=4"]
    assert alignkit.profile.main([*overrides, "--steps", "2", "--compare", "--plot", str(png), "--top", "3"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("step time"):]
    assert "kernels" in out and "reference" in out and "ops.backend=reference model.fused_logprobs=false" in table
    shares = [float(v.rstrip("%")) for v in table.split("time in alignkit ops")[1].split("\n")[0].split()[-2:]]
    assert shares[0] > 0 and shares[1] == 0
    steps = table.split("step time")[1].split("\n")[0]
    assert steps.count(" ms") == 2
    assert png.stat().st_size > 0


def test_profile_compare_replaces_the_backend_overrides():
    from alignkit.profile import _without_kernels

    got = _without_kernels(["algo=dpo", "ops.backend=kernel", "+model.fused_logprobs=true", "trainer.seed=1"])
    assert got == ["algo=dpo", "trainer.seed=1", "ops.backend=reference", "model.fused_logprobs=false"]


def test_bench_quick(tmp_path):
    from alignkit import bench

    js, png = tmp_path / "b.json", tmp_path / "b.png"
    assert bench.main(["gae", "dpo_loss", "--quick", "--no-memory", "--json", str(js), "--plot", str(png)]) == 0
    data = json.loads(js.read_text())
    impls = {(r["op"], r["impl"]) for r in data["results"]}
    assert ("gae", "alignkit kernel") in impls and ("dpo_loss", "eager composition") in impls
    assert png.stat().st_size > 0
    assert bench.main(["nope"]) == 2


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("quick", [True, False])
def test_bench_inputs_have_the_shapes_the_table_names(quick, device):
    """Every dimension a case's label names (B=65536, N=4096 ...) is a dimension of its inputs: the
    input builders bind their shapes when the case is made, not when it runs."""
    import re

    from alignkit import bench

    for case in bench.cases(device, quick, "all"):
        named = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", case.shape)}
        with torch.device("meta"):
            inputs = case.build("meta")
        sizes = {n for t in inputs.values() for n in t.shape}
        missing = {k: v for k, v in named.items() if v not in sizes}
        assert not missing, f"{case.op} {case.shape}: inputs {[tuple(t.shape) for t in inputs.values()]}"


def test_bench_shape_sets():
    """``--shapes``: targets are kernels.md's shapes, sweep covers the vocabularies the issue names
    (32000, 49152, 128256) for both log-prob ops and leaves the other ops out, all is both."""
    from alignkit import bench

    def labels(device, shapes):
        return [(c.op, c.shape, c.dtype) for c in bench.cases(device, False, shapes)]

    for device in ("cpu", "cuda"):
        targets, sweep, both = labels(device, "targets"), labels(device, "sweep"), labels(device, "all")
        assert set(both) == set(targets) | set(sweep) and not set(targets) & set(sweep)
        assert {op for op, _, _ in sweep} == {"logprobs", "fused_linear_logprobs"}
        assert {"gae", "dpo_loss", "ppo_loss", "value_loss", "masked_whiten"} <= {op for op, _, _ in targets}
        for op in ("logprobs", "fused_linear_logprobs"):
            vocabs = {int(s.split("V=")[1]) for o, s, _ in targets + sweep if o == op}
            assert vocabs == {32000, 49152, 128256}, (device, op, vocabs)
    assert ("fused_linear_logprobs", "N=4096 H=576 V=49152", "float32") in labels("cpu", "targets")
    assert ("fused_linear_logprobs", "N=512 H=4096 V=128256", "float32") in labels("cpu", "sweep")


@pytest.mark.slow
def test_bench_memory_subprocess(tmp_path):
    from alignkit import bench

    js = tmp_path / "b.json"
    assert bench.main(["logprobs", "--quick", "--json", str(js)]) == 0
    rows = {r["impl"]: r for r in json.loads(js.read_text())["results"]}
    # the kernel never materialises a softmax: its extra memory is far below eager's [N, V] copies
    assert rows["alignkit kernel"]["peak_extra_mb"] < rows["eager log_softmax+gather"]["peak_extra_mb"]
