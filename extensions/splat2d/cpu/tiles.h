// The CPU backend's tiles: binning, and the per-tile kernels of each SIMD path.
// Torch-free; splat2d_cpu.cpp runs these over (image, tile) items with OpenMP.
//
// Each image is binned once per forward (its backward reuses the binning): every Gaussian's cut-off box is listed
// under the 16x16 tiles it touches (CSR, ascending Gaussian index within a
// tile). A tile kernel then walks only its tile's list, and inside it only the
// 16-pixel row chunks of the Gaussian's box, so the cost follows the splats'
// footprint, not B * N * H * W.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "../splat2d.h"

namespace splat2d {

struct Grid {
  int height, width, tiles_x, tiles_y;
  Grid(int64_t h, int64_t w)
      : height(int(h)), width(int(w)), tiles_x(int((w + kTile - 1) / kTile)), tiles_y(int((h + kTile - 1) / kTile)) {}
  int tiles() const { return tiles_x * tiles_y; }
};

// The Gaussians of one image, grouped by the tiles their cut-off box touches.
struct TileBins {
  std::vector<PixelBox> boxes;  // [N]
  std::vector<int> offsets;     // [tiles + 1] into ids
  std::vector<int> ids;         // Gaussian index per entry, tile-major
};

// Bins one image's splats (xy [N, 2], chol [N, 3], rgb [N, 3], mask [N]) and
// writes gaussians[g] = make_gaussian(...) for each real one: its reciprocals are
// then computed once, not once per tile. Returns the first real splat that is not
// finite or has l11 <= 0 or l22 <= 0 (Splats.check_values' rule), or -1: the CPU
// backend checks the values here, where a batch-1 call's torch checks cost a
// tenth of its render.
int bin_image(const float* xy, const float* chol, const float* rgb, const bool* mask, int n, const Grid& grid,
               float cutoff, TileBins& bins, Gaussian* gaussians);

// What every tile kernel reads: the batch's binned Gaussians.
struct TileJob {
  Grid grid;
  int n;  // splats per image
  float cutoff;  // at most kMaxWeightS2: a pair past it weighs less than 2^-126
  const Gaussian* gaussians;  // [B, N], only real rows set
  const TileBins* bins;       // [B]
};

// A tile's pixels as three planes [3][kTile][kTile] (row i, column j of the tile
// at [c][i][j]); entries past the image edge are ignored (render) or must be 0 (grad).
constexpr int kTilePlane = kTile * kTile;

// A tile's pair weights w and substitutions v as its render evaluates them, kept
// for its backward when both run in one pass (the fused loss): the backward then
// reads them instead of evaluating s2, the exp and the cut-off again, 34 of its ~50
// operations per pair. At most 2 * kTilePlane floats per entry of the tile's list:
// an entry's spans cover at most the tile's 16 x 16 lanes, w and v once each.
constexpr int64_t kTileWeightsPerEntry = 2 * kTilePlane;
inline int64_t tile_weights_size(const TileBins& bins, int t) {
  return int64_t(bins.offsets[t + 1] - bins.offsets[t]) * kTileWeightsPerEntry;
}

// The kept weights' layout: one record per row evaluation, in visiting order, w
// then v (each a SIMD vector F). keep_weights appends a record; take_weights reads
// the next one. Both advance the cursor.
template <class F>
SPLAT_HD void keep_weights(float*& kept, const F& w, const F& v) {
  memcpy(kept, &w, sizeof w);
  memcpy(kept + sizeof w / sizeof(float), &v, sizeof v);
  kept += 2 * sizeof w / sizeof(float);
}
template <class F>
SPLAT_HD void take_weights(const float*& kept, F& w, F& v) {
  memcpy(&w, kept, sizeof w);
  memcpy(&v, kept + sizeof w / sizeof(float), sizeof v);
  kept += 2 * sizeof w / sizeof(float);
}

// Render tile t of image b into acc [3][kTile][kTile]; kept: null, or
// tile_weights_size floats to keep the tile's weights in.
using RenderTile = void (*)(const TileJob& job, int64_t b, int t, float* acc, float* kept);
// Given dL/dI of tile t of image b as dimg [3][kTile][kTile], write each of the
// tile's entries k (offsets[t] <= k < offsets[t + 1]) its gradient terms into
// slots[k * kGradDim + d], d over (x, y, l11, l21, l22, r, g, b). kept: null, or
// the weights that the tile's render kept.
using GradTile = void (*)(const TileJob& job, int64_t b, int t, const float* dimg, float* slots,
                          const float* kept);

// One way to run the tile kernels. Every path computes the same bits.
struct SimdPath {
  const char* name;
  bool (*supported)();  // by this CPU
  RenderTile render;
  GradTile grad;
};

// Every path this build has, fastest first: avx512, avx2 (x86-64 only), portable, scalar.
const std::vector<SimdPath>& simd_paths();

}  // namespace splat2d
