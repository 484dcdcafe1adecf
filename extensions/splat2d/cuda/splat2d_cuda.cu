// CUDA backend: one 16x16 thread block per (tile, image), one thread per pixel;
// the batch index is the grid's z.
//
// A block walks its image's Gaussians in chunks of 256. Each thread tests one
// Gaussian of the chunk against the tile (the cut-off box of splat2d.h) and the
// hits are compacted, in index order, into shared memory (warp ballot + a
// prefix over the 8 warps); then every pixel thread evaluates the staged list.
// The loop runs over *all* chunks, so every Gaussian that touches a tile counts
// (GaussianImage's sum kernel stops after the first 256 of a tile).
//
// Backward: each thread computes its pair gradient for the staged Gaussian; the
// 8 values are summed across the warp with shuffles, and lane 0 alone issues
// the atomics, so there are (warps touched) atomics per Gaussian and tile
// instead of one per pixel.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "../backends.h"
#include "../splat2d.h"

namespace splat2d {
namespace {

constexpr int kThreads = kTile * kTile;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

struct TileGeometry {
  PixelBox tile;  // this block's pixels, clipped to the image
  int i, j;       // this thread's pixel
  bool inside;    // false for threads past the image edge (they still stage)
};

__device__ TileGeometry tile_geometry(int height, int width) {
  TileGeometry t;
  t.tile.x0 = blockIdx.x * kTile;
  t.tile.y0 = blockIdx.y * kTile;
  t.tile.x1 = min(t.tile.x0 + kTile, width) - 1;
  t.tile.y1 = min(t.tile.y0 + kTile, height) - 1;
  t.j = t.tile.x0 + threadIdx.x;
  t.i = t.tile.y0 + threadIdx.y;
  t.inside = t.i < height && t.j < width;
  return t;
}

// Stages the Gaussians [base, base + kThreads) of one image that touch `tile`
// into s_gauss / s_ids, in ascending index order, and returns how many.
// Every thread of the block must call it.
__device__ int stage_chunk(const float* xy, const float* chol, const float* rgb, const bool* mask, int n, int base,
                           const PixelBox& tile, float cutoff, int height, int width, Gaussian* s_gauss,
                           int* s_ids, int* s_warp_count) {
  const int tid = threadIdx.y * kTile + threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int g = base + tid;
  bool hit = false;
  if (g < n && mask[g]) {
    const PixelBox box = pixel_box(xy + 2 * g, chol + 3 * g, cutoff, height, width);
    hit = !box.empty() && box.x0 <= tile.x1 && box.x1 >= tile.x0 && box.y0 <= tile.y1 && box.y1 >= tile.y0;
  }
  const unsigned ballot = __ballot_sync(kFullMask, hit);
  if (lane == 0) s_warp_count[warp] = __popc(ballot);
  __syncthreads();
  int offset = 0, total = 0;
  for (int w = 0; w < kWarps; ++w) {
    offset += w < warp ? s_warp_count[w] : 0;
    total += s_warp_count[w];
  }
  if (hit) {
    const int slot = offset + __popc(ballot & ((1u << lane) - 1u));
    s_gauss[slot] = make_gaussian(xy + 2 * g, chol + 3 * g, rgb + 3 * g);
    s_ids[slot] = g;
  }
  __syncthreads();
  return total;
}

__global__ void forward_kernel(const float* __restrict__ xy, const float* __restrict__ chol,
                               const float* __restrict__ rgb, const bool* __restrict__ mask, int n, int height,
                               int width, float cutoff, float* __restrict__ image) {
  __shared__ Gaussian s_gauss[kThreads];
  __shared__ int s_ids[kThreads];
  __shared__ int s_warp_count[kWarps];
  const int64_t b = blockIdx.z;
  xy += b * n * 2;
  chol += b * n * 3;
  rgb += b * n * 3;
  mask += b * n;
  const TileGeometry t = tile_geometry(height, width);
  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;
  float acc_r = 0.f, acc_g = 0.f, acc_b = 0.f;
  for (int base = 0; base < n; base += kThreads) {
    const int count =
        stage_chunk(xy, chol, rgb, mask, n, base, t.tile, cutoff, height, width, s_gauss, s_ids, s_warp_count);
    if (t.inside) {
      for (int k = 0; k < count; ++k) {
        const Gaussian& G = s_gauss[k];
        float u, v;
        const float s2 = mahalanobis2(G, px, py, u, v);
        if (s2 > cutoff) continue;
        const float w = gaussian_weight(s2);
        acc_r += G.r * w;
        acc_g += G.g * w;
        acc_b += G.b * w;
      }
    }
    __syncthreads();  // the next chunk overwrites shared memory
  }
  if (t.inside) {
    const int64_t plane = int64_t(height) * width;
    float* out = image + b * 3 * plane + int64_t(t.i) * width + t.j;
    out[0] = acc_r;
    out[plane] = acc_g;
    out[2 * plane] = acc_b;
  }
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(kFullMask, x, offset);
  return x;
}

__global__ void backward_kernel(const float* __restrict__ xy, const float* __restrict__ chol,
                                const float* __restrict__ rgb, const bool* __restrict__ mask, int n, int height,
                                int width, float cutoff, const float* __restrict__ grad_image,
                                float* __restrict__ grad_xy, float* __restrict__ grad_chol,
                                float* __restrict__ grad_rgb) {
  __shared__ Gaussian s_gauss[kThreads];
  __shared__ int s_ids[kThreads];
  __shared__ int s_warp_count[kWarps];
  const int64_t b = blockIdx.z;
  xy += b * n * 2;
  chol += b * n * 3;
  rgb += b * n * 3;
  mask += b * n;
  grad_xy += b * n * 2;
  grad_chol += b * n * 3;
  grad_rgb += b * n * 3;
  const TileGeometry t = tile_geometry(height, width);
  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;
  float gr = 0.f, gg = 0.f, gb = 0.f;
  if (t.inside) {
    const int64_t plane = int64_t(height) * width;
    const float* g = grad_image + b * 3 * plane + int64_t(t.i) * width + t.j;
    gr = g[0];
    gg = g[plane];
    gb = g[2 * plane];
  }
  const int lane = (threadIdx.y * kTile + threadIdx.x) & 31;
  for (int base = 0; base < n; base += kThreads) {
    const int count =
        stage_chunk(xy, chol, rgb, mask, n, base, t.tile, cutoff, height, width, s_gauss, s_ids, s_warp_count);
    for (int k = 0; k < count; ++k) {
      const Gaussian& G = s_gauss[k];
      float grad[kGradDim] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      bool touches = false;
      if (t.inside) {
        float u, v;
        const float s2 = mahalanobis2(G, px, py, u, v);
        if (s2 <= cutoff) {
          accumulate_pair_grad(G, gr, gg, gb, gaussian_weight(s2), u, v, grad);
          touches = true;
        }
      }
      if (!__any_sync(kFullMask, touches)) continue;
#pragma unroll
      for (int d = 0; d < kGradDim; ++d) grad[d] = warp_sum(grad[d]);
      if (lane == 0) {
        const int g = s_ids[k];
        atomicAdd(grad_xy + 2 * g + 0, grad[0]);
        atomicAdd(grad_xy + 2 * g + 1, grad[1]);
        atomicAdd(grad_chol + 3 * g + 0, grad[2]);
        atomicAdd(grad_chol + 3 * g + 1, grad[3]);
        atomicAdd(grad_chol + 3 * g + 2, grad[4]);
        atomicAdd(grad_rgb + 3 * g + 0, grad[5]);
        atomicAdd(grad_rgb + 3 * g + 1, grad[6]);
        atomicAdd(grad_rgb + 3 * g + 2, grad[7]);
      }
    }
    __syncthreads();
  }
}

dim3 launch_grid(int64_t batch, int64_t height, int64_t width) {
  TORCH_CHECK(batch <= 65535, "splat2d (cuda): batch ", batch, " exceeds 65535 images per call");
  return dim3(unsigned((width + kTile - 1) / kTile), unsigned((height + kTile - 1) / kTile), unsigned(batch));
}

}  // namespace

torch::Tensor forward_cuda(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                           const torch::Tensor& mask, int64_t height, int64_t width, double cutoff) {
  const c10::cuda::CUDAGuard guard(xy.device());
  const int64_t batch = xy.size(0);
  auto image = torch::zeros({batch, 3, height, width}, xy.options());
  if (batch == 0 || height == 0 || width == 0) return image;
  forward_kernel<<<launch_grid(batch, height, width), dim3(kTile, kTile), 0, c10::cuda::getCurrentCUDAStream()>>>(
      xy.data_ptr<float>(), chol.data_ptr<float>(), rgb.data_ptr<float>(), mask.data_ptr<bool>(), int(xy.size(1)),
      int(height), int(width), float(cutoff), image.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return image;
}

std::vector<torch::Tensor> backward_cuda(const torch::Tensor& xy, const torch::Tensor& chol,
                                         const torch::Tensor& rgb, const torch::Tensor& mask,
                                         const torch::Tensor& grad_image, double cutoff) {
  const c10::cuda::CUDAGuard guard(xy.device());
  const int64_t batch = xy.size(0), height = grad_image.size(2), width = grad_image.size(3);
  auto grad_xy = torch::zeros_like(xy);
  auto grad_chol = torch::zeros_like(chol);
  auto grad_rgb = torch::zeros_like(rgb);
  if (batch == 0 || height == 0 || width == 0) return {grad_xy, grad_chol, grad_rgb};
  backward_kernel<<<launch_grid(batch, height, width), dim3(kTile, kTile), 0, c10::cuda::getCurrentCUDAStream()>>>(
      xy.data_ptr<float>(), chol.data_ptr<float>(), rgb.data_ptr<float>(), mask.data_ptr<bool>(), int(xy.size(1)),
      int(height), int(width), float(cutoff), grad_image.data_ptr<float>(), grad_xy.data_ptr<float>(),
      grad_chol.data_ptr<float>(), grad_rgb.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_xy, grad_chol, grad_rgb};
}

}  // namespace splat2d
