// CUDA backend: the host side. The kernels and the binning live in render.cuh / binning.cuh (torch-free,
// also run by the emulator in tests/cuda_emu); this file supplies their Device: memory from torch's
// caching allocator, launches on the current stream, and CUB's scan and stable radix sort through
// ATen (instantiated in libtorch_cuda, so this build compiles no CUB of its own).
//
// It defines the CUDA entries that backends.h declares without including it: torch/extension.h makes
// nvcc four times slower per architecture than these ATen headers. A signature that drifts from the
// declaration leaves an undefined symbol, which `make cuda-build` reports when it imports the build.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/cuda/cub.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>
#include <vector>

#include "render.cuh"

namespace splat2d {
namespace {

class CudaDevice {
 public:
  static constexpr int64_t max_images = kImagesPerLaunch;

  explicit CudaDevice(const at::Tensor& like)
      : bytes_(like.options().dtype(at::kByte)), stream_(c10::cuda::getCurrentCUDAStream()) {}

  template <class T>
  T* alloc(int64_t count) {
    scratch_.push_back(at::empty({std::max<int64_t>(count, 1) * int64_t(sizeof(T))}, bytes_));
    return reinterpret_cast<T*>(scratch_.back().data_ptr());
  }

  // The caching allocator reuses freed blocks in stream order, so kernels still queued are safe.
  void release_scratch() { scratch_.clear(); }

  template <class... Params, class... Args>
  void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    kernel<<<grid, block, 0, stream_>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  void inclusive_sum(const int64_t* in, int64_t* out, int64_t n) {
    if (n > 0) at::cuda::cub::inclusive_sum(in, out, n);
  }

  void sort_pairs(const int64_t* keys, int64_t* sorted_keys, const int* ids, int* sorted_ids, int64_t n, int bits) {
    TORCH_CHECK(n <= INT_MAX, "splat2d (cuda): ", n, " (tile, Gaussian) pairs in one launch; render fewer images "
                "per call");
    if (n > 0) at::cuda::cub::radix_sort_pairs(keys, sorted_keys, ids, sorted_ids, n, false, 0, bits);
  }

  int64_t read(const int64_t* value) {
    int64_t host = 0;
    C10_CUDA_CHECK(cudaMemcpyAsync(&host, value, sizeof(host), cudaMemcpyDeviceToHost, stream_));
    C10_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return host;
  }

 private:
  at::TensorOptions bytes_;
  cudaStream_t stream_;
  std::vector<at::Tensor> scratch_;
};

SplatBatch splat_batch(const at::Tensor& xy, const at::Tensor& chol, const at::Tensor& rgb,
                       const at::Tensor& mask) {
  return SplatBatch{xy.data_ptr<float>(), chol.data_ptr<float>(), rgb.data_ptr<float>(), mask.data_ptr<bool>(),
                    xy.size(0), int(xy.size(1))};
}

}  // namespace

at::Tensor forward_cuda(const at::Tensor& xy, const at::Tensor& chol, const at::Tensor& rgb, const at::Tensor& mask,
                        int64_t height, int64_t width, double cutoff) {
  const c10::cuda::CUDAGuard guard(xy.device());
  // Every pixel is written by its tile's block, so no zero fill.
  auto image = at::empty({xy.size(0), 3, height, width}, xy.options());
  CudaDevice dev(xy);
  render_forward(dev, splat_batch(xy, chol, rgb, mask), make_frame(int(height), int(width), float(cutoff)),
                 image.data_ptr<float>());
  return image;
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& xy, const at::Tensor& chol, const at::Tensor& rgb,
                                      const at::Tensor& mask, const at::Tensor& grad_image, double cutoff) {
  const c10::cuda::CUDAGuard guard(xy.device());
  auto grad_xy = at::zeros_like(xy);
  auto grad_chol = at::zeros_like(chol);
  auto grad_rgb = at::zeros_like(rgb);
  CudaDevice dev(xy);
  render_backward(dev, splat_batch(xy, chol, rgb, mask),
                  make_frame(int(grad_image.size(2)), int(grad_image.size(3)), float(cutoff)),
                  grad_image.data_ptr<float>(),
                  Grads{grad_xy.data_ptr<float>(), grad_chol.data_ptr<float>(), grad_rgb.data_ptr<float>()});
  return {grad_xy, grad_chol, grad_rgb};
}

}  // namespace splat2d
