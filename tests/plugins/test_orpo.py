"""ORPO plugin: the loss against hand arithmetic (and its stability), config range checks, a
short run whose held-out preference accuracy rises."""
import math

import pytest
import torch

from alignkit.errors import UserError
from alignkit.plugins.orpo.loss import log_odds, orpo_loss
from .common import FAST, registry, sig, write_pairs  # noqa: F401 - registry is a fixture




def test_orpo_loss_by_hand():
    """β (λ) = 0.1. Pair 1: m_c = log 0.5, m_r = log 0.25: odds 1 and 1/3, log odds ratio log 3,
    -logσ(log 3) = log(1 + 1/3) = 0.287682, NLL = log 2 = 0.693147, loss 0.693147 + 0.028768 = 0.721915.
    Pair 2: m_c = log 0.2, m_r = log 0.8: odds 1/4 and 4, ratio log(1/16), -logσ = log 17 = 2.833213,
    NLL = log 5 = 1.609438, loss 1.609438 + 0.283321 = 1.892759. Batch mean 1.307337.
    Gradients (B = 2): d(log odds)/dm = 1/(1 - e^m); dL/dm_c = (-1 - β·σ(-ratio)·1/(1-p_c)) / 2:
    pair 1: (-1 - 0.1·0.25·2)/2 = -0.525; dL/dm_r = β·σ(-ratio)/(1-p_r)/2: pair 1 0.1·0.25·(4/3)/2 = 0.016667."""
    c = torch.tensor([math.log(0.5), math.log(0.2)], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([math.log(0.25), math.log(0.8)], dtype=torch.float64, requires_grad=True)
    loss, m = orpo_loss(c, r, beta=0.1)
    pair1 = math.log(2) + 0.1 * math.log(4 / 3)
    pair2 = math.log(5) + 0.1 * math.log(17)
    assert loss.item() == pytest.approx((pair1 + pair2) / 2, abs=1e-9)
    assert loss.item() == pytest.approx(1.307337, abs=1e-6)
    assert m["log_odds_ratio"].item() == pytest.approx((math.log(3) + math.log(1 / 16)) / 2, abs=1e-9)
    assert m["nll"].item() == pytest.approx((math.log(2) + math.log(5)) / 2, abs=1e-9)
    assert m["rewards/accuracies"].item() == 0.5
    loss.backward()
    assert c.grad[0].item() == pytest.approx(-0.525, abs=1e-9)
    assert r.grad[0].item() == pytest.approx(0.1 * 0.25 * (4 / 3) / 2, abs=1e-9)
    assert (c.grad < 0).all() and (r.grad > 0).all()  # descent raises chosen, lowers rejected


def test_orpo_log_odds_is_stable():
    """log odds(m) = m - log(1 - e^m): log 0.5 -> 0; very unlikely responses -> ≈ m; a certain
    response (m = 0) is clamped to m = -1e-6 -> ≈ 13.8, finite with a finite gradient."""
    m = torch.tensor([math.log(0.5), -60.0, 0.0, -1e-9], requires_grad=True)
    lo = log_odds(m)
    assert torch.isfinite(lo).all()
    assert lo[0].item() == pytest.approx(0.0, abs=1e-6)
    assert lo[1].item() == pytest.approx(-60.0, abs=1e-5)
    assert lo[2].item() == pytest.approx(-1e-6 - math.log(1e-6), rel=1e-3)
    loss, _ = orpo_loss(m[2:], m[:2], beta=0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(m.grad).all()


@pytest.mark.parametrize("override", ["algo.beta=-1", "algo.beta=-0.1"])
def test_orpo_config_ranges(registry, override):
    from alignkit.config.compose import compose_config

    with pytest.raises(UserError, match="algo.beta"):
        compose_config(["algo=orpo", override], registry)
    assert compose_config(["algo=orpo"], registry).algo.beta == 0.1
    assert registry.algorithm("orpo").algorithm_class.needs_reference is False


def test_orpo_short_run_raises_preference_accuracy(registry, quick_overrides):
    from alignkit.config.compose import compose_config
    from alignkit.trainer import train

    result = train(compose_config(["algo=orpo", *FAST, *quick_overrides], registry), registry=registry)
    acc = result.history["eval/preference_accuracy"]
    assert [s for s, _ in acc] == [0, 12]
    assert acc[-1][1] > acc[0][1], acc
    loss = result.history["eval/loss"]
    assert loss[-1][1] < loss[0][1], loss
