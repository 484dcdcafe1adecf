// CPU backend: tile-based forward and backward of the sum render, OpenMP across
// (image, tile) work items.
//
// Each image is binned once per call: every Gaussian's cut-off box is listed
// under the 16x16 tiles it touches (CSR, ascending Gaussian index within a
// tile). A work item then walks only its tile's list, and inside it only the
// pixels of the Gaussian's box, so the cost follows the splats' footprint, not
// B * N * H * W.
//
// The backward writes one partial gradient per (tile, Gaussian) entry into its
// own slot and sums the slots per Gaussian afterwards: no atomics, and the
// result does not depend on the thread count or schedule (bit-identical).
#include <omp.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../backends.h"
#include "../splat2d.h"

namespace splat2d {
namespace {

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

void bin_image(const float* xy, const float* chol, const bool* mask, int n, const Grid& grid, float cutoff,
               TileBins& bins) {
  const int tiles = grid.tiles();
  bins.boxes.resize(n);
  bins.offsets.assign(tiles + 1, 0);
  for (int g = 0; g < n; ++g) {
    PixelBox box{0, -1, 0, -1};
    if (mask[g]) box = pixel_box(xy + 2 * g, chol + 3 * g, cutoff, grid.height, grid.width);
    bins.boxes[g] = box;
    if (box.empty()) continue;
    for (int ty = box.y0 / kTile; ty <= box.y1 / kTile; ++ty)
      for (int tx = box.x0 / kTile; tx <= box.x1 / kTile; ++tx) ++bins.offsets[ty * grid.tiles_x + tx + 1];
  }
  for (int t = 0; t < tiles; ++t) bins.offsets[t + 1] += bins.offsets[t];
  bins.ids.resize(bins.offsets[tiles]);
  std::vector<int> cursor(bins.offsets.begin(), bins.offsets.end() - 1);
  for (int g = 0; g < n; ++g) {
    const PixelBox& box = bins.boxes[g];
    if (box.empty()) continue;
    for (int ty = box.y0 / kTile; ty <= box.y1 / kTile; ++ty)
      for (int tx = box.x0 / kTile; tx <= box.x1 / kTile; ++tx) bins.ids[cursor[ty * grid.tiles_x + tx]++] = g;
  }
}

// The pixel rectangle of tile t, inclusive.
PixelBox tile_box(int t, const Grid& grid) {
  const int tx = t % grid.tiles_x, ty = t / grid.tiles_x;
  return PixelBox{tx * kTile, std::min((tx + 1) * kTile, grid.width) - 1, ty * kTile,
                  std::min((ty + 1) * kTile, grid.height) - 1};
}

PixelBox intersect(const PixelBox& a, const PixelBox& b) {
  return PixelBox{std::max(a.x0, b.x0), std::min(a.x1, b.x1), std::max(a.y0, b.y0), std::min(a.y1, b.y1)};
}

std::vector<TileBins> bin_batch(const float* xy, const float* chol, const bool* mask, int64_t batch, int n,
                                const Grid& grid, float cutoff, int threads) {
  std::vector<TileBins> bins(batch);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t b = 0; b < batch; ++b)
    bin_image(xy + b * n * 2, chol + b * n * 3, mask + b * n, n, grid, cutoff, bins[b]);
  return bins;
}

void check_sizes(const torch::Tensor& xy, int64_t height, int64_t width) {
  TORCH_CHECK(xy.size(1) < (int64_t(1) << 30), "splat2d: N = ", xy.size(1), " splats per image is too many");
  TORCH_CHECK(height < (int64_t(1) << 20) && width < (int64_t(1) << 20), "splat2d: image size ", height, "x",
              width, " is too large");
}

}  // namespace

torch::Tensor forward_cpu(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                          const torch::Tensor& mask, int64_t height, int64_t width, double cutoff) {
  check_sizes(xy, height, width);
  const int64_t batch = xy.size(0);
  const int n = int(xy.size(1));
  const Grid grid(height, width);
  const float cut = float(cutoff);
  const int threads = at::get_num_threads();
  const float* pxy = xy.data_ptr<float>();
  const float* pchol = chol.data_ptr<float>();
  const float* prgb = rgb.data_ptr<float>();
  // Every (image, tile) item below writes all of its tile's pixels, so no zero fill.
  auto image = torch::empty({batch, 3, height, width}, xy.options());
  float* out = image.data_ptr<float>();
  const int64_t plane = height * width;

  const std::vector<TileBins> bins = bin_batch(pxy, pchol, mask.data_ptr<bool>(), batch, n, grid, cut, threads);

#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t item = 0; item < batch * grid.tiles(); ++item) {
    const int64_t b = item / grid.tiles();
    const int t = int(item % grid.tiles());
    const TileBins& bin = bins[b];
    const PixelBox tile = tile_box(t, grid);
    float acc[3][kTile * kTile] = {};
    for (int k = bin.offsets[t]; k < bin.offsets[t + 1]; ++k) {
      const int64_t g = b * n + bin.ids[k];
      const Gaussian G = make_gaussian(pxy + 2 * g, pchol + 3 * g, prgb + 3 * g);
      const PixelBox box = intersect(bin.boxes[bin.ids[k]], tile);
      for (int i = box.y0; i <= box.y1; ++i) {
        const float py = float(i) + 0.5f;
        const int row = (i - tile.y0) * kTile - tile.x0;
        for (int j = box.x0; j <= box.x1; ++j) {
          float u, v;
          const float s2 = mahalanobis2(G, float(j) + 0.5f, py, u, v);
          if (s2 > cut) continue;
          const float w = gaussian_weight(s2);
          acc[0][row + j] += G.r * w;
          acc[1][row + j] += G.g * w;
          acc[2][row + j] += G.b * w;
        }
      }
    }
    for (int c = 0; c < 3; ++c)
      for (int i = tile.y0; i <= tile.y1; ++i)
        for (int j = tile.x0; j <= tile.x1; ++j)
          out[(b * 3 + c) * plane + int64_t(i) * width + j] = acc[c][(i - tile.y0) * kTile + j - tile.x0];
  }
  return image;
}

