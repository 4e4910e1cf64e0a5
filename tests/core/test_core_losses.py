"""Each loss against values computed by hand (the arithmetic is in the docstrings)."""
import math

import pytest
import torch

from alignkit.losses import bradley_terry_loss, dpo_loss, ranked_bradley_terry_loss, sft_loss
from alignkit.metrics import preference_accuracy


def logsig(x):
    return -math.log1p(math.exp(-x))


def test_sft_token_mean():
    logp = torch.tensor([[-1.0, -3.0], [-2.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    loss, m = sft_loss(logp, mask)
    assert loss.item() == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    assert m["ntokens"].item() == 3


def test_bradley_terry_values_and_accuracy():
    loss, m = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx((-logsig(2) - logsig(0)) / 2, abs=1e-6)  # 0.4100
    assert m["accuracy"].item() == 0.5


def test_bradley_terry_margin_and_centering():
    r_c, r_r = torch.tensor([1.0]), torch.tensor([0.5])
    loss, _ = bradley_terry_loss(r_c, r_r, margin=torch.tensor([0.25]), center_rewards=0.1)
    assert loss.item() == pytest.approx(-logsig(0.25) + 0.1 * 1.5 ** 2, abs=1e-6)


def test_ranked_bradley_terry_pairs_ties_and_padding():
    # one prompt, scores [3, 1, 1]: pairs (0>1), (0>2); the tie (1,2) gives no pair; 4th slot is padding
    rewards = torch.tensor([[1.0, 0.0, 2.0, 9.0]])
    scores = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    valid = torch.tensor([[True, True, True, False]])
    loss, m = ranked_bradley_terry_loss(rewards, scores, valid)
    assert loss.item() == pytest.approx((-logsig(1.0) - logsig(-1.0)) / 2, abs=1e-6)
    assert m["pairs"].item() == 2 and m["accuracy"].item() == 0.5


# pc=-1, pr=-3, rc=rr=-2  ->  h = 2
PC, PR, RC, RR = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.0))


@pytest.mark.parametrize("loss_type,eps,expected", [
    ("sigmoid", 0.0, -logsig(1.0)),                                   # β h = 1
    ("sigmoid", 0.1, -0.9 * logsig(1.0) - 0.1 * logsig(-1.0)),
    ("hinge", 0.0, 0.0),                                               # relu(1 - 1)
    ("robust", 0.1, (-0.9 * logsig(1.0) + 0.1 * logsig(-1.0)) / 0.8),
    ("ipo", 0.3, (2 - 1 / (2 * 0.5)) ** 2),                           # (h - 1/(2β))², ε ignored
])
def test_dpo_variants(loss_type, eps, expected):
    loss, m = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type=loss_type, label_smoothing=eps)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert m["rewards/chosen"].item() == pytest.approx(0.5)  # β (pc - rc)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["rewards/margins"].item() == pytest.approx(1.0)
    assert m["rewards/accuracies"].item() == 1.0


def test_dpo_hinge_active_region():
    loss, _ = dpo_loss(PC, PR, RC, RR, beta=0.25, loss_type="hinge")
    assert loss.item() == pytest.approx(0.5)  # relu(1 - 0.25*2)


def test_dpo_reference_free_drops_reference():
    loss, m = dpo_loss(PC, PR, None, None, beta=0.5)
    assert loss.item() == pytest.approx(-logsig(0.5 * 2.0), abs=1e-6)  # h = pc - pr = 2
    assert m["rewards/chosen"].item() == pytest.approx(-0.5)


def test_dpo_gradient_direction():
    pc = torch.tensor([-1.0], requires_grad=True)
    pr = torch.tensor([-1.0], requires_grad=True)
    loss, _ = dpo_loss(pc, pr, torch.tensor([-1.0]), torch.tensor([-1.0]), beta=0.1)
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.05)  # -β σ(0) : push chosen up
    assert pr.grad.item() == pytest.approx(0.05)


def test_dpo_rejects_bad_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(PC, PR, RC, RR, loss_type="sigmod")


def test_preference_accuracy_ties_half():
    assert preference_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == 0.5
    assert preference_accuracy(torch.zeros(5), torch.zeros(5)) == 0.5
