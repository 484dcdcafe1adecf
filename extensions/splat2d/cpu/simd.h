// Lanes for the CPU kernels: Vec<W> is W floats, a GCC/Clang vector for W > 1 and
// plain float for W = 1, so one kernel source serves every dispatch path. The
// compiler maps a vector to the registers of the function's target: 16 floats to
// one zmm register under target("avx512f"), 8 to a ymm under target("avx2"), 4 to
// an SSE register on baseline x86-64 or a NEON register on aarch64.
//
// No intrinsics and no reassociation: lane k of every operation is the float
// operation that the scalar path performs for that pixel.
#pragma once

// Vector arguments of always-inlined helpers never cross an ABI boundary. (Before
// splat2d.h: the warning points at its templates.)
#pragma GCC diagnostic ignored "-Wpsabi"

#include <utility>

#include "../splat2d.h"

#define SPLAT_INLINE inline __attribute__((always_inline))

namespace splat2d {

template <int W>
struct VecOf {
  typedef float F __attribute__((vector_size(4 * W)));
  typedef uint32_t U __attribute__((vector_size(4 * W)));
  typedef int32_t I __attribute__((vector_size(4 * W)));  // shuffle indices
};
template <>
struct VecOf<1> {
  using F = float;
  using U = uint32_t;
};
template <int W>
using Vec = typename VecOf<W>::F;

template <>
struct Lanes<Vec<16>> {
  using U = typename VecOf<16>::U;
};
template <>
struct Lanes<Vec<8>> {
  using U = typename VecOf<8>::U;
};
template <>
struct Lanes<Vec<4>> {
  using U = typename VecOf<4>::U;
};

template <int W>
SPLAT_INLINE Vec<W> load(const float* p) {
  Vec<W> v;
  memcpy(&v, p, sizeof v);
  return v;
}

template <int W>
SPLAT_INLINE void store(float* p, Vec<W> v) {
  memcpy(p, &v, sizeof v);
}

template <int W>
SPLAT_INLINE Vec<W> broadcast(float x) {
  Vec<W> v = {};
  return v + x;
}

// Two vectors as one of twice the width (lo in the low lanes), and a vector's low or
// high half. With __builtin_shufflevector (Clang, GCC 12+) these stay in registers
// (vinsertf32x8, vextractf32x8); a copy through memory, the fallback, stalls on
// store forwarding, which once cost a fifth of the backward's time.
#if defined(__clang__) || __GNUC__ >= 12
#define SPLAT_SHUFFLEVECTOR 1
template <int S, size_t... I>
SPLAT_INLINE Vec<2 * S> concat_lanes(Vec<S> lo, Vec<S> hi, std::index_sequence<I...>) {
  return __builtin_shufflevector(lo, hi, I...);
}
template <int S, size_t From, size_t... I>
SPLAT_INLINE Vec<S> half_lanes(Vec<2 * S> x, std::index_sequence<I...>) {
  return __builtin_shufflevector(x, x, (From + I)...);
}
#endif

template <int S>
SPLAT_INLINE Vec<2 * S> concat(Vec<S> lo, Vec<S> hi) {
  if constexpr (S == 1) {
    return Vec<2>{lo, hi};
  } else {
#ifdef SPLAT_SHUFFLEVECTOR
    return concat_lanes<S>(lo, hi, std::make_index_sequence<2 * S>{});
#else
    Vec<2 * S> x;
    memcpy(&x, &lo, sizeof lo);
    memcpy(reinterpret_cast<char*>(&x) + sizeof lo, &hi, sizeof hi);
    return x;
#endif
  }
}

// Lanes [Off, Off + S) of x, a vector of 2S lanes; Off is 0 or S.
template <int S, int Off>
SPLAT_INLINE Vec<S> half(Vec<2 * S> x) {
  if constexpr (S == 1) {
    return x[Off];  // Vec<1> is a float
  } else {
#ifdef SPLAT_SHUFFLEVECTOR
    return half_lanes<S, Off>(x, std::make_index_sequence<S>{});
#else
    Vec<S> h;
    memcpy(&h, reinterpret_cast<const float*>(&x) + Off, sizeof h);
    return h;
#endif
  }
}

// x where a <= b, else +0: a pair beyond the cut-off contributes nothing, not even a NaN.
template <class F>
SPLAT_INLINE F where_le(F a, float b, F x) {
  return a <= b ? x : F{};
}

// Two rows side by side as two vectors. Every operation on a Pair is issued for
// both rows at once, so two independent exp chains interleave in the instruction
// stream: a row is a chain of ~90 cycles of latency, and a core's out-of-order
// window holds only about two rows' operations.
template <class F>
struct Pair {
  F a, b;
};

#define SPLAT_PAIR_OP(OP)                                 \
  template <class F>                                      \
  SPLAT_INLINE Pair<F> operator OP(Pair<F> x, Pair<F> y) { \
    return {x.a OP y.a, x.b OP y.b};                      \
  }                                                       \
  template <class F, class S>                             \
  SPLAT_INLINE Pair<F> operator OP(Pair<F> x, S y) {      \
    return {x.a OP y, x.b OP y};                          \
  }                                                       \
  template <class F, class S>                             \
  SPLAT_INLINE Pair<F> operator OP(S x, Pair<F> y) {      \
    return {x OP y.a, x OP y.b};                          \
  }
SPLAT_PAIR_OP(+)
SPLAT_PAIR_OP(-)
SPLAT_PAIR_OP(*)
SPLAT_PAIR_OP(<<)
#undef SPLAT_PAIR_OP

template <class F>
struct Lanes<Pair<F>> {
  using U = Pair<typename Lanes<F>::U>;
};

template <class F>
SPLAT_INLINE Pair<F> where_le(Pair<F> a, float b, Pair<F> x) {
  return {where_le(a.a, b, x.a), where_le(a.b, b, x.b)};
}

// Pixel centres of lanes [first, first + W): first + k + 0.5.
template <int W>
SPLAT_INLINE Vec<W> centres(int first) {
  if constexpr (W == 1) {
    return float(first) + 0.5f;
  } else {
    Vec<W> v;
    for (int k = 0; k < W; ++k) v[k] = float(first + k) + 0.5f;
    return v;
  }
}

// The sum of the kTile logical lanes held in C = kTile / W chunks of W lanes
// (lane l = chunk l / W, element l % W), by one fixed tree whatever W is: lane i
// meets lane i + 8, then i + 4, i + 2 and i + 1. Every path therefore rounds the
// same sums in the same order.
template <int W, int C>
SPLAT_INLINE float tree_sum(const Vec<W>* chunks) {
  if constexpr (C > 1) {
    Vec<W> half[C / 2];
    for (int c = 0; c < C / 2; ++c) half[c] = chunks[c] + chunks[c + C / 2];
    return tree_sum<W, C / 2>(half);
  } else if constexpr (W > 1) {
    const Vec<W / 2> s = half<W / 2, 0>(chunks[0]) + half<W / 2, W / 2>(chunks[0]);
    return tree_sum<W / 2, 1>(&s);
  } else {
    return chunks[0];
  }
}

// shuffle(a, b, i...): lane k of the result is lane i_k of the lanes of a followed by those of b.
#ifdef SPLAT_SHUFFLEVECTOR
#define SPLAT_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SPLAT_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, typename VecOf<16>::I{__VA_ARGS__})
#endif

// tree_sum of eight sums at once: out[q] = tree_sum<W, C>(chunks[q]), the same bits.
// With one 16-lane chunk per sum (avx512) the eight trees run side by side, packed:
// each level adds the lanes that tree_sum adds, for two, four and then eight sums
// in one vector, which takes 16 shuffles and 8 adds where eight trees take 64
// operations, a large share of the backward of a small Gaussian.
template <int W, int C>
SPLAT_INLINE void tree_sums8(const Vec<W> (&chunks)[8][C], float* out) {
  if constexpr (W == 16 && C == 1) {
    using V = Vec<16>;
    V y[4], z[2];  // y[k]: sums 2k, 2k + 1 at 8 lanes each; z[j]: sums 4j .. 4j + 3 at 4 lanes each
    for (int k = 0; k < 4; ++k)
      y[k] = SPLAT_SHUFFLE(chunks[2 * k][0], chunks[2 * k + 1][0], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                           22, 23) +
             SPLAT_SHUFFLE(chunks[2 * k][0], chunks[2 * k + 1][0], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                           29, 30, 31);
    for (int j = 0; j < 2; ++j)
      z[j] = SPLAT_SHUFFLE(y[2 * j], y[2 * j + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
             SPLAT_SHUFFLE(y[2 * j], y[2 * j + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const V pairs = SPLAT_SHUFFLE(z[0], z[1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
                    SPLAT_SHUFFLE(z[0], z[1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    const V sums = SPLAT_SHUFFLE(pairs, pairs, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14) +
                   SPLAT_SHUFFLE(pairs, pairs, 1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15);
    memcpy(out, &sums, 8 * sizeof(float));
  } else {
    for (int q = 0; q < 8; ++q) out[q] = tree_sum<W, C>(chunks[q]);
  }
}

}  // namespace splat2d
