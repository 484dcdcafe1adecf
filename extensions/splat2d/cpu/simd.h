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

#include "../splat2d.h"

#define SPLAT_INLINE inline __attribute__((always_inline))

namespace splat2d {

template <int W>
struct VecOf {
  typedef float F __attribute__((vector_size(4 * W)));
  typedef uint32_t U __attribute__((vector_size(4 * W)));
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
    Vec<W / 2> lo, hi;
    memcpy(&lo, chunks, sizeof lo);
    memcpy(&hi, reinterpret_cast<const char*>(chunks) + sizeof lo, sizeof hi);
    const Vec<W / 2> s = lo + hi;
    return tree_sum<W / 2, 1>(&s);
  } else {
    return chunks[0];
  }
}

}  // namespace splat2d
