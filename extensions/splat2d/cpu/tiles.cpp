// Binning and the tile kernels, written once over Vec<W> (simd.h) and compiled
// once per SIMD path under that path's target attribute:
//
//   avx512    W = 16, target("avx512f,avx512vl,avx512bw,avx512dq")   x86-64
//   avx2      W = 8,  target("avx2")                                 x86-64
//   portable  W = 4,  the build's baseline (SSE2 on x86-64, NEON on aarch64)
//   scalar    W = 1,  plain floats: the baseline the benchmark compares against
//
// A row of a tile is kTile = 16 pixels, in 16 / W chunks of W lanes. A kernel
// visits the chunks of a tile row that the Gaussian's box touches, and there
// computes every lane without a branch: a lane beyond the cut-off is masked with
// a select, never skipped, so the cut-off test alone decides which pairs count.
//
// Every path gives the same bits: the per-pair maths is splat2d.h's, lane by
// lane in the same float operations; a pixel sums its Gaussians in index order;
// and the backward keeps one partial sum per moment (splat2d.h) and logical lane
// (lane j sums column j over the box's rows, even and odd rows apart) and adds the
// 16 lanes by one fixed tree (tree_sum). A chunk the box does not touch, or a lane past
// the cut-off, adds exactly +-0 to every sum, which leaves it as it is.
#include "simd.h"  // first: its pragma covers splat2d.h
#include "tiles.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace splat2d {

namespace {

bool valid_splat(const float* xy, const float* chol, const float* rgb) {
  bool finite = true;
  for (int d = 0; d < 2; ++d) finite &= std::isfinite(xy[d]);
  for (int d = 0; d < 3; ++d) finite &= std::isfinite(chol[d]) && std::isfinite(rgb[d]);
  return finite && chol[0] > 0.0f && chol[2] > 0.0f;
}

}  // namespace

int bin_image(const float* xy, const float* chol, const float* rgb, const bool* mask, int n, const Grid& grid,
              float cutoff, TileBins& bins, Gaussian* gaussians) {
  const int tiles = grid.tiles();
  bins.boxes.resize(n);
  bins.offsets.assign(tiles + 1, 0);
  for (int g = 0; g < n; ++g) {
    PixelBox box{0, -1, 0, -1};
    if (mask[g]) {
      if (!valid_splat(xy + 2 * g, chol + 3 * g, rgb + 3 * g)) return g;
      box = pixel_box(xy + 2 * g, chol + 3 * g, cutoff, grid.height, grid.width);
    }
    bins.boxes[g] = box;
    if (box.empty()) continue;
    gaussians[g] = make_gaussian(xy + 2 * g, chol + 3 * g, rgb + 3 * g);
    const PixelBox span = tile_span(box);
    for (int ty = span.y0; ty <= span.y1; ++ty)
      for (int tx = span.x0; tx <= span.x1; ++tx) ++bins.offsets[ty * grid.tiles_x + tx + 1];
  }
  for (int t = 0; t < tiles; ++t) bins.offsets[t + 1] += bins.offsets[t];
  bins.ids.resize(bins.offsets[tiles]);
  std::vector<int> cursor(bins.offsets.begin(), bins.offsets.end() - 1);
  for (int g = 0; g < n; ++g) {
    const PixelBox& box = bins.boxes[g];
    if (box.empty()) continue;
    const PixelBox span = tile_span(box);
    for (int ty = span.y0; ty <= span.y1; ++ty)
      for (int tx = span.x0; tx <= span.x1; ++tx) bins.ids[cursor[ty * grid.tiles_x + tx]++] = g;
  }
  return -1;
}

