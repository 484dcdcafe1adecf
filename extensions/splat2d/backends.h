// Entry points of the two backends. Both take contiguous float32 tensors that
// bindings.cpp has already checked:
//   xy    [B, N, 2]  centres, pixels
//   chol  [B, N, 3]  (l11, l21, l22), l11, l22 > 0
//   rgb   [B, N, 3]  colours
//   mask  [B, N]     bool, false rows contribute nothing and get zero gradient
//   image / grad_image [B, 3, H, W]
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace splat2d {

// A CPU forward's binned splats (defined in cpu/splat2d_cpu.cpp), which its backward
// reuses: binning the batch again cost a batch-1 backward a tenth of its time.
struct CpuBinning;
struct CpuBinningHandle {
  std::shared_ptr<const CpuBinning> binning;
};

// Returns the image [B, 3, H, W] and the call's binning.
std::pair<torch::Tensor, CpuBinningHandle> forward_cpu(const torch::Tensor& xy, const torch::Tensor& chol,
                                                       const torch::Tensor& rgb, const torch::Tensor& mask,
                                                       int64_t height, int64_t width, double cutoff);

// Returns {grad_xy [B, N, 2], grad_chol [B, N, 3], grad_rgb [B, N, 3]}. forward: the forward's binning
// of these splats, or null to bin them again.
std::vector<torch::Tensor> backward_cpu(const torch::Tensor& xy, const torch::Tensor& chol,
                                        const torch::Tensor& rgb, const torch::Tensor& mask,
                                        const torch::Tensor& grad_image, double cutoff,
                                        const CpuBinningHandle* forward);

// Fitting's L2 loss on the CPU: per image the mean over (3, H, W) of (render - target)^2, target
// [B, 3, H, W], and its gradients. Returns {loss [B], grad_xy, grad_chol, grad_rgb}.
std::vector<torch::Tensor> l2_loss_cpu(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                                       const torch::Tensor& mask, const torch::Tensor& target, double cutoff);

// The CPU backend's SIMD paths that this CPU runs, fastest first, and the one in use:
// GS_LIGHTNING_SIMD (avx512 | avx2 | portable | scalar | auto) or, unset, the fastest.
std::vector<std::string> simd_path_names();
std::string simd_path_name();

#ifdef WITH_CUDA
// Defined in cuda/splat2d_cuda.cu, which does not include this header (see there): keep both in step.
torch::Tensor forward_cuda(const torch::Tensor& xy, const torch::Tensor& chol, const torch::Tensor& rgb,
                           const torch::Tensor& mask, int64_t height, int64_t width, double cutoff);

std::vector<torch::Tensor> backward_cuda(const torch::Tensor& xy, const torch::Tensor& chol,
                                         const torch::Tensor& rgb, const torch::Tensor& mask,
                                         const torch::Tensor& grad_image, double cutoff);
#endif

}  // namespace splat2d
