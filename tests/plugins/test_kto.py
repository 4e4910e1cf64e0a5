"""KTO plugin: loss and reference point against hand arithmetic, the batch built from pairs
and unpaired examples, the ``unpaired`` format, config range checks, and short runs (on
preference pairs: held-out preference accuracy rises; on unpaired data: it trains)."""
import json
from types import SimpleNamespace

import pytest
import torch

from alignkit.errors import UserError
from alignkit.plugins.kto import KTO, KTOConfig, convert_unpaired
from alignkit.plugins.kto.loss import kto_loss, kto_reference_point
from .common import FAST, registry, sig, write_pairs  # noqa: F401 - registry is a fixture






def test_kto_reference_point_by_hand():
    """Mismatched log-probs: policy [-3, -3.5], reference [-4, -4]: mean(1, 0.5) = 0.75;
    policy [-5, -3]: mean(-1, 1) = 0; policy [-5, -5]: mean -1, clamped to 0. Always detached."""
    ref = torch.tensor([-4.0, -4.0])
    pol = torch.tensor([-3.0, -3.5], requires_grad=True)
    z = kto_reference_point(pol, ref)
    assert z.item() == pytest.approx(0.75) and not z.requires_grad
    assert kto_reference_point(torch.tensor([-5.0, -3.0]), ref).item() == 0.0
    assert kto_reference_point(torch.tensor([-5.0, -5.0]), ref).item() == 0.0
    # pooled over processes: summed differences and the total count
    assert kto_reference_point(torch.tensor([3.0]), torch.zeros(1), torch.tensor(4.0)).item() == pytest.approx(0.75)


def test_kto_loss_by_hand():
    """β = 0.5, z = 0.5, λ_D = 1, λ_U = 2. Desirable: r = -3 - (-4) = 1, loss 1 - σ(0.5·(1 - 0.5))
    = 1 - σ(0.25) = 0.437823. Undesirable: r = -5 - (-4) = -1, loss 2·(1 - σ(0.5·(0.5 + 1)))
    = 2·(1 - σ(0.75)) = 0.641642. Mean 0.539732.
    Gradients (N = 2): desirable -λ_D·β·σ'(0.25)/2 = -0.5·0.246134/2 = -0.061534 (raise its log-prob);
    undesirable +λ_U·β·σ'(0.75)/2 = 2·0.5·0.217895/2 = 0.108947 (lower it)."""
    pol = torch.tensor([-3.0, -5.0], requires_grad=True)
    ref = torch.tensor([-4.0, -4.0])
    z = torch.tensor(0.5, requires_grad=True)
    loss, m = kto_loss(pol, ref, torch.tensor([True, False]), z, beta=0.5, desirable_weight=1.0,
                       undesirable_weight=2.0)
    want = ((1 - sig(0.25)) + 2 * (1 - sig(0.75))) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert loss.item() == pytest.approx(0.539732, abs=1e-5)
    loss.backward()
    dsig = lambda x: sig(x) * (1 - sig(x))  # noqa: E731
    assert pol.grad[0].item() == pytest.approx(-0.5 * dsig(0.25) / 2, abs=1e-6)
    assert pol.grad[1].item() == pytest.approx(2 * 0.5 * dsig(0.75) / 2, abs=1e-6)
    assert pol.grad[0] < 0 < pol.grad[1]
    assert z.grad is None  # the reference point is a constant
    assert m["rewards/desirable"].item() == pytest.approx(0.5) and m["rewards/undesirable"].item() == pytest.approx(-0.5)
    assert m["kl"].item() == 0.5


def _algo(max_length=64):
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=2)
    run = SimpleNamespace(tokenizer=tok, cfg=SimpleNamespace(data=SimpleNamespace(max_length=max_length)))
    return KTO(KTOConfig(), run)


def test_kto_batch_from_pairs_and_unpaired_examples():
    """A pair (prompt [5, 6]) and an unpaired undesirable example (prompt [7]) -> 3 rows; each
    row's mismatched sequence joins its prompt with the next row whose prompt differs:
    row 0 (chosen of prompt [5, 6]) and row 1 (its rejected) take row 2's completion [30, 2];
    row 2 takes row 0's completion [10, 11, 2]."""
    X = -100
    pair = {"chosen_input_ids": [5, 6, 10, 11, 2], "chosen_labels": [X, X, 10, 11, 2],
            "rejected_input_ids": [5, 6, 20, 2], "rejected_labels": [X, X, 20, 2], "margin": 0.0}
    single = {"input_ids": [7, 30, 2], "labels": [X, 30, 2], "desirable": False}
    b = _algo().collate([pair, single])
    assert b["desirable"].tolist() == [True, False, False]
    assert b["pair_chosen"].tolist() == [0] and b["pair_rejected"].tolist() == [1]
    assert b["input_ids"].tolist() == [[5, 6, 10, 11, 2], [5, 6, 20, 2, 0], [7, 30, 2, 0, 0]]
    assert b["attention_mask"].tolist() == [[1] * 5, [1] * 4 + [0], [1] * 3 + [0] * 2]
    assert b["labels"][2].tolist() == [X, 30, 2, X, X]
    assert b["kl_input_ids"].tolist() == [[5, 6, 30, 2], [5, 6, 30, 2], [7, 10, 11, 2]]
    assert b["kl_labels"].tolist() == [[X, X, 30, 2], [X, X, 30, 2], [X, 10, 11, 2]]
    # mismatched sequences are cut to data.max_length from the right
    assert _algo(max_length=3).collate([pair, single])["kl_input_ids"][2].tolist() == [7, 10, 11]
    # training examples: a pair becomes a desirable and an undesirable example; identical pairs are dropped
    ex = _algo().prepare_examples([{"prompt": "p", "chosen": "a", "rejected": "b"},
                                   {"prompt": "q", "chosen": "same", "rejected": " same"},
                                   {"prompt": "r", "completion": "c", "label": False}], "train")
    assert [(e["completion"], e["label"]) for e in ex] == [("a", True), ("b", False), ("c", False)]


