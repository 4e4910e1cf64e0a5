"""``trainer.malloc_mmap_threshold``: freed tensors of a few MiB leave the process instead of staying
resident as heap holes (glibc only)."""
import json
import platform
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys, torch
from alignkit.trainer.memory import set_malloc_mmap_threshold

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

applied = set_malloc_mmap_threshold(int(sys.argv[1]))
big = torch.ones(4 << 20)  # 16 MiB, mmapped; freeing it raises glibc's adaptive threshold to 16 MiB
del big
base = rss_mb()
xs = [torch.ones(1 << 18) for _ in range(200)]  # 200 tensors of 1 MiB, like a step's activations
del xs[::2]  # free every other one: holes between live blocks
print(json.dumps({"applied": applied, "grown_mb": rss_mb() - base}))
"""


def _probe(threshold: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(threshold)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_fixed_threshold_returns_freed_tensors_to_the_os():
    fixed, adaptive = _probe(131072), _probe(0)
    assert fixed["applied"] and not adaptive["applied"]
    # 100 MiB stay alive in both; the 100 MiB freed in between leave only with the fixed threshold
    assert 90 < fixed["grown_mb"] < 130
    assert adaptive["grown_mb"] > 170


def test_threshold_is_range_checked():
    from alignkit.config.compose import compose_config
    from alignkit.errors import UserError

    assert compose_config([]).trainer.malloc_mmap_threshold == 0
    with pytest.raises(UserError, match="malloc_mmap_threshold"):
        compose_config(["trainer.malloc_mmap_threshold=-1"])


@pytest.mark.parametrize("kw", [{"fused": True}, {"foreach": False}, {"foreach": True, "amsgrad": True}])
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_preallocated_adam_state_gives_the_same_updates(cls, kw):
    import torch

    from alignkit.trainer.memory import preallocate_adam_state

    def run(prealloc: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
        frozen = model[2].bias
        frozen.requires_grad_(False)
        opt = getattr(torch.optim, cls)(model.parameters(), lr=0.1, weight_decay=0.01, **kw)
        made = preallocate_adam_state(opt) if prealloc else 0
        for step in range(3):
            torch.manual_seed(10 + step)
            model(torch.randn(4, 7)).pow(2).sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return made, [p.detach().clone() for p in model.parameters()], opt.state_dict()

    made, params, state = run(True)
    _, params0, state0 = run(False)
    assert made == 3  # two weights and one bias; the frozen bias gets none
    assert all(torch.equal(a, b) for a, b in zip(params, params0))
    assert state.keys() == state0.keys() and state["state"].keys() == state0["state"].keys()
    for i, s in state0["state"].items():
        assert s.keys() == state["state"][i].keys()
        for k, v in s.items():
            assert v.dtype == state["state"][i][k].dtype and v.device == state["state"][i][k].device
            assert torch.equal(v, state["state"][i][k])


def test_preallocate_leaves_other_optimisers_alone():
    import torch

    from alignkit.trainer.memory import preallocate_adam_state

    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    assert preallocate_adam_state(opt) == 0 and not opt.state
