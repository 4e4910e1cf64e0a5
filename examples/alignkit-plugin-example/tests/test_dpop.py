"""DPOP: the loss by hand, on a fake batch through alignkit.testing, and its config ranges."""
import math

import pytest
import torch

from alignkit.testing import fake_batch, make_algorithm
from alignkit_plugin_example import SPEC, DPOPConfig, dpop_loss


def test_loss_by_hand():
    # pair 1: chosen log-ratio +1, rejected -1, chosen above the reference: no penalty
    #   h = 0.5 * (1 - (-1)) = 1                  -> -log σ(1)
    # pair 2: chosen fell 2 below the reference, rejected -3: penalty 2
    #   h = 0.5 * (-2 - (-3) - 1.0 * 2) = -0.5    -> -log σ(-0.5)
    pc, pr = torch.tensor([-9.0, -12.0]), torch.tensor([-21.0, -23.0])
    rc, rr = torch.tensor([-10.0, -10.0]), torch.tensor([-20.0, -20.0])
    loss, m = dpop_loss(pc, pr, rc, rr, beta=0.5, lam=1.0)
    want = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert m["dpop/penalty"].item() == pytest.approx(1.0)
    assert m["rewards/accuracies"] == 1.0  # 0.5 > -0.5 and -1 > -1.5


def test_lam_zero_is_dpo():
    pc, pr, rc, rr = torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-1.0]), torch.tensor([-2.5])
    loss, _ = dpop_loss(pc, pr, rc, rr, beta=0.1, lam=0.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(0.1 * 2.5)), abs=1e-6)  # h = 0.1 * (-2 - 0.5)


def test_compute_loss_on_a_fake_batch():
    algo = make_algorithm(SPEC, ["algo.beta=0.2", "algo.lam=2.0"])
    assert algo.run.reference is not None and algo.cfg.lam == 2.0
    batch = fake_batch("preference", batch_size=2, tokenizer=algo.run.tokenizer)
    loss, metrics = algo.run.forward(algo.compute_loss, batch)
    # policy == reference at the start: every log-ratio and the penalty are 0, so h = 0
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-5)
    assert metrics["rewards/accuracies"] == 0.5  # all implicit rewards tie
    algo.run.backward(loss)
    assert algo.run.optimizer_step()["grad_norm"] > 0
    # one step later the policy has moved and the held-out metrics are there
    out = algo.evaluate(batch)
    assert out["loss"] != pytest.approx(math.log(2.0), abs=1e-6)
    assert 0.0 <= out["preference_accuracy"] <= 1.0


def test_config_ranges():
    with pytest.raises(ValueError, match="beta"):
        DPOPConfig(beta=0.0)
    with pytest.raises(ValueError, match="lam"):
        DPOPConfig(lam=-1.0)
