// Input validation for the ATen-facing ops: every message names the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#define AK_CHECK_FLOAT(name, t)                                                                  \
  TORCH_CHECK((t).is_floating_point(), "alignkit: `" name "` must be a floating-point tensor, got ", \
              (t).scalar_type())
#define AK_CHECK_DTYPE(name, t, dtype)                                                     \
  TORCH_CHECK((t).scalar_type() == (dtype), "alignkit: `" name "` must have dtype ", (dtype), \
              ", got ", (t).scalar_type())
#define AK_CHECK_DIM(name, t, d) \
  TORCH_CHECK((t).dim() == (d), "alignkit: `" name "` must be ", (d), "-D, got shape ", (t).sizes())
#define AK_CHECK_SAME_DEVICE(name, t, ref)                                                     \
  TORCH_CHECK((t).device() == (ref).device(), "alignkit: `" name "` is on ", (t).device(),      \
              " but the other inputs are on ", (ref).device())
#define AK_CHECK_SHAPE(name, t, shape)                                                          \
  TORCH_CHECK((t).sizes() == (shape), "alignkit: `" name "` must have shape ", (shape), ", got ", \
              (t).sizes())
#define AK_CHECK_SUPPORTED_DEVICE(name, t)                                       \
  TORCH_CHECK((t).device().is_cpu() || (t).device().is_cuda(), "alignkit: `" name \
              "` must be on CPU or CUDA, got ",                                   \
              (t).device())