def test_unpaired_format():
    assert convert_unpaired({"prompt": "hi", "completion": "hello", "label": True}, {}) == \
        {"prompt": "hi", "completion": "hello", "label": True}
    for value, want in ((0, False), ("true", True), ("Undesirable", False), (1, True)):
        assert convert_unpaired({"prompt": "p", "completion": "c", "label": value}, {})["label"] is want
    msgs = [{"role": "assistant", "content": "ok"}]
    assert convert_unpaired({"q": "p", "completion": msgs, "ok": False}, {"prompt": "q", "label": "ok"}) == \
        {"prompt": "p", "completion": "ok", "label": False}
    from alignkit.api import FormatError

    with pytest.raises(FormatError, match="label"):
        convert_unpaired({"prompt": "p", "completion": "c", "label": "maybe"}, {})
    with pytest.raises(FormatError, match="missing field 'label'"):
        convert_unpaired({"prompt": "p", "completion": "c"}, {})
    with pytest.raises(FormatError, match="only algo=kto"):  # another algorithm reading it as a pair
        convert_unpaired({"prompt": "p", "completion": "c", "label": 1}, {})["chosen"]


@pytest.mark.parametrize("override, key", [("algo.beta=-1", "algo.beta"), ("algo.beta=0", "algo.beta"),
                                           ("algo.desirable_weight=0", "algo.desirable_weight"),
                                           ("algo.undesirable_weight=-1", "algo.undesirable_weight")])
def test_kto_config_ranges(registry, override, key):
    from alignkit.config.compose import compose_config

    with pytest.raises(UserError, match=key):
        compose_config(["algo=kto", override], registry)
    cfg = compose_config(["algo=kto"], registry)
    assert (cfg.algo.beta, cfg.algo.desirable_weight, cfg.algo.undesirable_weight) == (0.1, 1.0, 1.0)
    assert registry.algorithm("kto").algorithm_class.needs_reference is True


def test_kto_short_run_on_pairs_raises_preference_accuracy(registry, quick_overrides, tmp_path):
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    data = [f"data.sources.0.path={write_pairs(tmp_path / 'pairs.jsonl')}", "data.sources.0.format=preference",
            "data.sources.0.max_examples=null"]
    result = train(compose_config(["algo=kto", *FAST, *data, "trainer.max_steps=8", *quick_overrides], registry),
                   registry=registry)
    acc = result.history["eval/preference_accuracy"]
    assert acc[0] == (0, 0.5)  # policy = reference: every implicit reward is 0, every pair ties
    assert acc[-1][0] == 8 and acc[-1][1] > 0.5, acc
    stats = json.loads((result.output_dir / "data_stats.json").read_text())
    assert stats["train"]["examples"] == 2 * 120 and stats["eval"]["examples"] == 40  # pairs split for training only


def test_kto_trains_on_unpaired_data(registry, quick_overrides, tmp_path):
    """Unpaired records (prompt/completion/label, 2 desirable : 1 undesirable): training raises the
    held-out desirable rewards above the undesirable ones."""
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    path = tmp_path / "kto.jsonl"
    with open(path, "w") as f:
        for i in range(72):
            good = i % 3 != 2
            text = "Sure, here is a kind and helpful answer." if good else "No. Go away, I will not help you."
            f.write(json.dumps({"prompt": f"Question {i}: can you help me with task {i % 7}?", "completion": text,
                                "label": good}) + "\n")
    data = [f"data.sources.0.path={path}", "data.sources.0.format=unpaired", "data.sources.0.max_examples=null",
            "data.sources.0.eval_size=12"]
    cfg = compose_config(["algo=kto", *FAST, *data, "trainer.max_steps=8", *quick_overrides], registry)
    result = train(cfg, registry=registry)
    assert "eval/preference_accuracy" not in result.metrics  # no pairs held out
    start = {k: v[0][1] for k, v in result.history.items() if k.startswith("eval/")}
    end = {k: v[-1][1] for k, v in result.history.items() if k.startswith("eval/")}
    assert start["eval/rewards/desirable"] == start["eval/rewards/undesirable"] == 0.0  # policy = reference
    assert end["eval/rewards/desirable"] > 0 > end["eval/rewards/undesirable"], end
    assert end["eval/loss"] < start["eval/loss"]
    assert (result.output_dir / "final" / "model.safetensors").exists()
