// fused_linear_logprobs: logprobs(hidden @ weight.T + bias, labels) without the [N, V] logits.
//
// The vocabulary is walked in tiles of `tv` columns: each tile of logits [Nv, tv] is produced by
// one GEMM (fp32 on CPU: the blocked cpu::sgemm; otherwise at::mm, i.e. cuBLAS on CUDA), folded
// into per-row online log-sum-exp state by the device's lse_tile kernel, and dropped. Backward
// recomputes each tile, turns it into d loss / d logits in place (grad_tile) and feeds two GEMMs:
// grad_hidden += G @ W_tile and grad_weight[tile] = G^T @ hidden. Ignored rows (label ==
// ignore_index) are removed up front.
//
// Memory for speed: the forward may keep the logits of the last `cache_cols` vocabulary columns
// (the `cache` output, [N, cache_cols], saved for backward); backward reads those tiles instead of
// recomputing them, one GEMM of four saved per cached tile. alignkit.ops picks cache_cols from a
// byte budget (ALIGNKIT_FUSED_CACHE_BYTES) and passes 0 when no gradient is needed.
#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "alignkit/sgemm.h"
#include "common.h"

namespace alignkit {

namespace {

// out = a @ b (beta = 0) or out += a @ b (beta = 1). fp32 CPU operands go through the blocked
// cpu::sgemm (faster than MKL here, see sgemm.h); anything else through at::mm.
void gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, float beta) {
  if (out.is_cpu() && out.scalar_type() == at::kFloat && cpu::sgemm_available() && out.stride(1) == 1 &&
      a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat) {
    cpu::sgemm(a.size(0), b.size(1), a.size(1), a.const_data_ptr<float>(), a.stride(0), a.stride(1),
               b.const_data_ptr<float>(), b.stride(0), b.stride(1), beta, out.mutable_data_ptr<float>(),
               out.stride(0));
  } else if (beta == 0.f) {
    at::mm_out(out, a, b);
  } else if (out.scalar_type() == a.scalar_type()) {
    out.addmm_(a, b);
  } else {
    out.add_(at::mm(a, b));
  }
}

// Bytes of one logits tile. CPU: 32 MB (2048 columns at N = 4096) measured faster than 8 MB on the
// 2-core dev box (fwd 12.3 s vs 15.3 s, bwd 33-39 s vs 44-45 s, under heavy load) while staying far
// below the [N, V] logits. CUDA: 128 MB, +5% over 32 MB on an H200 at N = 4096, H = 4096, V = 128256
// in bf16 (449 vs 429 TFLOP/s), as larger GEMMs run closer to peak; 512 MB gained < 3% more.
// ALIGNKIT_TILE_BYTES overrides it (tests use it to force many tiles).
int64_t tile_cols(int64_t rows, int64_t V, int64_t elem_size, bool cuda) {
  const char* env = std::getenv("ALIGNKIT_TILE_BYTES");
  const int64_t budget = env ? std::max<int64_t>(std::atoll(env), 1024) : int64_t(cuda ? 128 : 32) << 20;
  int64_t tv = budget / (std::max<int64_t>(rows, 1) * elem_size);
  tv = std::max<int64_t>(64, tv / 64 * 64);
  return std::min(tv, V);
}

// Row stride of the tile buffer: tv, plus one cache line on CPU when rows tv columns apart would be
// a multiple of 4 KB apart. At such a stride the 6 rows of C that an sgemm micro-tile writes all
// fall in one L1 set: at N = 4096, V = 49152 the forward ran 5-7% slower with 2048-column tiles than
// with 1984-column ones (medians of 6 interleaved fwd calls: 1.94 vs 1.82 s).
int64_t tile_ld(int64_t tv, int64_t elem_size, bool cuda) {
  return !cuda && (tv * elem_size) % 4096 == 0 ? tv + 64 / elem_size : tv;
}

// at::empty(sizes, opts), with the 2 MB-aligned interior of a CPU allocation advised into
// transparent huge pages before anything touches it (Linux's THP mode is commonly `madvise`, as on
// the dev box, so plain allocations get 4 KB pages). For the op's large buffers: the tile (32 MB,
// walked by the GEMMs and packs with 8 KB row strides, which on 4 KB pages needs 8,192 TLB entries
// against Zen 3's 2,048), the kept logits and both gradients; each of them would otherwise also
// fault in page by page on every call. See benchmarks/README.md for the effect.
at::Tensor empty_huge(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = at::empty(sizes, opts);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHuge = std::uintptr_t(2) << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(t.data_ptr()), end = begin + t.nbytes();
  const std::uintptr_t first = (begin + kHuge - 1) / kHuge * kHuge, last = end / kHuge * kHuge;
  if (t.is_cpu() && last > first) {
    madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // a hint: failure is harmless
  }
#endif
  return t;
}

// The buffer one vocabulary tile at a time lives in: tiles of at most tv columns, rows ld apart.
struct TileBuffer {
  int64_t tv, ld;
  at::Tensor buf;

