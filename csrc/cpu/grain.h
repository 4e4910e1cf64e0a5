// Parallel grain of the CPU [B, T] loss kernels.
#pragma once

#include <algorithm>
#include <cstdint>

namespace alignkit::cpu::CPU_CAPABILITY {
// Rows per parallel chunk: ~16k tokens (~50 us of work for the vectorised PPO loss), so a typical
// batch (B·T = 64k) is split over the threads.
inline int64_t kRowGrain(int64_t T) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(T, 1));
}
}  // namespace alignkit::cpu::CPU_CAPABILITY
