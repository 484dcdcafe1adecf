// The per-pixel / per-Gaussian maths of the 2D splat sum render (paper Eq. 1),
// written once and shared by the CPU and CUDA backends.
//
//   I(p) = sum_i c_i * exp(-0.5 * s2_i(p)),   s2_i(p) = d^T Sigma_i^-1 d,  d = p - mu_i
//
// Sigma = L L^T with L = [[l11, 0], [l21, l22]], so s2 = |L^-1 d|^2 and L^-1 d is
// one forward substitution:  u = dx / l11,  v = (dy - l21 * u) / l22.
// Pixel (i, j) has its centre at (j + 0.5, i + 0.5).
//
// The dense PyTorch reference (gs_lightning/render.py) spells out the same
// substitution in the same float32 operations, so both decide the cut-off
// s2 <= cutoff identically; CUDA is compiled with --fmad=false for the same reason.
//
// The per-pair functions are templates over the value type F: float here and
// in the CUDA kernels, a vector of 16, 8 or 4 floats in the CPU backend's SIMD
// paths (cpu/simd.h), which evaluate them lane by lane in the same operations.
// With no FMA contraction anywhere (-ffp-contract=off, --fmad=false), every
// path then computes every pair to the same bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SPLAT_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined: the CPU backend builds one copy of its kernels per SIMD target
// (cpu/simd.h), and an out-of-line call would run at the baseline target.
#define SPLAT_HD inline __attribute__((always_inline))
#else
#define SPLAT_HD inline
#endif

