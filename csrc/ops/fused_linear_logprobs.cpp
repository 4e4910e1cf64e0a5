// fused_linear_logprobs: logprobs(hidden @ weight.T + bias, labels) without the [N, V] logits.
//
// The vocabulary is walked in tiles of `tv` columns: each tile of logits [Nv, tv] is produced by
// one ATen GEMM (at::mm_out / at::addmm_out into the tile buffer: MKL, oneDNN, OpenBLAS or
// Accelerate on CPU, whatever torch was built with; cuBLAS on CUDA), folded into per-row online
// log-sum-exp state by the device's lse_tile kernel, and dropped. Backward recomputes each tile,
// turns it into d loss / d logits (grad_tile) and feeds two GEMMs: grad_hidden += G @ W_tile and
// grad_weight[tile] = G^T @ hidden. Ignored rows (label == ignore_index) are removed up front.
//
// Memory for speed: the forward may keep the logits of the last `cache_cols` vocabulary columns
// (the `cache` output, saved for backward); backward reads those tiles instead of recomputing them,
// one GEMM of four saved per kept tile. alignkit.ops picks cache_cols from a byte budget
// (ALIGNKIT_FUSED_CACHE_BYTES) and passes 0 when no gradient is needed. The kept tiles are written
// by the forward GEMM straight into the cache, after the tile buffer of the others is freed, and
// backward never writes to the cache: every backward over one graph gives the same gradients.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <vector>

#include "common.h"

namespace alignkit {

namespace {

// out = a @ b (accumulate = false) or out += a @ b (true), through ATen. `out` may be a strided view
// (a tile of a larger buffer); a and b may be transposed views, which the BLAS reads in place.
void gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  if (!accumulate) {
    at::mm_out(out, a, b);
  } else if (out.scalar_type() == a.scalar_type()) {
    out.addmm_(a, b);
  } else {
    out.add_(at::mm(a, b));
  }
}

// Bytes of one logits tile. CPU: 32 MB (2048 columns at N = 4096) measured faster than 8 MB on a
// 2-core machine while staying far below the [N, V] logits. CUDA: 128 MB, +5% over 32 MB on an H200
// at N = 4096, H = 4096, V = 128256 in bf16 (449 vs 429 TFLOP/s), as larger GEMMs run closer to
// peak; 512 MB gained < 3% more. ALIGNKIT_TILE_BYTES overrides it (tests use it to force many tiles).
int64_t tile_cols(int64_t rows, int64_t V, int64_t elem_size, bool cuda) {
  const char* env = std::getenv("ALIGNKIT_TILE_BYTES");
  const int64_t budget = env ? std::max<int64_t>(std::atoll(env), 1024) : int64_t(cuda ? 128 : 32) << 20;
  int64_t tv = budget / (std::max<int64_t>(rows, 1) * elem_size);
  tv = std::max<int64_t>(64, tv / 64 * 64);
  return std::min(tv, V);
}

// The buffer one vocabulary tile at a time lives in: [rows, tv] contiguous, holding tiles of at most
// tv columns with rows tv apart.
struct TileBuffer {
  int64_t tv;
  at::Tensor buf;  // [rows * tv]

