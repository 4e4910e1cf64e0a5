"""Helpers shared by the kernel tests: devices and the per-dtype tolerances."""
import math

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]

# Tolerances for fp32/fp64 parity; half precision uses the 2x-the-reference's-own-error rule.
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}
HALF = (torch.bfloat16, torch.float16)


def assert_close(kernel_out, ref_out, dtype, ref64=None, what=""):
    """fp32/fp64: allclose with TOL. Half: |kernel - ref64| <= 2 |ref_half - ref64| + floor."""
    if dtype in HALF:
        assert ref64 is not None, "half-precision checks need a float64 reference"
        k, r, t = kernel_out.double(), ref_out.double(), ref64.double()
        err_k, err_r = (k - t).abs().max().item(), (r - t).abs().max().item()
        floor = 1e-6 * max(1.0, t.abs().max().item())
        if math.isnan(err_r):  # the reference broke down in half precision (e.g. 1e-8 underflows in fp16)
            err_r = torch.finfo(dtype).eps * max(1.0, t.abs().max().item())  # then: one half-precision ulp
        assert err_k <= 2 * err_r + floor, f"{what}: kernel error {err_k} > 2x reference error {err_r}"
    else:
        torch.testing.assert_close(kernel_out, ref_out.to(kernel_out.dtype), **TOL[dtype], msg=what)