  TileBuffer(int64_t rows, int64_t V, const at::TensorOptions& opts) {
    const int64_t elem = c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
    const bool cuda = opts.device().is_cuda();
    tv = tile_cols(rows, V, elem, cuda);
    ld = tile_ld(tv, elem, cuda);
    buf = empty_huge({rows * ld}, opts);
  }
  // The tile [rows, n] at the front of the buffer.
  at::Tensor view(int64_t rows, int64_t n) {
    return buf.narrow(0, 0, rows * ld).view({rows, ld}).narrow(1, 0, n);
  }
};

void check_inputs(const at::Tensor& hidden, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, const at::Tensor& labels,
                  double temperature) {
  AK_CHECK_SUPPORTED_DEVICE("hidden", hidden);
  AK_CHECK_FLOAT("hidden", hidden);
  AK_CHECK_DIM("hidden", hidden, 2);
  AK_CHECK_FLOAT("weight", weight);
  AK_CHECK_DIM("weight", weight, 2);
  AK_CHECK_SAME_DEVICE("weight", weight, hidden);
  TORCH_CHECK(weight.scalar_type() == hidden.scalar_type(), "alignkit: `weight` must have dtype ",
              hidden.scalar_type(), " like `hidden`, got ", weight.scalar_type());
  TORCH_CHECK(weight.size(1) == hidden.size(1), "alignkit: `weight` must be [V, H] with H = ",
              hidden.size(1), " (hidden.shape[-1]), got shape ", weight.sizes());
  TORCH_CHECK(weight.size(0) >= 1, "alignkit: `weight` must have V >= 1 rows");
  if (bias.has_value() && bias->defined()) {
    AK_CHECK_SAME_DEVICE("bias", *bias, hidden);
    TORCH_CHECK(bias->scalar_type() == hidden.scalar_type(), "alignkit: `bias` must have dtype ",
                hidden.scalar_type(), ", got ", bias->scalar_type());
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "alignkit: `bias` must have shape [", weight.size(0), "], got ", bias->sizes());
  }
  AK_CHECK_DTYPE("labels", labels, at::kLong);
  AK_CHECK_SAME_DEVICE("labels", labels, hidden);
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0),
              "alignkit: `labels` must have shape [", hidden.size(0), "], got ", labels.sizes());
  check_temperature(temperature);
}

// The non-ignored rows, in the precision the GEMMs run in (acc dtype on CPU, the input dtype on
// CUDA where cuBLAS accumulates in fp32 anyway).
struct Problem {
  at::Tensor idx;  // [Nv] indices of valid rows, undefined when every row is valid
  at::Tensor h;    // [Nv, H] compute dtype, contiguous
  at::Tensor y;    // [Nv]
  at::ScalarType compute, acc;
  int64_t N, Nv, V;
};

Problem make_problem(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                     int64_t ignore_index) {
  Problem p;
  p.N = hidden.size(0);
  p.V = weight.size(0);
  p.acc = acc_dtype(hidden.scalar_type());
  p.compute = hidden.is_cuda() ? hidden.scalar_type() : p.acc;
  const at::Tensor y = labels.contiguous();
  check_labels(y, p.V, ignore_index);
  const at::Tensor valid = y.ne(ignore_index);
  if (valid.all().item<bool>()) {
    p.h = hidden.to(p.compute).contiguous();
    p.y = y;
  } else {
    p.idx = valid.nonzero().view(-1);
    p.h = hidden.index_select(0, p.idx).to(p.compute).contiguous();
    p.y = y.index_select(0, p.idx);
  }
  p.Nv = p.y.numel();
  return p;
}

// W[v0:v0+n] [n, H] contiguous, in the GEMMs' dtype.
at::Tensor weight_tile(const Problem& p, const at::Tensor& weight, int64_t v0, int64_t n) {
  return weight.narrow(0, v0, n).to(p.compute).contiguous();
}

