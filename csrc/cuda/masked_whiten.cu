// CUDA masked_whiten kernels over a flat [N] tensor. Forward: one block per fixed chunk reduces it
// to Moments (alignkit/math.h), one block merges the chunks in chunk order and writes stats on the
// device (no host sync), an elementwise pass writes y. Backward: the same with the two sums of its
// gradient and whiten_grad_coefs. Fixed chunks and reduction orders: deterministic.
#include "common.cuh"

namespace alignkit::cuda_launch {
namespace {

constexpr int64_t kChunk = 4096;  // elements per reduction block

int64_t num_chunks(int64_t N) { return (N + kChunk - 1) / kChunk; }

// part[3c..3c+2] = (n, mean, m2) of the valid x in chunk c = blockIdx.x.
template <typename scalar_t>
__global__ void whiten_moments_kernel(const scalar_t* x, const uint8_t* mask, int64_t N, acc_t<scalar_t>* part) {
  using acc = acc_t<scalar_t>;
  const int64_t c = blockIdx.x, i0 = c * kChunk, i1 = min(N, i0 + kChunk);
  acc s[2] = {0, 0};  // n, Σx
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    if (mask[i]) s[0] += acc(1), s[1] += acc(x[i]);
  }
  block_sum<acc, 2>(s);
  const acc mean = s[0] > acc(0) ? s[1] / s[0] : acc(0);
  acc m2[1] = {0};
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    if (mask[i]) {
      const acc d = acc(x[i]) - mean;
      m2[0] += d * d;
    }
  }
  block_sum<acc, 1>(m2);
  if (threadIdx.x == 0) part[3 * c] = s[0], part[3 * c + 1] = mean, part[3 * c + 2] = m2[0];
}

// One block: thread t merges chunks [t·P/T, (t+1)·P/T) in order, thread 0 merges the threads in order.
template <typename acc>
__global__ void whiten_stats_kernel(const acc* part, int64_t P, acc* stats) {
  __shared__ acc sh[3][kThreads];
  const int64_t t = threadIdx.x, T = blockDim.x;
  Moments<acc> m{0, 0, 0};
  for (int64_t c = t * P / T; c < (t + 1) * P / T; ++c) {
    m = moments_merge(m, Moments<acc>{part[3 * c], part[3 * c + 1], part[3 * c + 2]});
  }
  sh[0][t] = m.n, sh[1][t] = m.mean, sh[2][t] = m.m2;
  __syncthreads();
  if (t == 0) {
    Moments<acc> all{0, 0, 0};
    for (int k = 0; k < T; ++k) all = moments_merge(all, Moments<acc>{sh[0][k], sh[1][k], sh[2][k]});
    stats[0] = all.mean, stats[1] = whiten_rstd(all), stats[2] = all.n;
  }
}

template <typename scalar_t>
__global__ void whiten_apply_kernel(const scalar_t* x, const uint8_t* mask, int64_t N, const acc_t<scalar_t>* stats,
                                    scalar_t* y) {
  using acc = acc_t<scalar_t>;
  const acc mean = stats[0], rstd = stats[1];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = mask[i] ? scalar_t((acc(x[i]) - mean) * rstd) : scalar_t(0);
  }
}

// part[2c..2c+1] = (Σ m·g, Σ m·g·(x - mean)) over chunk c = blockIdx.x.
template <typename scalar_t>
__global__ void whiten_grad_sums_kernel(const scalar_t* g, const scalar_t* x, const uint8_t* mask, int64_t N,
                                        const acc_t<scalar_t>* stats, acc_t<scalar_t>* part) {
  using acc = acc_t<scalar_t>;
  const int64_t c = blockIdx.x, i0 = c * kChunk, i1 = min(N, i0 + kChunk);
  const acc mean = stats[0];
  acc s[2] = {0, 0};
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    if (mask[i]) {
      const acc gi = acc(g[i]);
      s[0] += gi, s[1] += gi * (acc(x[i]) - mean);
    }
  }
  block_sum<acc, 2>(s);
  if (threadIdx.x == 0) part[2 * c] = s[0], part[2 * c + 1] = s[1];
}

