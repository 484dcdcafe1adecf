// CUDA forward and backward of the sum render: one 16x16 thread block per (tile, image), one thread
// per pixel; the image within a launch is the grid's z.
//
// A block walks its tile's list from the binning (binning.cuh) in chunks of 256: each thread stages one
// Gaussian of the chunk into shared memory, then every pixel thread evaluates the staged chunk in list
// order, which is ascending Gaussian index, the CPU backend's order. Every Gaussian of a crowded tile
// counts (GaussianImage's sum kernel stops after the first 256 of a tile).
//
// Backward: each thread computes its pair gradient for the staged Gaussian; the 8 values are summed
// across the warp with shuffles, and lane 0 alone issues the atomics, so there are (warps touched)
// atomics per Gaussian and tile instead of one per pixel.
//
// Torch-free (splat2d_cuda.cu launches it; tests/cuda_emu runs it on the CPU).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>

#include "binning.cuh"

namespace splat2d {

constexpr unsigned kFullMask = 0xffffffffu;
// Images per launch: grid z allows 65535; 4096 also bounds the binning's scratch (24 bytes per entry).
constexpr int64_t kImagesPerLaunch = 4096;

struct Grads {
  float* xy;    // [B, N, 2]
  float* chol;  // [B, N, 3]
  float* rgb;   // [B, N, 3]
};

struct TileGeometry {
  PixelBox tile;  // this block's pixels, clipped to the image
  int i, j;       // this thread's pixel
  bool inside;    // false for threads past the image edge (they still stage and reach every barrier)
  int64_t image;  // within the launch
  int64_t cell;   // (image, tile) index into the bins
};

__device__ __forceinline__ TileGeometry tile_geometry(const Frame& f) {
  TileGeometry t;
  t.tile.x0 = blockIdx.x * kTile;
  t.tile.y0 = blockIdx.y * kTile;
  t.tile.x1 = min(t.tile.x0 + kTile, f.width) - 1;
  t.tile.y1 = min(t.tile.y0 + kTile, f.height) - 1;
  t.j = t.tile.x0 + threadIdx.x;
  t.i = t.tile.y0 + threadIdx.y;
  t.inside = t.i < f.height && t.j < f.width;
  t.image = blockIdx.z;
  t.cell = t.image * f.tiles() + int64_t(blockIdx.y) * f.tiles_x + blockIdx.x;
  return t;
}

// Stages list entries [base, min(base + kThreads, end)) into s_gauss / s_ids and returns how many.
// Every thread of the block must call it.
__device__ __forceinline__ int stage_chunk(const SplatBatch& s, int64_t image, const int* ids, int64_t base,
                                           int64_t end, Gaussian* s_gauss, int* s_ids) {
  const int tid = threadIdx.y * kTile + threadIdx.x;
  const int count = int(min(end - base, int64_t(kThreads)));
  if (tid < count) {
    const int g = ids[base + tid];
    const int64_t row = image * s.n + g;
    s_gauss[tid] = make_gaussian(s.xy + 2 * row, s.chol + 3 * row, s.rgb + 3 * row);
    s_ids[tid] = g;
  }
  __syncthreads();
  return count;
}

__global__ void forward_kernel(SplatBatch s, Frame f, TileBins bins, float* __restrict__ image) {
  __shared__ Gaussian s_gauss[kThreads];
  __shared__ int s_ids[kThreads];
  const TileGeometry t = tile_geometry(f);
  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;
  float acc_r = 0.f, acc_g = 0.f, acc_b = 0.f;
  const int64_t end = bins.offsets[t.cell + 1];
  for (int64_t base = bins.offsets[t.cell]; base < end; base += kThreads) {
    const int count = stage_chunk(s, t.image, bins.ids, base, end, s_gauss, s_ids);
    if (t.inside) {
      for (int k = 0; k < count; ++k) {
        const Gaussian& G = s_gauss[k];
        float u, v;
        const float s2 = mahalanobis2(G, px, py, u, v);
        if (s2 > f.cutoff) continue;
        const float w = gaussian_weight(s2);
        acc_r += G.r * w;
        acc_g += G.g * w;
        acc_b += G.b * w;
      }
    }
    __syncthreads();  // the next chunk overwrites shared memory
  }
  // Every pixel is written here, empty tiles included: the image needs no zero fill.
  if (t.inside) {
    const int64_t plane = int64_t(f.height) * f.width;
    float* out = image + t.image * 3 * plane + int64_t(t.i) * f.width + t.j;
    out[0] = acc_r;
    out[plane] = acc_g;
    out[2 * plane] = acc_b;
  }
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(kFullMask, x, offset);
  return x;
}

__global__ void backward_kernel(SplatBatch s, Frame f, TileBins bins, const float* __restrict__ grad_image,
                                Grads grads) {
  __shared__ Gaussian s_gauss[kThreads];
  __shared__ int s_ids[kThreads];
  const TileGeometry t = tile_geometry(f);
  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;
  float gr = 0.f, gg = 0.f, gb = 0.f;
  if (t.inside) {
    const int64_t plane = int64_t(f.height) * f.width;
    const float* g = grad_image + t.image * 3 * plane + int64_t(t.i) * f.width + t.j;
    gr = g[0];
    gg = g[plane];
    gb = g[2 * plane];
  }
  const int lane = (threadIdx.y * kTile + threadIdx.x) & 31;
  const int64_t end = bins.offsets[t.cell + 1];
  for (int64_t base = bins.offsets[t.cell]; base < end; base += kThreads) {
    const int count = stage_chunk(s, t.image, bins.ids, base, end, s_gauss, s_ids);
    for (int k = 0; k < count; ++k) {
      const Gaussian& G = s_gauss[k];
      float moments[kGradDim] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      bool touches = false;
      if (t.inside) {
        float u, v;
        const float s2 = mahalanobis2(G, px, py, u, v);
        if (s2 <= f.cutoff) {
          float m[kRowMoments];
          row_moments(G, gr, gg, gb, gaussian_weight(s2), v, m);
          column_moments(G, u, m, moments);
          touches = true;
        }
      }
      if (!__any_sync(kFullMask, touches)) continue;
#pragma unroll
      for (int d = 0; d < kGradDim; ++d) moments[d] = warp_sum(moments[d]);
      if (lane == 0) {
        const int64_t row = t.image * s.n + s_ids[k];
        float grad[kGradDim];
        moments_grad(G, moments, grad);
        atomicAdd(grads.xy + 2 * row + 0, grad[0]);
        atomicAdd(grads.xy + 2 * row + 1, grad[1]);
        atomicAdd(grads.chol + 3 * row + 0, grad[2]);
        atomicAdd(grads.chol + 3 * row + 1, grad[3]);
        atomicAdd(grads.chol + 3 * row + 2, grad[4]);
        atomicAdd(grads.rgb + 3 * row + 0, grad[5]);
        atomicAdd(grads.rgb + 3 * row + 1, grad[6]);
        atomicAdd(grads.rgb + 3 * row + 2, grad[7]);
      }
    }
    __syncthreads();
  }
}

// Calls fn(slice, b0) for consecutive slices of the batch, each small enough for one launch: grid z,
// the binning's scratch, and B * N < 2^31 for the 1-D binning grids. Scratch is freed after each slice.
template <class Device, class Fn>
void for_each_slice(Device& dev, const SplatBatch& s, Fn&& fn) {
  const int64_t per_launch = std::min<int64_t>(dev.max_images, std::max<int64_t>(1, INT_MAX / std::max(s.n, 1)));
  for (int64_t b0 = 0; b0 < s.batch; b0 += per_launch) {
    const int64_t row = b0 * s.n;
    const SplatBatch slice{s.xy + 2 * row, s.chol + 3 * row, s.rgb + 3 * row, s.mask + row,
                           std::min(per_launch, s.batch - b0), s.n};
    fn(slice, b0);
    dev.release_scratch();
  }
}

inline dim3 tile_grid(const Frame& f, int64_t images) { return dim3(f.tiles_x, f.tiles_y, unsigned(images)); }

template <class Device>
void render_forward(Device& dev, const SplatBatch& s, const Frame& f, float* image) {  // image [B, 3, H, W]
  const int64_t plane = int64_t(f.height) * f.width;
  for_each_slice(dev, s, [&](const SplatBatch& slice, int64_t b0) {
    const TileBins bins = bin_tiles(dev, slice, f);
    dev.launch(forward_kernel, tile_grid(f, slice.batch), dim3(kTile, kTile), slice, f, bins, image + b0 * 3 * plane);
  });
}

// grads must hold zeros: the kernel adds into them.
template <class Device>
void render_backward(Device& dev, const SplatBatch& s, const Frame& f, const float* grad_image, const Grads& grads) {
  const int64_t plane = int64_t(f.height) * f.width;
  for_each_slice(dev, s, [&](const SplatBatch& slice, int64_t b0) {
    const TileBins bins = bin_tiles(dev, slice, f);
    const int64_t row = b0 * s.n;
    const Grads g{grads.xy + 2 * row, grads.chol + 3 * row, grads.rgb + 3 * row};
    dev.launch(backward_kernel, tile_grid(f, slice.batch), dim3(kTile, kTile), slice, f, bins,
               grad_image + b0 * 3 * plane, g);
  });
}

}  // namespace splat2d
