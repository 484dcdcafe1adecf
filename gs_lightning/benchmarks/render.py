"""Rasterizer speed: compiled backend vs the dense reference, and thread scaling.

    python -m gs_lightning.benchmarks.render [--quick]

Splats are laid out like a fitted set (grid centres with jitter, each
Gaussian about a grid cell wide), so the pair counts are those of real work.
The dense reference runs at batch 1 only (at B=64 x 3136 splats its
[B, N, H*W] intermediates would need tens of GB); its per-image time is the
denominator of every speedup.
"""
import argparse
import math

import torch

from gs_lightning.benchmarks.common import interleaved_seconds, num_threads, print_table
from gs_lightning.render import CUTOFF, rasterize, render_reference
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


def upstream(batch: int, device: str = "cpu") -> torch.Tensor:  # [batch, 3, SIZE, SIZE]
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8 only, one repetition")
    args = parser.parse_args(argv)
    batches = (1, 8) if args.quick else (1, 8, 64)
    reps = 1 if args.quick else 7
    threads = torch.get_num_threads()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"Rasterizer, {SIZE}x{SIZE}, forward+backward, backend '{device}' vs dense reference; "
          f"{threads} threads available, cut-off s2 <= {CUTOFF:.2f}")
    rows = []
    for n in (400, 3136):
        with num_threads(threads):
            dense_splats, dense_grad = fitted_like_splats(1, n), upstream(1)
            dense = interleaved_seconds({0: lambda: fwd_bwd(dense_splats, "torch", dense_grad)}, reps=1)[0]
        for batch in batches:
            s = fitted_like_splats(batch, n)
            pairs = evaluated_pairs(s)
            sd, grad = s.to(device), upstream(batch, device)

            def run(k: int):
                with num_threads(k):
                    fwd_bwd(sd, device, grad)

            scaling = device == "cpu" and threads > 1
            fns = {threads: lambda: run(threads)} | ({1: lambda: run(1)} if scaling else {})
            t = interleaved_seconds(fns, reps=reps)
            t_all = t[threads]
            row = [n, batch, f"{1e3 * t_all / batch:.2f}", f"{2 * pairs / t_all / 1e6:.0f}",
                   f"{2 * n * SIZE * SIZE * batch / t_all / 1e9:.1f}", f"{dense * batch / t_all:.0f}x"]
            if scaling:
                row.append(f"{t[1] / t_all:.2f}x")
            rows.append(row)
        print(f"  dense reference, {n} splats, batch 1: {1e3 * dense:.0f} ms per image")
    headers = ["splats", "batch", "ms/image", "Mpairs/s (visited)", "Gpairs/s (dense-equiv.)", "vs dense"]
    if device == "cpu" and threads > 1:
        headers.append(f"{threads} vs 1 thread")
    print_table(headers, rows)


if __name__ == "__main__":
    main()