  TileBuffer(int64_t rows, int64_t tv_, const at::TensorOptions& opts) : tv(tv_), buf(at::empty({rows * tv_}, opts)) {}
  // The tile [rows, n] (row stride tv) at the front of the buffer.
  at::Tensor view(int64_t rows, int64_t n) { return buf.narrow(0, 0, rows * tv).view({rows, tv}).narrow(1, 0, n); }
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

// z [Nv, n] (unit column stride) = h @ W[v0:v0+n].T (+ b[v0:v0+n]); w_tile = W[v0:v0+n] [n, H].
void logits_into(at::Tensor& z, const Problem& p, const at::Tensor& weight,
                 const std::optional<at::Tensor>& bias, int64_t v0, int64_t n, at::Tensor& w_tile) {
  w_tile = weight_tile(p, weight, v0, n);
  if (bias.has_value() && bias->defined()) {
    at::addmm_out(z, bias->narrow(0, v0, n).to(p.compute), p.h, w_tile.t());  // the bias row broadcasts
  } else {
    gemm(z, p.h, w_tile.t(), false);
  }
}

at::Tensor scatter_rows(const Problem& p, const at::Tensor& v, const at::TensorOptions& opts) {
  if (!p.idx.defined()) return v;
  at::Tensor out = at::zeros({p.N}, opts);
  return out.index_copy_(0, p.idx, v);
}

struct VocabTile {
  int64_t v0, n;
  bool kept;  // in [split, V): its logits live in the cache
};

// Vocabulary tiles [v0, v0 + n): [0, split) in tiles of at most tv columns, then the kept columns
// [split, V) in tiles of the same width (each stored whole in the cache, see kept_block).
struct Tiling {
  int64_t tv;  // the widest tile: what a TileBuffer for them holds
  std::vector<VocabTile> tiles;
};

Tiling vocab_tiles(const Problem& p, int64_t split, bool cuda) {
  const int64_t elem = c10::elementSize(p.compute), tv = tile_cols(p.Nv, p.V, elem, cuda);
  Tiling t{tv, {}};
  for (int64_t v0 = 0; v0 < split; v0 += tv) t.tiles.push_back({v0, std::min(tv, split - v0), false});
  for (int64_t v0 = split; v0 < p.V; v0 += tv) t.tiles.push_back({v0, std::min(tv, p.V - v0), true});
  return t;
}

// The cache [N, cache_cols] (V - split = cache_cols) holds kept tile [v0, v0 + n) as one contiguous
// [N, n] block at element offset N * (v0 - split); its first Nv rows are the valid rows' logits.
at::Tensor kept_block(const at::Tensor& cache, int64_t split, const VocabTile& t) {
  const int64_t N = cache.size(0);
  return cache.view(-1).narrow(0, N * (t.v0 - split), N * t.n).view({N, t.n});
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
  const auto copts = hidden.options().dtype(p.compute);
  // [N, cache_cols] logits of columns [split, V), kept for backward (which then skips their recompute GEMM)
  at::Tensor cache = at::empty({p.N, cache_cols}, copts);
  const int64_t split = p.V - cache_cols;
  const auto opts = hidden.options().dtype(p.acc);
  // per valid row [Nv] (acc dtype): running max, Σexp, Σexp·z, the label's logit, and the results
  at::Tensor m = at::empty({p.Nv}, opts), s = at::empty({p.Nv}, opts), t = at::empty({p.Nv}, opts),
             zy = at::empty({p.Nv}, opts), logp = at::empty({p.Nv}, opts),
             lse = at::empty({p.Nv}, opts), ent = at::zeros({p.Nv}, opts);
  if (p.Nv == 0) cache.zero_();
  if (p.Nv > 0) {
    const Tiling tiling = vocab_tiles(p, split, hidden.is_cuda());
    std::optional<TileBuffer> buf;
    if (split > 0) buf.emplace(p.Nv, tiling.tv, copts);
    at::Tensor w_tile;
    for (const VocabTile& tile : tiling.tiles) {
      at::Tensor z;  // [Nv, n] logits of the tile
      if (tile.kept) {
        buf.reset();  // the tiles that backward recomputes are done: free their buffer before the cache fills
        const at::Tensor block = kept_block(cache, split, tile);  // [N, n]
        block.narrow(0, p.Nv, p.N - p.Nv).zero_();               // rows of ignored labels: unused
        z = block.narrow(0, 0, p.Nv);
      } else {
        z = buf->view(p.Nv, tile.n);
      }
      logits_into(z, p, weight, bias, tile.v0, tile.n, w_tile);
      const LseTileArgs a{z, RowLayout{z.stride(0), nullptr}, p.y, tile.v0, ignore_index, 1.0 / temperature,
                          with_entropy, tile.v0 == 0, tile.v0 + tile.n >= p.V, m, s, t, zy, logp, lse, ent};
      AK_DEVICE_CALL(z, lse_tile, a);
    }
  }
  return {scatter_rows(p, logp, opts), scatter_rows(p, lse, opts), scatter_rows(p, ent, opts), cache};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_bwd(
    const at::Tensor& grad_logp, const std::optional<at::Tensor>& grad_entropy,
    const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& labels, const at::Tensor& lse, const at::Tensor& entropy, const at::Tensor& cache,
    int64_t ignore_index, double temperature, bool needs_hidden, bool needs_weight, bool needs_bias) {
  check_inputs(hidden, weight, bias, labels, temperature);
  AK_CHECK_SHAPE("grad_logp", grad_logp, labels.sizes());
  AK_CHECK_SAME_DEVICE("cache", cache, hidden);
  TORCH_CHECK(cache.dim() == 2 && cache.size(0) == hidden.size(0) && cache.size(1) <= weight.size(0) &&
                  cache.is_contiguous(),
              "alignkit: `cache` must be the contiguous [N, cache_cols <= V] tensor the forward returned, "
              "got shape ", cache.sizes());
  const bool has_bias = bias.has_value() && bias->defined();
  const Problem p = make_problem(hidden, weight, labels, ignore_index);
  const auto acc_opts = hidden.options().dtype(p.acc), copts = hidden.options().dtype(p.compute);
  auto rows = [&](const at::Tensor& v) {  // [N] -> [Nv] acc dtype
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
  // gh [Nv, H] accumulates in the acc dtype; gw [V, H] is written tile by tile, so it can live in the
  // compute dtype. Every vocabulary tile overwrites its rows of gw whole: it needs zeros only when no
  // tile runs (every row ignored).
  at::Tensor gh = needs_hidden ? at::zeros({p.Nv, H}, acc_opts) : at::Tensor();
  at::Tensor gw = needs_weight ? at::empty({p.V, H}, copts) : at::Tensor();
  if (needs_weight && p.Nv == 0) gw.zero_();
  at::Tensor gb = needs_bias && has_bias ? at::zeros({p.V}, acc_opts) : at::Tensor();
  if (p.Nv > 0 && (needs_hidden || needs_weight || gb.defined())) {
    const bool kept_logits = cache.size(1) > 0;
    TORCH_CHECK(!kept_logits || cache.scalar_type() == p.compute, "alignkit: `cache` must have dtype ",
                p.compute, ", got ", cache.scalar_type());
    const int64_t split = p.V - cache.size(1);
    const Tiling tiling = vocab_tiles(p, split, hidden.is_cuda());
    TileBuffer buf(p.Nv, tiling.tv, copts);
    at::Tensor w_tile;
    for (const VocabTile& tile : tiling.tiles) {
      at::Tensor x, z = buf.view(p.Nv, tile.n);  // the tile's logits [Nv, n], and its gradient [Nv, n]
      if (tile.kept) {
        x = kept_block(cache, split, tile).narrow(0, 0, p.Nv);
        w_tile = weight_tile(p, weight, tile.v0, tile.n);
      } else {
        logits_into(z, p, weight, bias, tile.v0, tile.n, w_tile);
        x = z;  // grad_tile turns the logits into their gradient in place
      }
      const GradTileArgs a{x, RowLayout{x.stride(0), nullptr}, p.y, tile.v0, ignore_index, 1.0 / temperature,
                           l, h_ent, g, ge.defined() ? &ge : nullptr, z};
      AK_DEVICE_CALL(z, grad_tile, a);  // z now holds d loss / d logits of the tile
      if (needs_weight) {
        at::Tensor gw_tile = gw.narrow(0, tile.v0, tile.n);  // [n, H] = z^T @ h
        gemm(gw_tile, z.t(), p.h, false);
      }
      if (needs_hidden) gemm(gh, z, w_tile, true);  // [Nv, H] += z @ W_tile
      if (gb.defined()) {
        at::Tensor gb_tile = gb.narrow(0, tile.v0, tile.n);
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