namespace {

// Entry k of a tile's list: its Gaussian, and its box clipped to the tile.
struct Entry {
  Gaussian G;
  PixelBox box;
};

SPLAT_INLINE Entry entry(const TileJob& job, int64_t b, int k, const PixelBox& tile) {
  const TileBins& bin = job.bins[b];
  const int id = bin.ids[k];
  const PixelBox& box = bin.boxes[id];
  return Entry{job.gaussians[b * job.n + id], PixelBox{std::max(box.x0, tile.x0), std::min(box.x1, tile.x1),
                                                       std::max(box.y0, tile.y0), std::min(box.y1, tile.y1)}};
}

SPLAT_INLINE PixelBox tile_box(int t, const Grid& grid) {
  const int tx = t % grid.tiles_x, ty = t / grid.tiles_x;
  return PixelBox{tx * kTile, std::min((tx + 1) * kTile, grid.width) - 1, ty * kTile,
                  std::min((ty + 1) * kTile, grid.height) - 1};
}

// Calls span.run<S, Off>(c) for each run of S lanes of a tile row that the box's
// columns touch: lanes [c W + Off, c W + Off + S) of the tile, for the W-lane
// chunks c, or with Halve just the half (Off = 0 or W / 2) of a chunk that the box
// stays inside (on AMD Zen 4 a 16-lane operation costs two 8-lane ones).
template <int W, bool Halve, class Span>
SPLAT_INLINE void for_each_span(const PixelBox& box, const PixelBox& tile, Span& span) {
  const int x0 = box.x0 - tile.x0, x1 = box.x1 - tile.x0;
  for (int c = x0 / W; c <= x1 / W; ++c) {
    if constexpr (Halve) {
      constexpr int H = W / 2;
      if (x1 < c * W + H) {
        span.template run<H, 0>(c);
        continue;
      }
      if (x0 >= c * W + H) {
        span.template run<H, H>(c);
        continue;
      }
    }
    span.template run<W, 0>(c);
  }
}

// How a span of S lanes evaluates its rows: in pairs (i, i + 1) from the box's
// first row, then a last single row. A pair is one value F of a row type below:
// OneRow (the last row), TwoRows (two vectors), or Packed (one vector of 2S lanes,
// row i in the low half and row i + 1 in the high half: half the operations of two
// half-width rows, where the path's vectors are 2S wide). Each has the pixel
// centres px and py of its rows, loads from and adds to a tile plane at p (its
// first row), and sums its rows into per-lane sums of even and odd rows.
template <int S>
struct OneRow {
  using F = Vec<S>;
  static SPLAT_INLINE F px(Vec<S> x) { return x; }
  static SPLAT_INLINE float py(int i) { return float(i) + 0.5f; }
  static SPLAT_INLINE F load_rows(const float* p) { return load<S>(p); }
  static SPLAT_INLINE void add_rows(float* p, F x) { store<S>(p, load<S>(p) + x); }
  static SPLAT_INLINE void even_odd(F sum, Vec<S>& even, Vec<S>& odd) { even = sum; odd = Vec<S>{}; }
};

template <int S>
struct TwoRows {
  using F = Pair<Vec<S>>;
  static SPLAT_INLINE F px(Vec<S> x) { return {x, x}; }
  static SPLAT_INLINE F py(int i) { return {broadcast<S>(float(i) + 0.5f), broadcast<S>(float(i + 1) + 0.5f)}; }
  static SPLAT_INLINE F load_rows(const float* p) { return {load<S>(p), load<S>(p + kTile)}; }
  static SPLAT_INLINE void add_rows(float* p, F x) {
    OneRow<S>::add_rows(p, x.a);
    OneRow<S>::add_rows(p + kTile, x.b);
  }
  static SPLAT_INLINE void even_odd(F sum, Vec<S>& even, Vec<S>& odd) {
    even = sum.a;
    odd = sum.b;
  }
};

template <int S>
struct Packed {
  using F = Vec<2 * S>;
  static SPLAT_INLINE F join(Vec<S> lo, Vec<S> hi) { return concat<S>(lo, hi); }
  static SPLAT_INLINE void even_odd(F x, Vec<S>& lo, Vec<S>& hi) {
    lo = half<S, 0>(x);
    hi = half<S, S>(x);
  }
  static SPLAT_INLINE F px(Vec<S> x) { return join(x, x); }
  static SPLAT_INLINE F py(int i) { return join(broadcast<S>(float(i) + 0.5f), broadcast<S>(float(i + 1) + 0.5f)); }
  static SPLAT_INLINE F load_rows(const float* p) { return join(load<S>(p), load<S>(p + kTile)); }
  static SPLAT_INLINE void add_rows(float* p, F x) {
    Vec<S> lo, hi;
    even_odd(x, lo, hi);
    OneRow<S>::add_rows(p, lo);
    OneRow<S>::add_rows(p + kTile, hi);
  }
};

// The row pairs of a span of S lanes on a path of W: packed where two fit in a vector.
template <int S, int W>
using RowPairs = std::conditional_t<2 * S <= W, Packed<S>, TwoRows<S>>;

// Calls span.rows<R>(i, first, px, extra...) over the rows of a box at tile lanes
// [first, first + S): R = RowPairs for rows i, i + 1, then OneRow for a last row.
template <int S, int W, class Span, class... Extra>
SPLAT_INLINE void for_each_row(Span& span, const PixelBox& box, const PixelBox& tile, int first, Extra&... extra) {
  using R = RowPairs<S, W>;
  const Vec<S> px = centres<S>(tile.x0 + first);
  const typename R::F pxr = R::px(px);
  int i = box.y0;
  for (; i < box.y1; i += 2) span.template rows<R>(i, first, pxr, extra...);
  if (i == box.y1) span.template rows<OneRow<S>>(i, first, px, extra...);
}

// Adds entry e's colour times its weight to acc [3][kTile][kTile] over its rows.
// With Keep it also writes each row evaluation's weights w and substitutions v to
// kept (tiles.h, keep_weights) for GradSpan to read back.
template <int W, bool Keep>
struct RenderSpan {
  const Entry& e;
  const PixelBox& tile;
  float cutoff;
  float* acc;
  float* kept;

