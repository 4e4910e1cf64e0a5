"""``model.lean_activations``: the RMSNorm and SwiGLU autograd functions give the eager modules' forward
bit for bit and their gradients to float rounding, while keeping fewer tensors for backward."""
import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from alignkit.models.lean import RMSNormFunction, SwiGLUDownFunction, apply_lean_activations

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _llama(seed=0, **kw) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, **kw)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # norms start at 1: perturb them so weight gradients are not symmetric
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def _grads(module, inputs, dy):
    out = module(*inputs)
    leaves = [t for t in inputs if t.requires_grad] + [p for p in module.parameters()]
    return out, torch.autograd.grad(out, leaves, dy)


@pytest.mark.parametrize("shape", [(3, 7, 33), (1, 1, 5), (11, 64), (2, 3, 4, 17)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_matches_the_eager_module(shape, dtype):
    torch.manual_seed(1)
    H = shape[-1]
    eager = LlamaRMSNorm(H, eps=1e-5)
    with torch.no_grad():
        eager.weight.copy_(torch.randn(H))
    lean = copy.deepcopy(eager)
    assert apply_lean_activations(lean) == {"norms": 1, "mlps": 0}
    ref = copy.deepcopy(eager).double()
    x64 = torch.randn(shape, dtype=torch.float64) * 3
    dy64 = torch.randn(shape, dtype=torch.float64)
    _, g_ref = _grads(ref, [x64.clone().requires_grad_()], dy64)
    e_out, g_eager = _grads(eager.to(dtype), [x64.to(dtype).requires_grad_()], dy64.to(dtype))
    l_out, g_lean = _grads(lean.to(dtype), [x64.to(dtype).requires_grad_()], dy64.to(dtype))
    assert torch.equal(e_out, l_out)  # the same ops in the same order
    for ge, gl, gr in zip(g_eager, g_lean, g_ref):
        assert gl.dtype == ge.dtype and gl.shape == ge.shape
        if dtype == torch.float32:
            assert _rel_err(gl, gr) < 1e-6
        else:  # no worse than autograd through the eager module, against the fp64 truth
            assert _rel_err(gl, gr) <= 1.5 * _rel_err(ge, gr) + 1e-3


def test_rmsnorm_with_a_zero_weight_keeps_its_input():
    torch.manual_seed(2)
    w = torch.randn(9, requires_grad=True)
    with torch.no_grad():
        w[3] = 0.0  # x̂ cannot be read back from y = w * x̂ there: the function keeps x instead
    x = torch.randn(4, 9, requires_grad=True)
    y = RMSNormFunction.apply(x, w, 1e-6)
    dy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, [x, w], dy)
    xhat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    ex, ew = torch.autograd.grad(w * xhat, [x, w], dy)
    torch.testing.assert_close(gw, ew)
    assert gw[3] != 0  # the zero entry's gradient is Σ dy · x̂, not 0
    torch.testing.assert_close(gx, ex)


def test_rmsnorm_hand_computed_example():
    # x = [3, 4]: mean(x²) = 12.5, rstd = 1/sqrt(12.5); w = [2, -1]; dy = [1, 1]
    x = torch.tensor([[3.0, 4.0]], requires_grad=True)
    w = torch.tensor([2.0, -1.0], requires_grad=True)
    y = RMSNormFunction.apply(x, w, 0.0)
    r = 12.5 ** -0.5
    torch.testing.assert_close(y, torch.tensor([[6 * r, -4 * r]]))
    gx, gw = torch.autograd.grad(y, [x, w], torch.ones_like(y))
    torch.testing.assert_close(gw, torch.tensor([3 * r, 4 * r]))
    # g = dy * w = [2, -1]; mean(g * x̂) = (2*3r - 4r) / 2 = r; dx = r * (g - x̂ * r)
    torch.testing.assert_close(gx, torch.tensor([[r * (2 - 3 * r * r), r * (-1 - 4 * r * r)]]))


@pytest.mark.parametrize("bias", [False, True])
def test_swiglu_down_gradcheck(bias):
    torch.manual_seed(3)
    g = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if bias else None
    assert torch.autograd.gradcheck(SwiGLUDownFunction.apply, (g, u, w, b))


@pytest.mark.parametrize("shape", [(3, 7), (1, 1), (2, 5, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_matches_the_eager_module(shape, dtype):
    torch.manual_seed(4)
    cfg = LlamaConfig(hidden_size=24, intermediate_size=40, num_attention_heads=4, hidden_act="silu",
                      mlp_bias=len(shape) == 3)
    eager = LlamaMLP(cfg)
    lean = copy.deepcopy(eager)
    assert apply_lean_activations(lean) == {"norms": 0, "mlps": 1}
    ref = copy.deepcopy(eager).double()
    x64 = torch.randn(*shape, 24, dtype=torch.float64)
    dy64 = torch.randn(*shape, 24, dtype=torch.float64)
    _, g_ref = _grads(ref, [x64.clone().requires_grad_()], dy64)
    e_out, g_eager = _grads(eager.to(dtype), [x64.to(dtype).requires_grad_()], dy64.to(dtype))
    l_out, g_lean = _grads(lean.to(dtype), [x64.to(dtype).requires_grad_()], dy64.to(dtype))
    assert torch.equal(e_out, l_out)
    for ge, gl, gr in zip(g_eager, g_lean, g_ref):
        if dtype == torch.float32:
            assert _rel_err(gl, gr) < 1e-6
        else:
            assert _rel_err(gl, gr) <= 1.5 * _rel_err(ge, gr) + 1e-3


def _saved_bytes(model, ids) -> int:
    """Bytes of the distinct storages autograd keeps for backward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids).last_hidden_state.sum().backward()
    return sum(seen.values())


def test_lean_model_keeps_the_hand_counted_fewer_bytes():
    eager = _llama()
    lean = copy.deepcopy(eager)
    assert apply_lean_activations(lean) == {"norms": 5, "mlps": 2}  # 2 per layer + the final norm
    ids = torch.randint(0, 97, (3, 13))
    N, H, I, layers = 3 * 13, 48, 80, 2
    # per layer: each of 2 norms no longer keeps x and x̂ (y is kept by the next linear anyway), the MLP
    # no longer keeps silu(g) and h; the final norm keeps y instead of x and x̂
    expected = 4 * (layers * N * (2 * 2 * H + 2 * I) + N * H)
    assert _saved_bytes(eager, ids) - _saved_bytes(lean, ids) == expected


def test_whole_model_forward_is_bitwise_and_gradients_agree():
    eager = _llama()
    lean = copy.deepcopy(eager)
    apply_lean_activations(lean)
    ids = torch.randint(0, 97, (2, 11))
    le, ll = eager(ids).logits, lean(ids).logits
    assert torch.equal(le, ll)
    dy = torch.randn_like(le)
    ge = torch.autograd.grad(le, list(eager.parameters()), dy)
    gl = torch.autograd.grad(ll, list(lean.parameters()), dy)
    for a, b in zip(ge, gl):  # fp32: the same gradient up to rounding (relative to each tensor's norm)
        assert _rel_err(b, a.double()) < 1e-5
    with torch.no_grad():  # outside autograd the original forward runs
        assert torch.equal(eager(ids).logits, lean(ids).logits)


def test_apply_is_idempotent_keeps_keys_and_survives_deepcopy():
    model = _llama()
    keys = list(model.state_dict())
    assert apply_lean_activations(model) == {"norms": 5, "mlps": 2}
    assert apply_lean_activations(model) == {"norms": 0, "mlps": 0}
    assert list(model.state_dict()) == keys
    twin = copy.deepcopy(model)
    mlp = twin.model.layers[0].mlp
    assert mlp.forward.__self__ is mlp  # the copy's forward runs on the copy's weights


def test_lora_wrapped_down_proj_keeps_its_forward():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_llama(), LoraConfig(r=2, target_modules=["down_proj"]))
    assert apply_lean_activations(model) == {"norms": 5, "mlps": 0}


def test_other_activations_are_left_alone():
    assert apply_lean_activations(_llama(hidden_act="gelu")) == {"norms": 5, "mlps": 0}


@pytest.mark.parametrize("on", [True, False])
def test_build_model_applies_the_option(on, quick_overrides):
    from alignkit.config.compose import compose_config
    from alignkit.models import build_model

    cfg = compose_config([*quick_overrides, f"model.lean_activations={str(on).lower()}"])
    assert compose_config(quick_overrides).model.lean_activations  # on by default
    for kind in ("causal_lm", "reward"):
        model = build_model(cfg.model, kind=kind)
        rebound = ["forward" in vars(m) for m in model.modules() if type(m).__name__ in ("LlamaRMSNorm", "LlamaMLP")]
        assert rebound and all(r == on for r in rebound)