// logits tile [Nv, tv] = h @ W[v0:v0+tv].T (+ b[v0:v0+tv]) written into `tiles`.
at::Tensor logits_tile(const Problem& p, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, int64_t v0, int64_t tv, TileBuffer& tiles,
                       at::Tensor& w_tile) {
  w_tile = weight_tile(p, weight, v0, tv);
  at::Tensor z = tiles.view(p.Nv, tv);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) z.copy_(bias->narrow(0, v0, tv).to(p.compute).unsqueeze(0).expand({p.Nv, tv}));
  gemm(z, p.h, w_tile.t(), has_bias ? 1.f : 0.f);
  return z;
}

at::Tensor scatter_rows(const Problem& p, const at::Tensor& v, const at::TensorOptions& opts) {
  if (!p.idx.defined()) return v;
  at::Tensor out = at::zeros({p.N}, opts);
  return out.index_copy_(0, p.idx, v);
}

// Vocabulary tiles [v0, v0 + n) of at most tv columns. None straddles `split`, the first column
// whose logits the forward keeps in the cache, so backward reads a tile whole or recomputes it.
std::vector<std::pair<int64_t, int64_t>> vocab_tiles(int64_t V, int64_t tv, int64_t split) {
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t v0 = 0; v0 < split; v0 += tv) tiles.emplace_back(v0, std::min(tv, split - v0));
  for (int64_t v0 = split; v0 < V; v0 += tv) tiles.emplace_back(v0, std::min(tv, V - v0));
  return tiles;
}