namespace splat2d {

// Tile edge in pixels: the CPU backend's unit of work, the CUDA backend's block.
constexpr int kTile = 16;
// Number of gradient values per Gaussian: (x, y, l11, l21, l22, r, g, b).
constexpr int kGradDim = 8;

// One Gaussian, with the reciprocals the inner loop needs.
struct Gaussian {
  float mx, my;      // centre, pixels
  float inv11, l21;  // 1 / l11 and l21
  float inv22;       // 1 / l22
  float r, g, b;     // colour
};

SPLAT_HD Gaussian make_gaussian(const float* xy, const float* chol, const float* rgb) {
  Gaussian G;
  G.mx = xy[0];
  G.my = xy[1];
  G.inv11 = 1.0f / chol[0];
  G.l21 = chol[1];
  G.inv22 = 1.0f / chol[2];
  G.r = rgb[0];
  G.g = rgb[1];
  G.b = rgb[2];
  return G;
}

// Inclusive pixel box [x0, x1] x [y0, y1] that holds every pixel centre with
// s2 <= cutoff, clipped to the image; empty (x0 > x1 or y0 > y1) when the
// ellipse misses the image. The ellipse's tight half-extents are
// sqrt(cutoff * Sigma_xx) and sqrt(cutoff * Sigma_yy); they are widened a hair
// so rounding never drops a pixel: the s2 test alone decides membership.
struct PixelBox {
  int x0, x1, y0, y1;
  SPLAT_HD bool empty() const { return x0 > x1 || y0 > y1; }
};

SPLAT_HD PixelBox pixel_box(const float* xy, const float* chol, float cutoff, int height, int width) {
  const float l11 = chol[0], l21 = chol[1], l22 = chol[2];
  const float rx = sqrtf(cutoff * l11 * l11) * 1.0001f + 1e-3f;
  const float ry = sqrtf(cutoff * (l21 * l21 + l22 * l22)) * 1.0001f + 1e-3f;
  // Pixel j is covered when |j + 0.5 - mx| <= rx. Clamp in float before the int
  // conversion so huge Gaussians cannot overflow.
  const float fx0 = fmaxf(ceilf(xy[0] - rx - 0.5f), 0.0f);
  const float fx1 = fminf(floorf(xy[0] + rx - 0.5f), float(width - 1));
  const float fy0 = fmaxf(ceilf(xy[1] - ry - 0.5f), 0.0f);
  const float fy1 = fminf(floorf(xy[1] + ry - 0.5f), float(height - 1));
  PixelBox box;
  box.x0 = fx0 > float(width) ? width : int(fx0);
  box.x1 = fx1 < -1.0f ? -1 : int(fx1);
  box.y0 = fy0 > float(height) ? height : int(fy0);
  box.y1 = fy1 < -1.0f ? -1 : int(fy1);
  return box;
}

// The tiles a non-empty pixel box touches, in tile units: [x0, x1] x [y0, y1].
SPLAT_HD PixelBox tile_span(const PixelBox& box) {
  return PixelBox{box.x0 / kTile, box.x1 / kTile, box.y0 / kTile, box.y1 / kTile};
}

// The substitution's u = dx / l11 at pixel centre column px: it depends on the column only.
template <class F>
SPLAT_HD F substitution_u(const Gaussian& G, F px) {
  return (px - G.mx) * G.inv11;
}

// Squared Mahalanobis distance of pixel centre (px, py), with the forward
// substitution's intermediates (u, v) that the gradient reuses. F is float, or
// pixels of a row (py a float) or of several rows (py an F).
template <class F, class P>
SPLAT_HD F mahalanobis2(const Gaussian& G, F px, P py, F& u, F& v) {
  const P dy = py - G.my;
  u = substitution_u(G, px);
  v = (dy - G.l21 * u) * G.inv22;
  return u * u + v * v;
}

// What the weight needs of a value type beyond arithmetic: U, the unsigned 32-bit
// integer of the same shape (for the exponent bits). cpu/simd.h adds the vectors.
template <class F>
struct Lanes;

template <>
struct Lanes<float> {
  using U = uint32_t;
};

// The largest s2 whose weight exp(-s2 / 2) the polynomial below takes: e^-87 is
// still a normal float (2^-126 = 1.2e-38 is the least).
constexpr float kMaxWeightS2 = 174.0f;

// Coefficients of q in e^r = 1 + r + r^2 q(r), a degree-4 minimax fit of relative
// error on |r| <= ln(2) / 2 (plus a little for the rounding of n).
constexpr float kExpQ0 = 0.5f, kExpQ1 = 0.16666662693023682f, kExpQ2 = 0.04167300835251808f,
                kExpQ3 = 0.008357517421245575f, kExpQ4 = 0.0013396682916209102f;

// exp(-s2 / 2), the weight of a pair, for s2 in [0, kMaxWeightS2]: one branch-free
// polynomial, the same operations on every path (CPU scalar, each SIMD path, CUDA),
// so the paths agree to the bit; libm's expf differs by platform and cannot vectorize.
//   x = -s2 / 2 = n ln2 + r:  n = round(x log2 e) by adding 1.5 * 2^23, which leaves
//   n in the low mantissa bits of t; r = x - n ln2 with ln2 in two parts, the first
//   short enough that n * kLn2Hi is exact (Cody-Waite); q by Estrin's scheme (a
//   shorter chain of dependent operations than Horner's, for the CPU's out-of-order
//   window); 2^n goes straight into the exponent bits of a float that scales e^r.
// Error: at most 1.08 ulp from float64 exp
// (tests/test_render.py::test_gaussian_weight_is_within_1_08_ulp_of_exp). Past
// kMaxWeightS2 the result is wrong (0, then -inf): gaussian_weight clamps, and the
// CPU kernels never weigh a pair past min(cutoff, kMaxWeightS2), which saves the
// clamp on every pair.
template <class F>
SPLAT_HD F gaussian_weight_in_range(F s2) {
  constexpr float kHalfLog2e = -0.72134752044448170f;  // -log2(e) / 2, exact: x log2 e = s2 kHalfLog2e
  constexpr float kShifter = 12582912.0f;                // 1.5 * 2^23
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  const F x = -0.5f * s2;
  const F t = s2 * kHalfLog2e + kShifter;
  const F n = t - kShifter;
  const F r = (x - n * kLn2Hi) - n * kLn2Lo;
  const F r2 = r * r;
  const F q = (kExpQ0 + kExpQ1 * r) + r2 * ((kExpQ2 + kExpQ3 * r) + r2 * kExpQ4);
  const F er = 1.0f + (r + r2 * q);
  // t's bits are those of 1.5 * 2^23 plus n; shifted left by 23 only n survives,
  // in the exponent field, and adding the bits of 1.0f makes the float 2^n.
  typename Lanes<F>::U bits;
  memcpy(&bits, &t, sizeof bits);
  bits = (bits << 23) + 0x3F800000u;
  F scale;
  memcpy(&scale, &bits, sizeof scale);
  return er * scale;
}

// exp(-s2 / 2) for any s2 >= 0; past kMaxWeightS2 it is e^-87 ~ 1.6e-38 instead of
// a subnormal, far below any tolerance.
SPLAT_HD float gaussian_weight(float s2) { return gaussian_weight_in_range(s2 < kMaxWeightS2 ? s2 : kMaxWeightS2); }

// The backward, in moments. A pixel-Gaussian pair with weight w, substitution (u, v)
// and dL/dI = (gr, gg, gb) at its pixel has, with e = -2 dL/ds2 = w (g . c):
//   -dL/dv = e v,   -dL/du = e u - (-dL/dv) l21 / l22   (u also moves v)
//   mu:  dL/dmx = -dL/du / l11,      dL/dmy = -dL/dv / l22
//   L:   dL/dl11 = dL/dmx * u,       dL/dl21 = dL/dmy * u,     dL/dl22 = dL/dmy * v
//   c:   dL/dc = g w
// Summed over the pairs of a Gaussian, every term is its constants times a sum of
// the pairs' moments M = (eu, ev, euu, euv, evv, gr w, gg w, gb w):
//   x: (M_eu - s M_ev) / l11,   l11: (M_euu - s M_euv) / l11,   s = l21 / l22
//   y: M_ev / l22,              l21: M_euv / l22,               l22: M_evv / l22
// so kernels sum moments and apply the constants once per sum (moments_grad), not
// once per pair. And u depends on a pixel's column only: down a column, a kernel
// sums the five row moments (ev, evv, gr w, gg w, gb w) of each pair (row_moments)
// and takes the u-weighted ones from those sums once (column_moments), using
// sum e = r sum gr w + g sum gg w + b sum gb w.
constexpr int kRowMoments = 5;

template <class F>
SPLAT_HD void row_moments(const Gaussian& G, F gr, F gg, F gb, F w, F v, F* m) {
  const F ev = w * ((gr * G.r + gg * G.g) + gb * G.b) * v;
  m[0] = ev;
  m[1] = ev * v;
  m[2] = gr * w;
  m[3] = gg * w;
  m[4] = gb * w;
}

// The kGradDim moments M of pairs in one column (u) from the sums m of their row moments.
template <class F>
SPLAT_HD void column_moments(const Gaussian& G, F u, const F* m, F* M) {
  const F eu = ((G.r * m[2] + G.g * m[3]) + G.b * m[4]) * u;
  M[0] = eu;
  M[1] = m[0];
  M[2] = eu * u;
  M[3] = m[0] * u;
  M[4] = m[1];
  M[5] = m[2];
  M[6] = m[3];
  M[7] = m[4];
}

// The gradient terms (x, y, l11, l21, l22, r, g, b) of a Gaussian from its pairs' summed moments M.
SPLAT_HD void moments_grad(const Gaussian& G, const float* M, float* d) {
  const float shear = G.l21 * G.inv22;
  d[0] = (M[0] - shear * M[1]) * G.inv11;
  d[1] = M[1] * G.inv22;
  d[2] = (M[2] - shear * M[3]) * G.inv11;
  d[3] = M[3] * G.inv22;
  d[4] = M[4] * G.inv22;
  d[5] = M[5];
  d[6] = M[6];
  d[7] = M[7];
}

}  // namespace splat2d
