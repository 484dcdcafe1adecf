// CPU backend: the tile kernels of tiles.cpp over (image, tile) work items with
// OpenMP, on the SIMD path chosen at run time (active_path below): the forward,
// the backward, and the fused L2 loss of fitting (render, residual and backward
// of a tile in one pass, in cache, the backward reading the weights its render kept).
//
// The backward writes one partial gradient per (tile, Gaussian) entry into its
// own slot and sums the slots per Gaussian afterwards: no atomics, and the
// result does not depend on the thread count or schedule (bit-identical). It
// reuses its forward's binning (CpuBinning), which also checks the splats' values.
#include <omp.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "../backends.h"
#include "tiles.h"

namespace splat2d {
namespace {

constexpr const char* kSimdEnv = "GS_LIGHTNING_SIMD";

std::string path_names(bool supported_only) {
  std::string names;
  for (const SimdPath& p : simd_paths())
    if (!supported_only || p.supported()) names += (names.empty() ? "" : ", ") + std::string(p.name);
  return names;
}

// The path named by GS_LIGHTNING_SIMD, or the fastest this CPU runs when it is
// unset, empty or "auto". Read on every call, so a test can switch paths.
const SimdPath& active_path() {
  const char* want = std::getenv(kSimdEnv);
  const bool any = want == nullptr || *want == '\0' || std::string(want) == "auto";
  for (const SimdPath& p : simd_paths()) {
    if (any ? p.supported() : std::string(want) == p.name) {
      TORCH_CHECK_VALUE(p.supported(), kSimdEnv, "=", want, ": this CPU lacks that SIMD path; choose one of ",
                        path_names(true), " or auto");
      return p;
    }
  }
  TORCH_CHECK_VALUE(false, kSimdEnv, "=", want, ": unknown SIMD path; choose one of ", path_names(false),
                    " or auto (this CPU runs ", path_names(true), ")");
}

// The cut-off the kernels apply (TileJob::cutoff).
float kernel_cutoff(double cutoff) { return std::min(float(cutoff), kMaxWeightS2); }

}  // namespace

// A batch's binned splats (tiles.h): made by a call from its tensors, then read only,
// so a forward hands its binning to its backward.
struct CpuBinning {
  TileJob job;
  int64_t batch;
  std::vector<TileBins> bins;
  std::unique_ptr<Gaussian[]> gaussians;

  CpuBinning(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb, const torch::Tensor& mask,
             int64_t height, int64_t width, double cutoff, int threads)
      : job{Grid(height, width), int(xy.size(1)), kernel_cutoff(cutoff), nullptr, nullptr},
        batch(xy.size(0)),
        bins(batch),
        gaussians(new Gaussian[batch * xy.size(1)]) {
    const float *pxy = xy.data_ptr<float>(), *pchol = chol.data_ptr<float>(), *prgb = rgb.data_ptr<float>();
    const bool* pmask = mask.data_ptr<bool>();
    const int n = job.n;
    std::vector<int> bad(batch);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int64_t b = 0; b < batch; ++b)
      bad[b] = bin_image(pxy + b * n * 2, pchol + b * n * 3, prgb + b * n * 3, pmask + b * n, n, job.grid,
                         job.cutoff, bins[b], gaussians.get() + b * n);
    for (int64_t b = 0; b < batch; ++b)
      TORCH_CHECK_VALUE(bad[b] < 0, "splat2d: splat ", bad[b], " of image ", b,
                        " is real but holds NaN or inf, or l11 or l22 <= 0");
    job.gaussians = gaussians.get();
    job.bins = bins.data();
  }
};

namespace {

// What a forward or backward call shares: the binning, the threads, the path.
struct Call {
  std::shared_ptr<const CpuBinning> binning;
  const TileJob& job;
  const int64_t batch;
  const std::vector<TileBins>& bins;
  int threads;
  const SimdPath& path;

  explicit Call(std::shared_ptr<const CpuBinning> binned)
      : binning(std::move(binned)),
        job(binning->job),
        batch(binning->batch),
        bins(binning->bins),
        threads(at::get_num_threads()),
        path(active_path()) {}

  Call(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb, const torch::Tensor& mask,
       int64_t height, int64_t width, double cutoff)
      : Call(std::make_shared<const CpuBinning>(xy, chol, rgb, mask, height, width, cutoff, at::get_num_threads())) {}

  int64_t items() const { return batch * job.grid.tiles(); }

  // fn(b, t) for every (image, tile) item, in parallel.
  template <class Fn>
  void for_each_item(Fn fn) const {
    const int tiles = job.grid.tiles();
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int64_t item = 0; item < items(); ++item) fn(item / tiles, int(item % tiles));
  }

