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
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define SPLAT_HD __host__ __device__ __forceinline__
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

// Squared Mahalanobis distance of pixel centre (px, py), with the forward
// substitution's intermediates (u, v) that the gradient reuses.
SPLAT_HD float mahalanobis2(const Gaussian& G, float px, float py, float& u, float& v) {
  const float dx = px - G.mx;
  const float dy = py - G.my;
  u = dx * G.inv11;
  v = (dy - G.l21 * u) * G.inv22;
  return u * u + v * v;
}

SPLAT_HD float gaussian_weight(float s2) { return expf(-0.5f * s2); }

// Gradient of one pixel-Gaussian pair, given dL/dI at that pixel (gr, gg, gb),
// the weight w and the substitution's (u, v). Adds into out[kGradDim] =
// (x, y, l11, l21, l22, r, g, b). With ds = dL/ds2 = -0.5 w (g . c):
//   dL/dv = 2 ds v,  dL/du = 2 ds u - dL/dv * l21 / l22   (u also moves v)
//   mu:  dL/dmx = -dL/du / l11,      dL/dmy = -dL/dv / l22
//   L:   dL/dl11 = -dL/du * u / l11, dL/dl21 = -dL/dv * u / l22, dL/dl22 = -dL/dv * v / l22
SPLAT_HD void accumulate_pair_grad(const Gaussian& G, float gr, float gg, float gb, float w, float u,
                                   float v, float* out) {
  const float ds = -0.5f * w * (gr * G.r + gg * G.g + gb * G.b);
  const float dv = 2.0f * ds * v;
  const float du = 2.0f * ds * u - dv * G.l21 * G.inv22;
  out[0] -= du * G.inv11;
  out[1] -= dv * G.inv22;
  out[2] -= du * u * G.inv11;
  out[3] -= dv * u * G.inv22;
  out[4] -= dv * v * G.inv22;
  out[5] += gr * w;
  out[6] += gg * w;
  out[7] += gb * w;
}

}  // namespace splat2d
