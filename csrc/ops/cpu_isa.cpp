// Which build of the CPU kernels runs (see the cpu namespaces in alignkit/ops.h): decided once per
// process, from ATen's own choice for the running CPU, so alignkit's kernels and ATen's use the
// same instruction set (and ATEN_CPU_CAPABILITY=default / avx2 lowers both, e.g. to test a build).
#include <ATen/Version.h>

#include <string>

#include "alignkit/ops.h"

namespace alignkit::cpu {

bool isa_built(Isa isa) {
  switch (isa) {
#ifdef ALIGNKIT_CPU_AVX512
    case Isa::kAvx512: return true;
#endif
#ifdef ALIGNKIT_CPU_AVX2
    case Isa::kAvx2: return true;
#endif
    case Isa::kDefault: return true;
    default: return false;
  }
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "AVX512";
    case Isa::kAvx2: return "AVX2";
    default: return "DEFAULT";
  }
}

Isa isa() {
  static const Isa picked = [] {
    // "DEFAULT", "AVX2" or "AVX512" on x86-64 (an AVX512 CPU also runs the AVX2 build); other names
    // (aarch64's SVE256, ...) get the DEFAULT build
    const std::string aten = at::get_cpu_capability();
    if (aten == "AVX512" && isa_built(Isa::kAvx512)) return Isa::kAvx512;
    if ((aten == "AVX512" || aten == "AVX2") && isa_built(Isa::kAvx2)) return Isa::kAvx2;
    return Isa::kDefault;
  }();
  return picked;
}

}  // namespace alignkit::cpu
