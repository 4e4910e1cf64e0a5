"""alignkit.ops backend selection: auto | kernel | reference, with one warning on fallback."""
import warnings

import pytest
import torch

import alignkit.ops as ops


@pytest.fixture
def restore_backend(monkeypatch):
    yield
    ops.set_backend("auto")


def test_auto_uses_kernels_when_built(restore_backend):
    ops.set_backend("auto")
    assert ops.kernels_available()
    assert ops.get_backend() == "kernel"


def test_reference_backend(restore_backend):
    ops.set_backend("reference")
    assert ops.get_backend() == "reference"
    logp = ops.logprobs(torch.zeros(2, 4), torch.tensor([0, -100]))
    torch.testing.assert_close(logp, torch.tensor([-torch.log(torch.tensor(4.0)).item(), 0.0]))


def test_invalid_backend():
    with pytest.raises(ValueError, match="auto"):
        ops.set_backend("triton")


def test_fallback_warns_once_and_kernel_raises(monkeypatch, restore_backend):
    monkeypatch.setattr(ops, "_kernel_module", None)
    monkeypatch.setattr(ops, "_load_error", "ImportError: simulated")
    monkeypatch.setattr(ops, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops.logprobs(torch.zeros(1, 3), torch.tensor([1]))
        ops.dpo_loss(*(torch.zeros(2) for _ in range(4)))
    assert [str(w.message) for w in caught if "falls back" in str(w.message)].__len__() == 1
    assert ops.get_backend() == "reference"
    with pytest.raises(RuntimeError, match="ops.backend=kernel"):
        ops.set_backend("kernel")


def test_public_ops_dispatch_to_kernels(restore_backend):
    ops.set_backend("kernel")
    x = torch.randn(3, 10)
    y = torch.tensor([1, 2, 3])
    torch.testing.assert_close(ops.logprobs(x, y), ops.reference.logprobs(x, y))