std::vector<torch::Tensor> backward_cpu(const torch::Tensor& xy, const torch::Tensor& chol,
                                        const torch::Tensor& rgb, const torch::Tensor& mask,
                                        const torch::Tensor& grad_image, double cutoff) {
  const int64_t height = grad_image.size(2), width = grad_image.size(3);
  check_sizes(xy, height, width);
  const int64_t batch = xy.size(0);
  const int n = int(xy.size(1));
  const Grid grid(height, width);
  const float cut = float(cutoff);
  const int threads = at::get_num_threads();
  const float* pxy = xy.data_ptr<float>();
  const float* pchol = chol.data_ptr<float>();
  const float* prgb = rgb.data_ptr<float>();
  const float* gimg = grad_image.data_ptr<float>();
  const int64_t plane = height * width;

  const std::vector<TileBins> bins = bin_batch(pxy, pchol, mask.data_ptr<bool>(), batch, n, grid, cut, threads);
  // One kGradDim slot per (tile, Gaussian) entry of each image.
  std::vector<std::vector<float>> partial(batch);
  for (int64_t b = 0; b < batch; ++b) partial[b].resize(bins[b].ids.size() * kGradDim);

#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t item = 0; item < batch * grid.tiles(); ++item) {
    const int64_t b = item / grid.tiles();
    const int t = int(item % grid.tiles());
    const TileBins& bin = bins[b];
    if (bin.offsets[t] == bin.offsets[t + 1]) continue;
    const PixelBox tile = tile_box(t, grid);
    float dimg[3][kTile * kTile] = {};
    for (int c = 0; c < 3; ++c)
      for (int i = tile.y0; i <= tile.y1; ++i)
        for (int j = tile.x0; j <= tile.x1; ++j)
          dimg[c][(i - tile.y0) * kTile + j - tile.x0] = gimg[(b * 3 + c) * plane + int64_t(i) * width + j];
    for (int k = bin.offsets[t]; k < bin.offsets[t + 1]; ++k) {
      const int64_t g = b * n + bin.ids[k];
      const Gaussian G = make_gaussian(pxy + 2 * g, pchol + 3 * g, prgb + 3 * g);
      const PixelBox box = intersect(bin.boxes[bin.ids[k]], tile);
      float grad[kGradDim] = {};
      for (int i = box.y0; i <= box.y1; ++i) {
        const float py = float(i) + 0.5f;
        const int row = (i - tile.y0) * kTile - tile.x0;
        for (int j = box.x0; j <= box.x1; ++j) {
          float u, v;
          const float s2 = mahalanobis2(G, float(j) + 0.5f, py, u, v);
          if (s2 > cut) continue;
          const float w = gaussian_weight(s2);
          accumulate_pair_grad(G, dimg[0][row + j], dimg[1][row + j], dimg[2][row + j], w, u, v, grad);
        }
      }
      std::copy(grad, grad + kGradDim, partial[b].data() + int64_t(k) * kGradDim);
    }
  }

  auto grad_xy = torch::zeros_like(xy);
  auto grad_chol = torch::zeros_like(chol);
  auto grad_rgb = torch::zeros_like(rgb);
  float* dxy = grad_xy.data_ptr<float>();
  float* dchol = grad_chol.data_ptr<float>();
  float* drgb = grad_rgb.data_ptr<float>();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < batch; ++b) {
    const TileBins& bin = bins[b];
    for (size_t k = 0; k < bin.ids.size(); ++k) {
      const int64_t g = b * n + bin.ids[k];
      const float* p = partial[b].data() + k * kGradDim;
      for (int d = 0; d < 2; ++d) dxy[2 * g + d] += p[d];
      for (int d = 0; d < 3; ++d) dchol[3 * g + d] += p[2 + d];
      for (int d = 0; d < 3; ++d) drgb[3 * g + d] += p[5 + d];
    }
  }
  return {grad_xy, grad_chol, grad_rgb};
}

}  // namespace splat2d
