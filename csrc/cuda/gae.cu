// CUDA GAE kernel: one thread per row runs the shared reverse scan (alignkit::gae_row).
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

template <typename scalar_t>
__global__ void gae_kernel(const scalar_t* r, const scalar_t* v, const uint8_t* mask, int64_t B, int64_t T,
                           acc_t<scalar_t> gamma, acc_t<scalar_t> lam, scalar_t* adv, scalar_t* ret) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  gae_row<scalar_t, uint8_t, acc_t<scalar_t>>(r + b * T, v + b * T, mask + b * T, adv + b * T,
                                              ret + b * T, T, gamma, lam);
}

}  // namespace

template <typename scalar_t>
void gae(const scalar_t* r, const scalar_t* v, const uint8_t* mask, int64_t B, int64_t T, double gamma,
         double lam, scalar_t* adv, scalar_t* ret, cudaStream_t stream) {
  if (B == 0) return;
  constexpr int threads = 64;
  gae_kernel<<<(B + threads - 1) / threads, threads, 0, stream>>>(r, v, mask, B, T, acc_t<scalar_t>(gamma),
                                                                   acc_t<scalar_t>(lam), adv, ret);
}

#define AK_GAE(T) \
  void gae<T>(const T*, const T*, const uint8_t*, int64_t, int64_t, double, double, T*, T*, cudaStream_t)
AK_INSTANTIATE(AK_GAE)

}  // namespace alignkit::cuda_launch