  // One kGradDim slot per (tile, Gaussian) entry of each image, for the grad kernels to fill: each
  // slot is written by exactly one (image, tile) item, so no atomics, and no zero fill.
  std::vector<int64_t> slot_start;  // [B + 1], in slots
  std::unique_ptr<float[]> slots;

  void make_slots() {
    slot_start.assign(batch + 1, 0);
    for (int64_t b = 0; b < batch; ++b) slot_start[b + 1] = slot_start[b] + int64_t(bins[b].ids.size());
    slots.reset(new float[slot_start[batch] * kGradDim]);
  }
  float* slots_of(int64_t b) const { return slots.get() + slot_start[b] * kGradDim; }

  // The gradients {xy [B, N, 2], chol [B, N, 3], rgb [B, N, 3]}: each Gaussian's slots summed, in
  // tile order.
  std::vector<torch::Tensor> gradients(const torch::Tensor& xy, const torch::Tensor& chol,
                                       const torch::Tensor& rgb) const {
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
        const int64_t g = b * job.n + bin.ids[k];
        const float* p = slots_of(b) + k * kGradDim;
        for (int d = 0; d < 2; ++d) dxy[2 * g + d] += p[d];
        for (int d = 0; d < 3; ++d) dchol[3 * g + d] += p[2 + d];
        for (int d = 0; d < 3; ++d) drgb[3 * g + d] += p[5 + d];
      }
    }
    return {grad_xy, grad_chol, grad_rgb};
  }

  // Copies between an image [B, 3, H, W] and tile t's planes [3][kTile][kTile].
  template <class Copy>
  void each_tile_row(int64_t b, int t, Copy copy) const {
    const Grid& g = job.grid;
    const int x0 = (t % g.tiles_x) * kTile, y0 = (t / g.tiles_x) * kTile;
    const int w = std::min(kTile, g.width - x0), h = std::min(kTile, g.height - y0);
    const int64_t plane = int64_t(g.height) * g.width;
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < h; ++i)
        copy((b * 3 + c) * plane + int64_t(y0 + i) * g.width + x0, c * kTilePlane + i * kTile, w);
  }
};

// n <= kTile floats; a whole tile row in one fixed-size copy (a call to memmove per row costs 5%).
void copy_row(const float* from, float* to, int n) {
  if (n == kTile)
    memcpy(to, from, kTile * sizeof(float));
  else
    memcpy(to, from, n * sizeof(float));
}

// A batch's image is tens of MB (38 MB at 64 x 224 x 224); above glibc's mmap
// threshold (at most 32 MiB) it is mapped fresh on every call and unmapped on free,
// so its first write faults on every 4 KiB page: at batch 64 that cost the forward
// 0.1-0.15 ms per image, a tenth of it. Advising
// transparent huge pages makes that one fault per 2 MiB where the kernel allows it
// (THP "madvise" or "always"; depending on THP "defrag", the kernel may compact
// memory first or fall back to 4 KiB pages); elsewhere the advice is ignored. Only
// whole pages of the buffer are advised.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHugePage = size_t(2) << 20;
  if (bytes < 2 * kHugePage) return;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(data) + page - 1) / page * page;
  const uintptr_t end = (uintptr_t(data) + bytes) / page * page;
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice: failure changes nothing
#endif
}

// One buffer per thread for the weights its tiles keep (tiles.h), each as large as
// the batch's largest tile needs: allocated before the parallel loop, where a failure
// can still raise (inside it, bad_alloc would terminate the process), and read
// there without locking by the thread's OpenMP id.
class ThreadWeights {
 public:
  explicit ThreadWeights(const Call& call) {
    int64_t size = 0;
    for (int64_t b = 0; b < call.batch; ++b)
      for (int t = 0; t < call.job.grid.tiles(); ++t) size = std::max(size, tile_weights_size(call.bins[b], t));
    buffers_.resize(call.threads);
    try {
      for (auto& buffer : buffers_) buffer.reset(new float[size]);
    } catch (const std::bad_alloc&) {
      TORCH_CHECK(false, "splat2d: l2_loss: out of memory for its tiles' weights (", call.threads, " x ",
                  size * sizeof(float), " bytes: ", size / kTileWeightsPerEntry, " Gaussians on one tile)");
    }
  }
  // This thread's buffer: call inside Call::for_each_item.
  float* here() const { return buffers_[omp_get_thread_num()].get(); }

 private:
  std::vector<std::unique_ptr<float[]>> buffers_;
};

}  // namespace

