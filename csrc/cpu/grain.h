// Parallel grain of the CPU [B, T] loss kernels.
#pragma once

#include <algorithm>
#include <cstdint>

namespace alignkit::cpu {
// Rows per parallel chunk: ~256k tokens, so typical batches (B·T = 64k) run on the calling thread.
// They take ~0.1 ms; waking a second thread costs more than it saves, far more on a loaded machine.
inline int64_t kRowGrain(int64_t T) {
  return std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(T, 1));
}
}  // namespace alignkit::cpu