// The cache's valid rows: [Nv, Vc] at the front of the [N, Vc] buffer.
at::Tensor cache_rows(const at::Tensor& cache, const Problem& p) {
  return cache.view(-1).narrow(0, 0, p.Nv * cache.size(1)).view({p.Nv, cache.size(1)});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_fwd(
    const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& labels, int64_t ignore_index, double temperature, bool with_entropy,
    int64_t cache_cols) {
  check_inputs(hidden, weight, bias, labels, temperature);
  TORCH_CHECK(cache_cols >= 0 && cache_cols <= weight.size(0), "alignkit: `cache_cols` must be in [0, V = ",
              weight.size(0), "], got ", cache_cols);
  const Problem p = make_problem(hidden, weight, labels, ignore_index);
  // logits of columns [split, V), kept for backward (which then skips their recompute GEMM)
  at::Tensor cache = empty_huge({p.N, cache_cols}, hidden.options().dtype(p.compute));
  const int64_t split = p.V - cache_cols;
  cache.view(-1).narrow(0, p.Nv * cache_cols, (p.N - p.Nv) * cache_cols).zero_();  // rows past Nv: unused
  const auto opts = hidden.options().dtype(p.acc);
  at::Tensor m = at::empty({p.Nv}, opts), s = at::empty({p.Nv}, opts), t = at::empty({p.Nv}, opts),
             zy = at::empty({p.Nv}, opts), logp = at::empty({p.Nv}, opts),
             lse = at::empty({p.Nv}, opts), ent = at::zeros({p.Nv}, opts);
  if (p.Nv > 0) {
    TileBuffer tiles(p.Nv, p.V, hidden.options().dtype(p.compute));
    at::Tensor w_tile;
    const at::Tensor kept = cache_rows(cache, p);  // [Nv, cache_cols]
    for (const auto& [v0, n] : vocab_tiles(p.V, tiles.tv, split)) {
      const at::Tensor z = logits_tile(p, weight, bias, v0, n, tiles, w_tile);
      if (v0 >= split) kept.narrow(1, v0 - split, n).copy_(z);
      const LseTileArgs a{z, RowLayout{tiles.ld, nullptr}, p.y, v0, ignore_index, 1.0 / temperature,
                          with_entropy, v0 == 0, v0 + n >= p.V, m, s, t, zy, logp, lse, ent};
      AK_DEVICE_CALL(z, lse_tile, a);
    }
  }
  return {scatter_rows(p, logp, opts), scatter_rows(p, lse, opts), scatter_rows(p, ent, opts), cache};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_bwd(
    const at::Tensor& grad_logp, const std::optional<at::Tensor>& grad_entropy,
    const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& labels, const at::Tensor& lse, const at::Tensor& entropy, const at::Tensor& cache,
    int64_t ignore_index, double temperature, bool needs_hidden, bool needs_weight,
    bool needs_bias) {
  check_inputs(hidden, weight, bias, labels, temperature);
  AK_CHECK_SHAPE("grad_logp", grad_logp, labels.sizes());
  AK_CHECK_SAME_DEVICE("cache", cache, hidden);
  TORCH_CHECK(cache.dim() == 2 && cache.size(0) == hidden.size(0) && cache.size(1) <= weight.size(0) &&
                  cache.is_contiguous(),
              "alignkit: `cache` must be the contiguous [N, cache_cols <= V] tensor the forward returned, "
              "got shape ", cache.sizes());
  const bool has_bias = bias.has_value() && bias->defined();
  const Problem p = make_problem(hidden, weight, labels, ignore_index);
  const auto acc_opts = hidden.options().dtype(p.acc);
  auto rows = [&](const at::Tensor& v) {
    at::Tensor f = v.to(p.acc).contiguous();
    return p.idx.defined() ? f.index_select(0, p.idx) : f;
  };
  const at::Tensor g = rows(grad_logp), l = rows(lse), h_ent = rows(entropy);
  at::Tensor ge;
  if (grad_entropy.has_value() && grad_entropy->defined()) {
    AK_CHECK_SHAPE("grad_entropy", *grad_entropy, labels.sizes());
    ge = rows(*grad_entropy);
  }
  const int64_t H = hidden.size(1);
  // fp32 accumulators; grad_weight is written tile by tile, so it can live in the compute dtype.
  // Every vocabulary tile overwrites its rows of grad_weight whole: it needs zeros only when no
  // tile runs (every row ignored).
  at::Tensor gh = needs_hidden ? empty_huge({p.Nv, H}, acc_opts).zero_() : at::Tensor();
  at::Tensor gw = needs_weight ? empty_huge({p.V, H}, hidden.options().dtype(p.compute)) : at::Tensor();
  if (needs_weight && p.Nv == 0) gw.zero_();
  at::Tensor gb = needs_bias && has_bias ? at::zeros({p.V}, acc_opts) : at::Tensor();
  if (p.Nv > 0 && (needs_hidden || needs_weight || gb.defined())) {
    TORCH_CHECK(cache.size(1) == 0 || cache.scalar_type() == p.compute, "alignkit: `cache` must have dtype ",
                p.compute, ", got ", cache.scalar_type());
    const int64_t split = p.V - cache.size(1);
    const at::Tensor kept = cache_rows(cache, p);  // [Nv, cache_cols]
    TileBuffer tiles(p.Nv, p.V, hidden.options().dtype(p.compute));
    at::Tensor w_tile;
    for (const auto& [v0, n] : vocab_tiles(p.V, tiles.tv, split)) {
      at::Tensor z;
      if (v0 >= split) {  // logits kept by the forward: copied, as grad_tile works in place
        z = tiles.view(p.Nv, n).copy_(kept.narrow(1, v0 - split, n));
        w_tile = weight_tile(p, weight, v0, n);
      } else {
        z = logits_tile(p, weight, bias, v0, n, tiles, w_tile);
      }
      const GradTileArgs a{z, RowLayout{tiles.ld, nullptr}, p.y, v0, ignore_index, 1.0 / temperature,
                           l, h_ent, g, ge.defined() ? &ge : nullptr, z};
      AK_DEVICE_CALL(z, grad_tile, a);  // z now holds d loss / d logits of the tile
      if (needs_weight) {
        at::Tensor gw_tile = gw.narrow(0, v0, n);
        gemm(gw_tile, z.t(), p.h, 0.f);
      }
      if (needs_hidden) gemm(gh, z, w_tile, 1.f);
      if (gb.defined()) {
        at::Tensor gb_tile = gb.narrow(0, v0, n);
        at::sum_out(gb_tile, z, {0}, false, p.acc);
      }
    }
  }
  // Grads that were not asked for come back as empty [0] tensors (the schema has no optional returns).
  at::Tensor grad_hidden = at::empty({0}, hidden.options()), grad_weight = grad_hidden,
             grad_bias = grad_hidden;
  if (needs_hidden) {
    grad_hidden = gh.to(hidden.scalar_type());
    if (p.idx.defined()) {
      grad_hidden = at::zeros_like(hidden, at::MemoryFormat::Contiguous).index_copy_(0, p.idx, grad_hidden);
    }
  }
  if (needs_weight) grad_weight = gw.to(weight.scalar_type());
  if (gb.defined()) grad_bias = gb.to(bias->scalar_type());
  return {grad_hidden, grad_weight, grad_bias};
}

}  // namespace alignkit
