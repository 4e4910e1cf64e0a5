"""SimPO plugin: the loss against hand arithmetic, config range checks, a short run whose
held-out preference accuracy rises."""
import math

import pytest
import torch

from alignkit.errors import UserError
from alignkit.plugins.simpo.loss import simpo_loss
from .common import FAST, registry, sig, write_pairs  # noqa: F401 - registry is a fixture






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
    torch.testing.assert_close(c.grad, torch.tensor([-sig(-1.5), -sig(2.5)]), atol=1e-6, rtol=0)
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