  template <int S, int Off>
  SPLAT_INLINE void run(int c) {
    for_each_row<S, W>(*this, e.box, tile, c * W + Off);
  }

  template <class R>
  SPLAT_INLINE void rows(int i, int first, typename R::F px) {
    using F = typename R::F;
    const Gaussian& G = e.G;
    F u, v;
    const F s2 = mahalanobis2(G, px, R::py(i), u, v);
    const F w = where_le(s2, cutoff, gaussian_weight_in_range(s2));
    float* a = acc + (i - tile.y0) * kTile + first;
    R::add_rows(a, G.r * w);
    R::add_rows(a + kTilePlane, G.g * w);
    R::add_rows(a + 2 * kTilePlane, G.b * w);
    if constexpr (Keep) keep_weights(kept, w, v);
  }
};

// A chunk of W lanes holding x (S lanes) at lanes [Off, Off + S), 0 elsewhere.
template <int S, int Off, int W>
SPLAT_INLINE Vec<W> in_chunk_of(Vec<S> x) {
  if constexpr (S == W) {
    return x;
  } else {
    static_assert(2 * S == W, "a span is a chunk or half of one");
    return Off == 0 ? concat<S>(x, Vec<S>{}) : concat<S>(Vec<S>{}, x);
  }
}

// Sums entry e's moments (splat2d.h) into lanes[q][c]: one partial sum per moment q
// and lane (column of the tile). Down a span's columns it sums the row moments,
// even rows and odd rows (counted from the box's first) apart and then added; the
// column's u then turns them into the kGradDim moments. Lanes the box misses stay 0.
// With Keep it reads each row evaluation's w and v from kept, where RenderSpan wrote them
// (the same visiting order), instead of evaluating them again.
template <int W, bool Keep>
struct GradSpan {
  static constexpr int C = kTile / W;
  static_assert(kGradDim == 8, "tree_sums8 sums eight moments");
  const Entry& e;
  const PixelBox& tile;
  float cutoff;
  const float* dimg;
  const float* kept;
  Vec<W> lanes[kGradDim][C];

  // A span's sums per row moment: of its row pairs, and of its last row.
  template <int S>
  struct Sums {
    typename RowPairs<S, W>::F pairs[kRowMoments] = {};
    Vec<S> last[kRowMoments] = {};
    SPLAT_INLINE auto& of(OneRow<S>*) { return last; }
    SPLAT_INLINE auto& of(RowPairs<S, W>*) { return pairs; }
  };

  template <int S, int Off>
  SPLAT_INLINE void run(int c) {
    Sums<S> sums;
    const int first = c * W + Off;
    for_each_row<S, W>(*this, e.box, tile, first, sums);
    Vec<S> m[kRowMoments];
    for (int q = 0; q < kRowMoments; ++q) {
      Vec<S> even, odd;
      RowPairs<S, W>::even_odd(sums.pairs[q], even, odd);
      m[q] = (even + sums.last[q]) + odd;
    }
    const Vec<S> u = substitution_u(e.G, centres<S>(tile.x0 + first));
    Vec<S> M[kGradDim];
    column_moments(e.G, u, m, M);
    // Chunk c is visited once per entry: its other lanes are still 0. (C == 1 keeps
    // lanes in registers: a constant index.)
    for (int q = 0; q < kGradDim; ++q) {
      lanes[q][C == 1 ? 0 : c] = in_chunk_of<S, Off, W>(M[q]);
    }
  }

