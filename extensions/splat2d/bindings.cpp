// pybind11 module gs_lightning._C: one forward and one backward entry for the
// splat sum render, dispatched on the tensors' device, and fitting's fused L2
// loss (CPU), and the CPU backend's SIMD paths. gs_lightning/render.py
// is its only caller and gives the friendly errors; the checks here keep a
// direct call from reading out of bounds.
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <optional>

#include "backends.h"
#include "splat2d.h"

namespace {

void check_inputs(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                  const torch::Tensor& mask) {
  TORCH_CHECK(xy.dim() == 3 && xy.size(2) == 2, "splat2d: xy must be [B, N, 2], got ", xy.sizes());
  const auto B = xy.size(0), N = xy.size(1);
  TORCH_CHECK(chol.dim() == 3 && chol.size(0) == B && chol.size(1) == N && chol.size(2) == 3,
              "splat2d: chol must be [B, N, 3] = [", B, ", ", N, ", 3], got ", chol.sizes());
  TORCH_CHECK(rgb.dim() == 3 && rgb.size(0) == B && rgb.size(1) == N && rgb.size(2) == 3,
              "splat2d: rgb must be [B, N, 3] = [", B, ", ", N, ", 3], got ", rgb.sizes());
  TORCH_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == N,
              "splat2d: mask must be [B, N] = [", B, ", ", N, "], got ", mask.sizes());
  for (const auto* t : {&xy, &chol, &rgb}) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat32, "splat2d: xy, chol and rgb must be float32");
    TORCH_CHECK(t->is_contiguous(), "splat2d: xy, chol and rgb must be contiguous");
    TORCH_CHECK(t->device() == xy.device(), "splat2d: all inputs must be on one device");
  }
  TORCH_CHECK(mask.scalar_type() == torch::kBool && mask.is_contiguous() && mask.device() == xy.device(),
              "splat2d: mask must be a contiguous bool tensor on the device of xy");
}

// Limits of both backends: N fits the int32 Gaussian ids of the CUDA bins, and a side's tiles fit a
// CUDA grid's y (at most 65535), which also keeps it below 2^20 pixels.
void check_sizes(const torch::Tensor& xy, int64_t height, int64_t width) {
  TORCH_CHECK(height > 0 && width > 0, "splat2d: height and width must be positive, got ", height, "x", width);
  TORCH_CHECK(xy.size(1) < (int64_t(1) << 30), "splat2d: N = ", xy.size(1), " splats per image is too many");
  constexpr int64_t kMaxSide = int64_t(65535) * splat2d::kTile;
  TORCH_CHECK(height <= kMaxSide && width <= kMaxSide, "splat2d: image size ", height, "x", width,
              " is too large (at most ", kMaxSide, " a side)");
}

// (image, binning): binning, for backward, is the CPU backend's (None on CUDA).
py::tuple forward(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                  const torch::Tensor& mask, int64_t height, int64_t width, double cutoff) {
  check_inputs(xy, chol, rgb, mask);
  check_sizes(xy, height, width);
  if (xy.is_cuda()) {
#ifdef WITH_CUDA
    return py::make_tuple(splat2d::forward_cuda(xy, chol, rgb, mask, height, width, cutoff), py::none());
#else
    TORCH_CHECK(false, "splat2d: gs_lightning._C was built without CUDA; rebuild with a CUDA toolkit (FORCE_CUDA=1)");
#endif
  }
  auto [image, binning] = splat2d::forward_cpu(xy, chol, rgb, mask, height, width, cutoff);
  return py::make_tuple(image, binning);
}

// An image-shaped argument (grad_image, target): [B, 3, H, W], contiguous float32, beside xy.
void check_image(const torch::Tensor& xy, const torch::Tensor& image, const char* name) {
  TORCH_CHECK(image.dim() == 4 && image.size(0) == xy.size(0) && image.size(1) == 3, "splat2d: ", name,
              " must be [B, 3, H, W], got ", image.sizes());
  TORCH_CHECK(image.scalar_type() == torch::kFloat32 && image.is_contiguous() && image.device() == xy.device(),
              "splat2d: ", name, " must be a contiguous float32 tensor on the device of xy");
  check_sizes(xy, image.size(2), image.size(3));
}

std::vector<torch::Tensor> backward(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                                    const torch::Tensor& mask, const torch::Tensor& grad_image, double cutoff,
                                    std::optional<splat2d::CpuBinningHandle> binning) {
  check_inputs(xy, chol, rgb, mask);
  check_image(xy, grad_image, "grad_image");
  if (xy.is_cuda()) {
    TORCH_CHECK(!binning, "splat2d: a CPU binning was passed to the CUDA backward");
#ifdef WITH_CUDA
    return splat2d::backward_cuda(xy, chol, rgb, mask, grad_image, cutoff);
#else
    TORCH_CHECK(false, "splat2d: gs_lightning._C was built without CUDA; rebuild with a CUDA toolkit (FORCE_CUDA=1)");
#endif
  }
  return splat2d::backward_cpu(xy, chol, rgb, mask, grad_image, cutoff, binning ? &*binning : nullptr);
}

std::vector<torch::Tensor> l2_loss(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                                   const torch::Tensor& mask, const torch::Tensor& target, double cutoff) {
  check_inputs(xy, chol, rgb, mask);
  check_image(xy, target, "target");
  TORCH_CHECK(!xy.is_cuda(), "splat2d: l2_loss runs on the CPU backend only");
  return splat2d::l2_loss_cpu(xy, chol, rgb, mask, target, cutoff);
}

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Batched 2D Gaussian splat sum render (paper Eq. 1), CPU and CUDA backends";
  py::class_<splat2d::CpuBinningHandle>(m, "CpuBinning", "A CPU forward's binned splats, for its backward");
  m.def("forward", &forward, "Render [B, 3, H, W] from splats: (image, binning for backward, None on CUDA)",
        py::arg("xy"), py::arg("chol"), py::arg("rgb"), py::arg("mask"), py::arg("height"), py::arg("width"),
        py::arg("cutoff"));
  m.def("backward", &backward, "Gradients (xy, chol, rgb) of a render; binning: its forward's, or None to bin again",
        py::arg("xy"), py::arg("chol"), py::arg("rgb"), py::arg("mask"), py::arg("grad_image"), py::arg("cutoff"),
        py::arg("binning") = py::none());
  m.def("l2_loss", &l2_loss, "Per-image mean squared error of the render against target, and its gradients",
        py::arg("xy"), py::arg("chol"), py::arg("rgb"), py::arg("mask"), py::arg("target"), py::arg("cutoff"));
  m.def("has_cuda", &has_cuda, "Whether this build carries the CUDA backend");
  m.def("simd_paths", &splat2d::simd_path_names, "The CPU backend's SIMD paths this CPU runs, fastest first");
  m.def("simd_path", &splat2d::simd_path_name, "The SIMD path the CPU backend uses now (GS_LIGHTNING_SIMD)");
}
