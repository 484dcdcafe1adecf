"""Rasterizer speed: the CPU backend on each SIMD path next to its scalar path and the dense
reference, and thread scaling.

    python -m gs_lightning.benchmarks.render [--quick]

With a CUDA device and a CUDA build, gpu_benchmark runs instead (batches up to 4096, Fig. 2).

Splats are laid out like a fitted set (grid centres with jitter, each
Gaussian about a grid cell wide), so the pair counts are those of real work.
The dense reference runs at batch 1 only (at B=64 x 3136 splats its
[B, N, H*W] intermediates would need tens of GB); its per-image time is the
denominator of every speedup.
"""
import argparse
import math

import torch

from gs_lightning.benchmarks.common import interleaved_seconds, num_threads, print_table, simd_path
from gs_lightning.render import CUTOFF, SIMD_ENV, cuda_backend_available, l2_loss, rasterize, render_reference, simd_paths
from gs_lightning.splats import Splats

SIZE = 224


def fitted_like_splats(batch: int, n: int, size: int = SIZE, seed: int = 0) -> Splats:
    g = torch.Generator().manual_seed(seed)
    side = math.ceil(math.sqrt(n))
    cell = size / side
    idx = torch.arange(n)
    centre = torch.stack([(idx % side + 0.5) * cell, (idx // side + 0.5) * cell], -1)
    xy = centre + (torch.rand(batch, n, 2, generator=g) - 0.5) * cell
    l11 = cell * (0.3 + 0.4 * torch.rand(batch, n, generator=g))
    l22 = cell * (0.3 + 0.4 * torch.rand(batch, n, generator=g))
    l21 = 0.3 * cell * torch.randn(batch, n, generator=g)
    rgb = torch.rand(batch, n, 3, generator=g) * 0.5
    mask = torch.ones(batch, n, dtype=torch.bool)
    return Splats(xy, torch.stack([l11, l21, l22], -1), rgb, mask)


def evaluated_pairs(s: Splats, size: int = SIZE) -> int:
    """Pixel-Gaussian pairs the tiled backends visit: each Gaussian's cut-off box on the image."""
    l11, l21, l22 = s.chol.unbind(-1)
    rx, ry = (CUTOFF * l11**2).sqrt(), (CUTOFF * (l21**2 + l22**2)).sqrt()
    x, y = s.xy.unbind(-1)
    w = ((x + rx).clamp(0, size) - (x - rx).clamp(0, size)).clamp(min=0)
    h = ((y + ry).clamp(0, size) - (y - ry).clamp(0, size)).clamp(min=0)
    return int((w * h).sum())


def fwd_bwd(s: Splats, backend: str, grad: torch.Tensor):  # grad: [B, 3, SIZE, SIZE] upstream gradient
    # A fixed upstream gradient rather than a loss on the image: a loss would add
    # memory-bound passes over [B, 3, H, W] that are not the rasterizer's.
    leaves = [t.detach().requires_grad_(True) for t in (s.xy, s.chol, s.rgb)]
    sp = Splats(*leaves, s.mask)
    if backend == "torch":
        image = render_reference(sp, SIZE, SIZE, cutoff=CUTOFF)
    else:
        image = rasterize(sp, SIZE, SIZE, backend=backend)
    image.backward(grad)


def loss_step(s: Splats, target: torch.Tensor, fused: bool):  # target: [B, 3, SIZE, SIZE]
    """A fitting step's loss and gradients: the fused l2_loss, or rasterize, the loss in torch and the backward."""
    leaves = [t.detach().requires_grad_(True) for t in (s.xy, s.chol, s.rgb)]
    sp = Splats(*leaves, s.mask)
    loss = l2_loss(sp, target) if fused else (rasterize(sp, SIZE, SIZE) - target).square().mean(dim=(1, 2, 3))
    loss.sum().backward()


def upstream(batch: int, device: str = "cpu") -> torch.Tensor:  # [batch, 3, SIZE, SIZE]
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(device)


def gpu_benchmark(quick: bool = False) -> dict:
    """The CUDA backend: fwd+bwd ms/image and images/s at batch 1 .. 4096, the speedup of one batch of
    4096 over the same work image after image (the paper's Fig. 2), and time vs N at constant footprint.
    Prints the tables and returns their figures (the GPU check's report reads them)."""
    batches = (1, 64) if quick else (1, 64, 1024, 4096)
    reps = 1 if quick else 5
    singles = 16 if quick else 64  # batch 1 is timed over this many images, one call after another
    print(f"Rasterizer on {torch.cuda.get_device_name()}, {SIZE}x{SIZE}, forward+backward, cut-off s2 <= {CUTOFF:.2f}")

    def seconds_per_image(n: int, batch: int, calls: int = 1) -> tuple[float, float]:
        """(seconds per image, visited pairs per image) for `calls` launches of `batch` images each."""
        s = fitted_like_splats(batch * calls, n).to("cuda")
        grad = torch.randn(batch * calls, 3, SIZE, SIZE, device="cuda")
        parts = [(Splats(*(x[k : k + batch] for x in (s.xy, s.chol, s.rgb, s.mask))), grad[k : k + batch])
                 for k in range(0, batch * calls, batch)]
        t = interleaved_seconds({0: lambda: [fwd_bwd(sk, "cuda", gk) for sk, gk in parts]}, reps=reps)[0]
        pairs = evaluated_pairs(s) / (batch * calls)
        del s, grad, parts
        torch.cuda.empty_cache()
        return t / (batch * calls), pairs

    rows, per_image, figures = [], {}, {"device": torch.cuda.get_device_name(), "batches": [], "fig2": {}}
    for n in (400, 3136):
        for batch in batches:
            per_image[n, batch], pairs = seconds_per_image(n, batch, singles if batch == 1 else 1)
            t = per_image[n, batch]
            rows.append([n, batch, f"{1e3 * t:.3f}", f"{1 / t:.0f}", f"{2 * pairs / t / 1e9:.2f}",
                         f"{per_image[n, 1] / t:.1f}x"])
            figures["batches"].append({"splats": n, "batch": batch, "ms_per_image": 1e3 * t, "images_per_s": 1 / t,
                                       "gpairs_per_s": 2 * pairs / t / 1e9, "vs_batch1": per_image[n, 1] / t})
    print_table(["splats", "batch", "ms/image", "images/s", "Gpairs/s (visited)", "vs batch 1"], rows)
    for n in (400, 3136):
        figures["fig2"][str(n)] = {"batch": batches[-1], "speedup": per_image[n, 1] / per_image[n, batches[-1]]}
        print(f"  Fig. 2, {n} splats: batch {batches[-1]} renders {per_image[n, 1] / per_image[n, batches[-1]]:.1f}x "
              f"the images/s of batch 1 image after image")

    # fitted_like_splats shrinks each splat with its grid cell (SIZE / sqrt(N)), so the pairs visited per
    # image stay about constant: a rasterizer whose cost follows the footprint keeps its time too.
    batch = 64
    footprint = {n: seconds_per_image(n, batch) for n in (400, 4900, 20000)}
    rows = [[n, f"{SIZE / math.ceil(math.sqrt(n)):.1f}", f"{pairs / 1e6:.2f}", f"{1e3 * t:.3f}",
             f"{t / footprint[400][0]:.2f}x"] for n, (t, pairs) in footprint.items()]
    print(f"Time vs N at constant footprint (batch {batch}):")
    print_table(["splats", "grid cell px", "Mpairs/image", "ms/image", "vs 400"], rows)
    figures["footprint"] = [{"splats": n, "mpairs_per_image": pairs / 1e6, "ms_per_image": 1e3 * t,
                             "vs_400": t / footprint[400][0]} for n, (t, pairs) in footprint.items()]
    return figures


def cpu_benchmark(quick: bool = False) -> None:
    """The CPU backend on each SIMD path this CPU runs, next to the scalar path, timed in turn within every
    repetition; and the fastest path on 1 thread, for the thread scaling."""
    batches = (1, 8) if quick else (1, 64)
    reps = 1 if quick else 7
    threads = torch.get_num_threads()
    paths = simd_paths()
    print(f"Rasterizer, CPU backend, {SIZE}x{SIZE}, forward+backward per image; SIMD paths {', '.join(paths)} "
          f"({SIMD_ENV}); {threads} threads; cut-off s2 <= {CUTOFF:.2f}")
    rows, scaling = [], []
    for n in (400, 3136):
        dense_splats, dense_grad = fitted_like_splats(1, n), upstream(1)
        dense = interleaved_seconds({0: lambda: fwd_bwd(dense_splats, "torch", dense_grad)}, reps=1)[0]
        for batch in batches:
            s, grad = fitted_like_splats(batch, n), upstream(batch)
            pairs = evaluated_pairs(s)

            def run(path: str, k: int = threads):
                with simd_path(path), num_threads(k):
                    fwd_bwd(s, "cpu", grad)

            fns = {(p, threads): lambda p=p: run(p) for p in paths}
            if threads > 1:
                fns[paths[0], 1] = lambda: run(paths[0], 1)
            t = interleaved_seconds(fns, reps=reps)
            for p in paths:
                tp = t[p, threads]
                rows.append([n, batch, p, f"{1e3 * tp / batch:.2f}", f"{2 * pairs / tp / 1e6:.0f}",
                             f"{t['scalar', threads] / tp:.2f}x", f"{dense * batch / tp:.0f}x"])
            if threads > 1:
                scaling.append(f"{n} splats, batch {batch}: {t[paths[0], 1] / t[paths[0], threads]:.2f}x")
        print(f"  dense reference, {n} splats, batch 1: {1e3 * dense:.0f} ms per image")
    print_table(["splats", "batch", "path", "ms/image", "Mpairs/s (visited)", "vs scalar", "vs dense"], rows)
    if scaling:
        print(f"  {paths[0]}, {threads} vs 1 thread: " + "; ".join(scaling))

    # Fitting's step: the fused loss renders, takes the residual and runs the backward of a tile in cache,
    # reusing the render's weights; the separate calls write the image, and the backward evaluates every
    # pair's weight again.
    batch, rows = batches[-1], []
    for n in (400, 3136):
        s = fitted_like_splats(batch, n)
        target = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
        t = interleaved_seconds({fused: lambda fused=fused: loss_step(s, target, fused) for fused in (True, False)},
                                reps=reps)
        rows.append([n, batch, f"{1e3 * t[True] / batch:.2f}", f"{1e3 * t[False] / batch:.2f}",
                     f"{t[False] / t[True]:.2f}x"])
    print(f"Fitting's L2 loss and its gradients, {paths[0]}: the fused l2_loss against rasterize + loss + backward")
    print_table(["splats", "batch", "fused ms/image", "separate ms/image", "fused speed-up"], rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8 only, one repetition")
    args = parser.parse_args(argv)
    if torch.cuda.is_available() and cuda_backend_available():
        gpu_benchmark(args.quick)
    else:
        cpu_benchmark(args.quick)


if __name__ == "__main__":
    main()