// One block: the chunk sums in a fixed order, then coef = (mean_g, k) of whiten_grad_coefs.
template <typename acc>
__global__ void whiten_grad_coefs_kernel(const acc* part, int64_t P, const acc* stats, acc* coef) {
  __shared__ acc sh[2][kThreads];
  const int64_t t = threadIdx.x, T = blockDim.x;
  acc sg = 0, sgx = 0;
  for (int64_t c = t * P / T; c < (t + 1) * P / T; ++c) sg += part[2 * c], sgx += part[2 * c + 1];
  sh[0][t] = sg, sh[1][t] = sgx;
  __syncthreads();
  if (t == 0) {
    acc sum_g = 0, sum_gxc = 0;
    for (int k = 0; k < T; ++k) sum_g += sh[0][k], sum_gxc += sh[1][k];
    const WhitenGrad<acc> w = whiten_grad_coefs(stats[2], stats[1], sum_g, sum_gxc);
    coef[0] = w.mean_g, coef[1] = w.k;
  }
}

template <typename scalar_t>
__global__ void whiten_grad_apply_kernel(const scalar_t* g, const scalar_t* x, const uint8_t* mask, int64_t N,
                                         const acc_t<scalar_t>* stats, const acc_t<scalar_t>* coef, scalar_t* dx) {
  using acc = acc_t<scalar_t>;
  const acc mean = stats[0], rstd = stats[1], mean_g = coef[0], k = coef[1];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(gridDim.x) * blockDim.x) {
    dx[i] = mask[i] ? scalar_t(rstd * (acc(g[i]) - mean_g) - (acc(x[i]) - mean) * k) : scalar_t(0);
  }
}

}  // namespace

int64_t whiten_work_size(int64_t N) { return 3 * num_chunks(N) + 2; }

template <typename scalar_t>
void whiten_fwd(const scalar_t* x, const uint8_t* mask, int64_t N, acc_t<scalar_t>* work, acc_t<scalar_t>* stats,
                scalar_t* y, cudaStream_t stream) {
  const int64_t P = num_chunks(N);
  if (P > 0) whiten_moments_kernel<<<P, kThreads, 0, stream>>>(x, mask, N, work);
  whiten_stats_kernel<<<1, kThreads, 0, stream>>>(work, P, stats);
  if (N > 0) whiten_apply_kernel<<<grid_for(N), kThreads, 0, stream>>>(x, mask, N, stats, y);
}

template <typename scalar_t>
void whiten_bwd(const scalar_t* g, const scalar_t* x, const uint8_t* mask, int64_t N, const acc_t<scalar_t>* stats,
                acc_t<scalar_t>* work, scalar_t* dx, cudaStream_t stream) {
  const int64_t P = num_chunks(N);
  if (P == 0) return;
  acc_t<scalar_t>* coef = work + 2 * P;
  whiten_grad_sums_kernel<<<P, kThreads, 0, stream>>>(g, x, mask, N, stats, work);
  whiten_grad_coefs_kernel<<<1, kThreads, 0, stream>>>(work, P, stats, coef);
  whiten_grad_apply_kernel<<<grid_for(N), kThreads, 0, stream>>>(g, x, mask, N, stats, coef, dx);
}

#define AK_WHITEN_FWD(T) \
  void whiten_fwd<T>(const T*, const uint8_t*, int64_t, acc_t<T>*, acc_t<T>*, T*, cudaStream_t)
#define AK_WHITEN_BWD(T)                                                                        \
  void whiten_bwd<T>(const T*, const T*, const uint8_t*, int64_t, const acc_t<T>*, acc_t<T>*, T*, \
                     cudaStream_t)
AK_INSTANTIATE(AK_WHITEN_FWD)
AK_INSTANTIATE(AK_WHITEN_BWD)

}  // namespace alignkit::cuda_launch