  template <class R, class Sums>
  SPLAT_INLINE void rows(int i, int first, typename R::F px, Sums& sums) {
    using F = typename R::F;
    const Gaussian& G = e.G;
    // Beyond the cut-off w = 0 makes every moment of the pair +-0 (v and the
    // reciprocals are finite unless l11 or l22 is below ~1e-36); a kept w is masked
    // the same way by the render.
    F w, v;
    if constexpr (Keep) {
      take_weights(kept, w, v);
    } else {
      F u;
      const F s2 = mahalanobis2(G, px, R::py(i), u, v);
      w = where_le(s2, cutoff, gaussian_weight_in_range(s2));
    }
    const float* g = dimg + (i - tile.y0) * kTile + first;
    F m[kRowMoments];
    row_moments(G, R::load_rows(g), R::load_rows(g + kTilePlane), R::load_rows(g + 2 * kTilePlane), w, v, m);
    F(&sum)[kRowMoments] = sums.of(static_cast<R*>(nullptr));
    for (int q = 0; q < kRowMoments; ++q) sum[q] = sum[q] + m[q];
  }
};

template <int W, bool Halve, bool Keep>
SPLAT_INLINE void render_tile(const TileJob& job, int64_t b, int t, float* acc, float* kept) {
  const TileBins& bin = job.bins[b];
  const PixelBox tile = tile_box(t, job.grid);
  std::fill(acc, acc + 3 * kTilePlane, 0.0f);
  for (int k = bin.offsets[t]; k < bin.offsets[t + 1]; ++k) {
    const Entry e = entry(job, b, k, tile);
    RenderSpan<W, Keep> span{e, tile, job.cutoff, acc, kept};
    for_each_span<W, Halve>(e.box, tile, span);
    kept = span.kept;
  }
}

template <int W, bool Halve, bool Keep>
SPLAT_INLINE void grad_tile(const TileJob& job, int64_t b, int t, const float* dimg, float* slots,
                            const float* kept) {
  const TileBins& bin = job.bins[b];
  const PixelBox tile = tile_box(t, job.grid);
  for (int k = bin.offsets[t]; k < bin.offsets[t + 1]; ++k) {
    const Entry e = entry(job, b, k, tile);
    GradSpan<W, Keep> span{e, tile, job.cutoff, dimg, kept, {}};
    for_each_span<W, Halve>(e.box, tile, span);
    kept = span.kept;
    float M[kGradDim];
    tree_sums8<W, GradSpan<W, Keep>::C>(span.lanes, M);
    moments_grad(e.G, M, slots + int64_t(k) * kGradDim);
  }
}

#if defined(__x86_64__) || defined(__i386__)
#define SPLAT_X86 1
#define SPLAT_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define SPLAT_TARGET_AVX2 __attribute__((target("avx2")))

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}
bool has_avx2() { return __builtin_cpu_supports("avx2"); }
#endif
bool always() { return true; }

// The kernels of one path: render_NAME and grad_NAME, compiled for TARGET with W
// lanes (and half chunks if HALVE).
#define SPLAT_PATH_KERNELS(NAME, TARGET, W, HALVE)                                                   \
  TARGET void render_##NAME(const TileJob& job, int64_t b, int t, float* acc, float* kept) {        \
    if (kept)                                                                                       \
      render_tile<W, HALVE, true>(job, b, t, acc, kept);                                            \
    else                                                                                            \
      render_tile<W, HALVE, false>(job, b, t, acc, nullptr);                                        \
  }                                                                                                 \
  TARGET void grad_##NAME(const TileJob& job, int64_t b, int t, const float* dimg, float* slots,   \
                          const float* kept) {                                                      \
    if (kept)                                                                                       \
      grad_tile<W, HALVE, true>(job, b, t, dimg, slots, kept);                                      \
    else                                                                                            \
      grad_tile<W, HALVE, false>(job, b, t, dimg, slots, nullptr);                                  \
  }

#ifdef SPLAT_X86
SPLAT_PATH_KERNELS(avx512, SPLAT_TARGET_AVX512, 16, true)
SPLAT_PATH_KERNELS(avx2, SPLAT_TARGET_AVX2, 8, false)
#endif
SPLAT_PATH_KERNELS(portable, , 4, false)
SPLAT_PATH_KERNELS(scalar, , 1, false)

}  // namespace

const std::vector<SimdPath>& simd_paths() {
  static const std::vector<SimdPath> paths = {
#ifdef SPLAT_X86
      {"avx512", has_avx512, render_avx512, grad_avx512},
      {"avx2", has_avx2, render_avx2, grad_avx2},
#endif
      {"portable", always, render_portable, grad_portable},
      {"scalar", always, render_scalar, grad_scalar},
  };
  return paths;
}

}  // namespace splat2d
