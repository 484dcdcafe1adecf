// GPU tile binning, as gsplat and GaussianImage do it, so the cost follows the splats' footprint
// instead of B x tiles x N:
//
//   count   per Gaussian, the 16x16 tiles its cut-off box touches (splat2d.h's pixel_box)
//   scan    inclusive sum of the counts: Gaussian i owns slots [cum[i-1], cum[i]) of one list
//   emit    per Gaussian, one (key = image * tiles + tile, value = Gaussian index) pair per tile
//   sort    the pairs by key, stably, over the key's significant bits only (a radix sort)
//   ranges  per (image, tile) cell, its run [offsets[cell], offsets[cell + 1]) of the sorted list
//
// The emission is in ascending (image, Gaussian) order and the sort is stable, so every tile lists its
// Gaussians in ascending index: the order in which the CPU backend sums, so the forwards agree bit for bit.
//
// Torch-free: the kernels, plus a host template over a Device that supplies scratch memory, launches,
// the scan, the sort and a read-back (CUB through torch in splat2d_cuda.cu; std:: and the thread-block
// emulator in tests/cuda_emu).
#pragma once

#include <cstdint>

#include "../splat2d.h"

namespace splat2d {

constexpr int kThreads = kTile * kTile;  // threads per block, every kernel

// One slice of the batch, contiguous as bindings.cpp checked: xy [B, N, 2], chol and rgb [B, N, 3], mask [B, N].
struct SplatBatch {
  const float* xy;
  const float* chol;
  const float* rgb;
  const bool* mask;
  int64_t batch;
  int n;
};

// The rendered image's size in pixels and in tiles, and the cut-off.
struct Frame {
  int height, width, tiles_x, tiles_y;
  float cutoff;
  SPLAT_HD int64_t tiles() const { return int64_t(tiles_x) * tiles_y; }
};

inline Frame make_frame(int height, int width, float cutoff) {
  return Frame{height, width, (width + kTile - 1) / kTile, (height + kTile - 1) / kTile, cutoff};
}

// Each (image, tile) cell's Gaussians: ids[offsets[cell] .. offsets[cell + 1]), ascending.
struct TileBins {
  const int64_t* offsets;  // [B * tiles + 1]
  const int* ids;          // [entries], Gaussian index within its image
};

// Tiles touched by row i of the slice; empty for padding rows, which are never read further.
__device__ __forceinline__ PixelBox touched_tiles(const SplatBatch& s, const Frame& f, int64_t i) {
  if (!s.mask[i]) return PixelBox{0, -1, 0, -1};
  const PixelBox box = pixel_box(s.xy + 2 * i, s.chol + 3 * i, f.cutoff, f.height, f.width);
  return box.empty() ? box : tile_span(box);
}

__global__ void count_tiles_kernel(SplatBatch s, Frame f, int64_t* counts) {  // counts [B * N]
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= s.batch * s.n) return;
  const PixelBox t = touched_tiles(s, f, i);
  counts[i] = t.empty() ? 0 : int64_t(t.x1 - t.x0 + 1) * (t.y1 - t.y0 + 1);
}

__global__ void emit_pairs_kernel(SplatBatch s, Frame f, const int64_t* cum, int64_t* keys, int* ids) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= s.batch * s.n) return;
  const PixelBox t = touched_tiles(s, f, i);
  if (t.empty()) return;
  const int64_t image = i / s.n;
  int64_t slot = i == 0 ? 0 : cum[i - 1];
  for (int ty = t.y0; ty <= t.y1; ++ty)
    for (int tx = t.x0; tx <= t.x1; ++tx, ++slot) {
      keys[slot] = image * f.tiles() + int64_t(ty) * f.tiles_x + tx;
      ids[slot] = int(i % s.n);
    }
}

// Thread k < total opens the cells after the previous entry's key up to its own at k; thread k = total
// closes the rest. Every offset is written exactly once (no fill), and a cell with no entry gets an
// empty run.
__global__ void tile_ranges_kernel(const int64_t* keys, int64_t total, int64_t cells, int64_t* offsets) {
  const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k > total) return;
  const int64_t first = k == 0 ? 0 : keys[k - 1] + 1;
  const int64_t last = k == total ? cells : keys[k];
  for (int64_t cell = first; cell <= last; ++cell) offsets[cell] = k;
}

inline dim3 blocks_for(int64_t threads) { return dim3(unsigned((threads + kThreads - 1) / kThreads)); }

// Radix-sort bits that hold every key in [0, cells).
inline int key_bits(int64_t cells) {
  int bits = 1;
  while (bits < 63 && (int64_t(1) << bits) < cells) ++bits;
  return bits;
}

template <class Device>
TileBins bin_tiles(Device& dev, const SplatBatch& s, const Frame& f) {
  const int64_t items = s.batch * s.n, cells = s.batch * f.tiles();
  int64_t* counts = dev.template alloc<int64_t>(items);
  int64_t* cum = dev.template alloc<int64_t>(items);
  dev.launch(count_tiles_kernel, blocks_for(items), dim3(kThreads), s, f, counts);
  dev.inclusive_sum(counts, cum, items);
  const int64_t total = items > 0 ? dev.read(cum + items - 1) : 0;
  int64_t* keys = dev.template alloc<int64_t>(total);
  int* ids = dev.template alloc<int>(total);
  dev.launch(emit_pairs_kernel, blocks_for(items), dim3(kThreads), s, f, cum, keys, ids);
  int64_t* sorted_keys = dev.template alloc<int64_t>(total);
  int* sorted_ids = dev.template alloc<int>(total);
  dev.sort_pairs(keys, sorted_keys, ids, sorted_ids, total, key_bits(cells));
  int64_t* offsets = dev.template alloc<int64_t>(cells + 1);
  dev.launch(tile_ranges_kernel, blocks_for(total + 1), dim3(kThreads), sorted_keys, total, cells, offsets);
  return TileBins{offsets, sorted_ids};
}

}  // namespace splat2d