std::pair<torch::Tensor, CpuBinningHandle> forward_cpu(const torch::Tensor& xy, const torch::Tensor& chol,
                                                       const torch::Tensor& rgb, const torch::Tensor& mask,
                                                       int64_t height, int64_t width, double cutoff) {
  const Call call(xy, chol, rgb, mask, height, width, cutoff);
  // Every (image, tile) item below writes all of its tile's pixels, so no zero fill.
  auto image = torch::empty({call.batch, 3, height, width}, xy.options());
  float* out = image.data_ptr<float>();
  advise_huge_pages(out, image.numel() * sizeof(float));
  call.for_each_item([&](int64_t b, int t) {
    alignas(64) float acc[3 * kTilePlane];
    call.path.render(call.job, b, t, acc, nullptr);
    call.each_tile_row(b, t, [&](int64_t at, int from, int n) { copy_row(acc + from, out + at, n); });
  });
  return {image, CpuBinningHandle{call.binning}};
}

std::vector<torch::Tensor> backward_cpu(const torch::Tensor& xy, const torch::Tensor& chol,
                                        const torch::Tensor& rgb, const torch::Tensor& mask,
                                        const torch::Tensor& grad_image, double cutoff,
                                        const CpuBinningHandle* forward) {
  const int64_t height = grad_image.size(2), width = grad_image.size(3);
  if (forward) {
    const CpuBinning& f = *forward->binning;
    TORCH_CHECK(f.batch == xy.size(0) && f.job.n == xy.size(1) && f.job.grid.height == height &&
                    f.job.grid.width == width && f.job.cutoff == kernel_cutoff(cutoff),
                "splat2d: the binning passed to backward is of another forward (batch, N, image size or cut-off)");
  }
  Call call = forward ? Call(forward->binning) : Call(xy, chol, rgb, mask, height, width, cutoff);
  const float* gimg = grad_image.data_ptr<float>();
  call.make_slots();
  call.for_each_item([&](int64_t b, int t) {
    if (call.bins[b].offsets[t] == call.bins[b].offsets[t + 1]) return;
    alignas(64) float dimg[3 * kTilePlane] = {};  // zero past the image edge
    call.each_tile_row(b, t, [&](int64_t at, int to, int n) { copy_row(gimg + at, dimg + to, n); });
    call.path.grad(call.job, b, t, dimg, call.slots_of(b), nullptr);
  });
  return call.gradients(xy, chol, rgb);
}

std::vector<torch::Tensor> l2_loss_cpu(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                                       const torch::Tensor& mask, const torch::Tensor& target, double cutoff) {
  const int64_t height = target.size(2), width = target.size(3);
  Call call(xy, chol, rgb, mask, height, width, cutoff);
  const float* tgt = target.data_ptr<float>();
  const float count = float(3 * height * width);
  call.make_slots();
  std::vector<double> tile_sse(call.items());
  const ThreadWeights weights(call);
  call.for_each_item([&](int64_t b, int t) {
    // The render, its residual and the backward of the tile, all in cache.
    alignas(64) float acc[3 * kTilePlane];
    float* kept = weights.here();
    call.path.render(call.job, b, t, acc, kept);
    alignas(64) float dimg[3 * kTilePlane] = {};  // zero past the image edge
    double sse = 0.0;
    call.each_tile_row(b, t, [&](int64_t at, int from, int n) {
      for (int j = 0; j < n; ++j) {
        const float r = acc[from + j] - tgt[at + j];
        sse += double(r) * r;
        dimg[from + j] = 2.0f * r / count;  // d mean(r^2) / d render
      }
    });
    tile_sse[b * call.job.grid.tiles() + t] = sse;
    if (call.bins[b].offsets[t] != call.bins[b].offsets[t + 1])
      call.path.grad(call.job, b, t, dimg, call.slots_of(b), kept);
  });
  auto loss = torch::empty({call.batch}, xy.options());
  float* pl = loss.data_ptr<float>();
  for (int64_t b = 0; b < call.batch; ++b) {
    double sse = 0.0;  // tile by tile, in order: the same bits on any thread count
    for (int t = 0; t < call.job.grid.tiles(); ++t) sse += tile_sse[b * call.job.grid.tiles() + t];
    pl[b] = float(sse / count);
  }
  std::vector<torch::Tensor> out = call.gradients(xy, chol, rgb);
  out.insert(out.begin(), loss);
  return out;
}

std::vector<std::string> simd_path_names() {
  std::vector<std::string> names;
  for (const SimdPath& p : simd_paths())
    if (p.supported()) names.push_back(p.name);
  return names;
}

std::string simd_path_name() { return active_path().name; }

}  // namespace splat2d
