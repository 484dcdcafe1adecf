// The CUDA backend's device code (extensions/splat2d/cuda/render.cuh, binning.cuh) on the emulator,
// behind a C interface that tests/test_cuda_emulated.py loads with ctypes. Each entry returns 0, or 1
// with the emulator's report (or any other exception) in `error`.
#include "cuda_emu.h"
// The kernels, compiled as host C++ (the include path points at extensions/splat2d/cuda).
#include "render.cuh"

#include <numeric>
#include <string>
#include <vector>

namespace {

using namespace splat2d;

// render.cuh's Device on the emulator: host memory filled with 0xFF bytes (as cudaMalloc would leave
// garbage) between guard bytes that must stay untouched, every launch run by emu::launch under one
// schedule, and std:: for the scan and the sort.
struct EmuDevice {
  static constexpr size_t kGuard = 256;  // bytes before and after each scratch buffer
  int64_t max_images;
  emu::Schedule schedule;
  std::vector<std::vector<unsigned char>> scratch;

  template <class T>
  T* alloc(int64_t count) {
    scratch.emplace_back(size_t(std::max<int64_t>(count, 1)) * sizeof(T) + 2 * kGuard, 0xFF);
    return reinterpret_cast<T*>(scratch.back().data() + kGuard);
  }

  void release_scratch() {
    for (const auto& buffer : scratch)
      for (size_t k = 0; k < kGuard; ++k)
        if (buffer[k] != 0xFF || buffer[buffer.size() - 1 - k] != 0xFF)
          throw emu::Misuse("a kernel wrote outside a scratch buffer of " + std::to_string(buffer.size() - 2 * kGuard) +
                            " bytes");
    scratch.clear();
  }

  template <class... Params, class... Args>
  void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    emu::launch(schedule, grid, block, [&] { kernel(args...); });
  }

  void inclusive_sum(const int64_t* in, int64_t* out, int64_t n) { std::inclusive_scan(in, in + n, out); }

  // Stable and on the key's low `bits` only, as CUB's radix sort with end_bit = bits.
  void sort_pairs(const int64_t* keys, int64_t* sorted_keys, const int* ids, int* sorted_ids, int64_t n, int bits) {
    const int64_t low = bits >= 63 ? INT64_MAX : (int64_t(1) << bits) - 1;
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return (keys[a] & low) < (keys[b] & low); });
    for (int64_t k = 0; k < n; ++k) {
      sorted_keys[k] = keys[order[k]];
      sorted_ids[k] = ids[order[k]];
    }
  }

  int64_t read(const int64_t* value) { return *value; }
};

}  // namespace

// order: 0 in order, 1 shuffled with `seed`; images_per_launch: the slice size (the CUDA build uses 4096).
extern "C" int emu_forward(const float* xy, const float* chol, const float* rgb, const bool* mask, int64_t batch,
                           int n, int height, int width, float cutoff, int order, uint64_t seed,
                           int64_t images_per_launch, float* image, char* error, int error_size) {
  return emu::report(error, error_size, [&] {
    EmuDevice dev{images_per_launch, {emu::Order(order), seed}, {}};
    render_forward(dev, SplatBatch{xy, chol, rgb, mask, batch, n}, make_frame(height, width, cutoff), image);
  });
}

// grad_xy, grad_chol, grad_rgb must hold zeros; they are the only buffers the atomics may touch.
extern "C" int emu_backward(const float* xy, const float* chol, const float* rgb, const bool* mask, int64_t batch,
                            int n, int height, int width, float cutoff, int order, uint64_t seed,
                            int64_t images_per_launch, const float* grad_image, float* grad_xy, float* grad_chol,
                            float* grad_rgb, char* error, int error_size) {
  const int64_t rows = batch * n;
  emu::watch(grad_xy, rows * 2 * sizeof(float));
  emu::watch(grad_chol, rows * 3 * sizeof(float));
  emu::watch(grad_rgb, rows * 3 * sizeof(float));
  const int status = emu::report(error, error_size, [&] {
    EmuDevice dev{images_per_launch, {emu::Order(order), seed}, {}};
    render_backward(dev, SplatBatch{xy, chol, rgb, mask, batch, n}, make_frame(height, width, cutoff), grad_image,
                    Grads{grad_xy, grad_chol, grad_rgb});
  });
  emu::clear_watch();
  return status;
}
