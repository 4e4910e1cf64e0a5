"""SimPO plugin: the loss against hand arithmetic, config range checks, a short run whose
held-out preference accuracy rises."""
import json
import math
from importlib.metadata import entry_points

import pytest
import torch

from alignkit.errors import UserError
from alignkit.plugins.simpo.loss import simpo_loss

NEW_PLUGINS = ("kto", "orpo", "simpo")
#: a quick run on the small HH slice: 40 held-out pairs, short sequences, constant LR
FAST = ["data.sources.0.max_examples=120", "data.sources.0.eval_size=40", "data.max_length=64",
        "data.max_prompt_length=32", "trainer.batch_size=8", "trainer.lr=3e-3", "trainer.lr_scheduler=constant",
        "trainer.max_steps=12"]


GOOD = ["Sure, I am glad to help you with that.", "Of course! Here is a careful and kind answer.",
        "Happy to help: let us work through it together.", "Thanks for asking, here is what I suggest."]
BAD = ["No. Figure it out yourself.", "That is a stupid question, go away.",
       "I will not help you with that, idiot.", "Whatever. I do not care about you."]
WORDS = "apple river stone cloud music paper garden window yellow simple quiet market little".split()


def write_pairs(path, n=160, seed=0):
    """Synthetic preference pairs with a learnable preference: a kind answer (chosen) vs a rude one
    (rejected), each from 4 templates plus random filler words, so a random model's scores do not
    order every pair the same way. The preference in a few dozen pairs of the HH slice is too
    subtle for a randomly initialised 1M-parameter model: after a dozen steps held-out accuracy
    there moves by chance, up or down, with the data split (checked on several seeds and splits)."""
    import random

    rng = random.Random(seed)

    def filler(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Question {i}: what about the {filler(3)}?",
                                "chosen": f"{rng.choice(GOOD)} {filler(5)}.",
                                "rejected": f"{rng.choice(BAD)} {filler(5)}."}) + "\n")
    return path


@pytest.fixture
def registry(monkeypatch):
    """The registry with the new built-ins, through their entry points once installed, else ALIGNKIT_PLUGINS."""
    from alignkit.registry import build_registry

    installed = {ep.name for ep in entry_points(group="alignkit.plugins")}
    missing = [f"alignkit.plugins.{n}" for n in NEW_PLUGINS if n not in installed]
    monkeypatch.setenv("ALIGNKIT_PLUGINS", ",".join(missing))
    return build_registry()


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_simpo_loss_by_hand():
    """β=2, γ=0.5; pair 1: means -1 (chosen), -2 (rejected): h = 2·(-1) - 2·(-2) - 0.5 = 1.5,
    loss = log(1 + e^-1.5) = 0.201413; pair 2: means -2, -1: h = -4 + 2 - 0.5 = -2.5,
    loss = log(1 + e^2.5) = 2.578890; batch mean 1.390152.
    Gradients: dL/dm_c = -β·σ(-h)/B: pair 1 -2·0.182426/2 = -0.182426, pair 2 -2·0.924142/2 = -0.924142;
    dL/dm_r is the opposite. Label smoothing ε=0.1 on pair 1: 0.9·0.201413 + 0.1·log(1 + e^1.5)
    = 0.181272 + 0.170141 = 0.351413."""
    c = torch.tensor([-1.0, -2.0], requires_grad=True)
    r = torch.tensor([-2.0, -1.0], requires_grad=True)
    loss, m = simpo_loss(c, r, beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1.5)) + math.log1p(math.exp(2.5))) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(1.390152, abs=1e-5)
    loss.backward()
    torch.testing.assert_close(c.grad, torch.tensor([-_sig(-1.5), -_sig(2.5)]), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.grad, -c.grad)
    assert (c.grad < 0).all() and (r.grad > 0).all()  # descent raises chosen, lowers rejected
    assert m["rewards/chosen"].item() == pytest.approx(-3.0)  # mean of 2·(-1), 2·(-2)
    assert m["rewards/accuracies"].item() == pytest.approx(0.5)  # one win, one loss
    smoothed, _ = simpo_loss(c[:1].detach(), r[:1].detach(), beta=2.0, gamma=0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.351413, abs=1e-5)


def test_simpo_margin_gamma_and_length_normalisation():
    """Equal means: h = -γ, loss = log(1 + e^γ) (γ=0.5: 0.974077), whatever the lengths; a
    larger γ asks for a larger margin, so the loss grows with it."""
    c = r = torch.tensor([-1.5])
    loss, _ = simpo_loss(c, r, beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(0.5)), abs=1e-6)
    assert simpo_loss(c, r, beta=2.0, gamma=1.0)[0] > loss


@pytest.mark.parametrize("override, key", [("algo.beta=-1", "algo.beta"), ("algo.gamma=-0.5", "algo.gamma"),
                                           ("algo.label_smoothing=0.5", "algo.label_smoothing")])
def test_simpo_config_ranges(registry, override, key):
    from alignkit.config.compose import compose_config

    with pytest.raises(UserError, match=key):
        compose_config(["algo=simpo", override], registry)
    cfg = compose_config(["algo=simpo"], registry)
    assert (cfg.algo.beta, cfg.algo.gamma, cfg.algo.label_smoothing) == (2.0, 0.5, 0.0)
    assert registry.algorithm("simpo").algorithm_class.needs_reference is False


def test_simpo_short_run_raises_preference_accuracy(registry, quick_overrides, tmp_path):
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    data = [f"data.sources.0.path={write_pairs(tmp_path / 'pairs.jsonl')}", "data.sources.0.format=preference",
            "data.sources.0.max_examples=null"]
    result = train(compose_config(["algo=simpo", *FAST, *data, "trainer.max_steps=8", *quick_overrides], registry),
                   registry=registry)
    acc = result.history["eval/preference_accuracy"]
    assert [s for s, _ in acc] == [0, 8]
    assert acc[-1][1] > acc[0][1], acc
    loss = result.history["eval/loss"]
    assert loss[-1][1] < loss[0][1], loss
