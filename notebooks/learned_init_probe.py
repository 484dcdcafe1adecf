"""A probe of a learned init for the fit, not part of it: how much a per-Gaussian predictor trained by the
project could move the oriented init towards its own fitted splats, and what that buys at equal iterations.

    python notebooks/learned_init_probe.py --train FOLDER --eval FOLDER|embedded [--eval ...] [--net PATH]
                                           [--num-splats 400] [--crops 1536] [--epochs 10]

Training data: --crops random square crops of the --train images (any side from 224 to 90% of the image's
shorter one, resized to 224), each fitted by the default recipe for 300 iterations from its oriented init.
The predictor is an MLP applied to each Gaussian alone. Its input is the image and the residual of the
init's render (colours solved), sampled on a 7x7 grid in the Gaussian's own frame (xy + L g, g within 2.4
sigmas), plus its log sigmas. Its output is the fitted Gaussian in that frame: the centre's move L^-1 d, and
the log of the fitted covariance whitened by the init's, L^-1 Sigma L^-T. A refinement applies it and solves
the colours again; `twice` refines the refined start once more with the same net.

For each --eval set (the first 13 photos of a folder, or the embedded ones; batch 64, the photos repeated)
it prints the PSNR of the start and after 60 / 100 / 200 default iterations from it, for the init, one
refinement and two; then, side by side, the wall ms per image of the bench's time-to-quality target
(benchmarks/fit.py REFERENCE) and of each of ROUTES, everything counted: two refinements plus 60 / 100 / 200
iterations, and coarse-to-fine steps (fit.coarse_iterations) from the oriented init and from two refinements.
--net: the predictor's weights, loaded if the file exists, else trained and saved there.
"""
from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor, nn

from gs_lightning.benchmarks.fit import REFERENCE, batch_of, named_photos, recipe_config
from gs_lightning.data.shards import FOLDER_EXTS, decode_image
from gs_lightning.fit.fitter import colours_for, fit_batch, fit_start, psnr_per_image
from gs_lightning.fit.parameterization import axes_to_pixels
from gs_lightning.render import rasterize
from gs_lightning.splats import Splats

SIZE = 224
# The timed routes: (refinements, fit.coarse_iterations, full-resolution iterations). The coarse ones stack the
# learned init with coarse-to-fine, beside coarse-to-fine from the oriented init alone.
ROUTES = ((2, [], 60), (2, [], 100), (2, [], 200), (0, [60], 60), (2, [60], 60), (0, [100], 100), (2, [100], 100),
          (0, [150], 80), (2, [150], 80))
EXTENT = torch.linspace(-2.4, 2.4, 7)
GRID = torch.stack(torch.meshgrid(EXTENT, EXTENT, indexing="xy"), -1).reshape(-1, 2)  # [49, 2] sigmas


def lower(chol: Tensor) -> Tensor:  # [..., 3] l11, l21, l22 -> [..., 2, 2] L
    l11, l21, l22 = chol.unbind(-1)
    zero = torch.zeros_like(l11)
    return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)


def features(images: Tensor, start: Splats) -> Tensor:  # [B, 3, H, W], colours solved -> [B, N, 300]
    B, _, H, W = images.shape
    with torch.no_grad():
        residual = images - rasterize(start, H, W)
    p = start.xy[:, :, None] + (lower(start.chol)[:, :, None] @ GRID[..., None])[..., 0]  # [B, N, 49, 2] pixels
    g = torch.stack([p[..., 0] / W * 2 - 1, p[..., 1] / H * 2 - 1], -1)
    image = F.grid_sample(images, g, align_corners=False, padding_mode="border")  # [B, 3, N, 49]
    res = F.grid_sample(residual, g, align_corners=False)
    mean = image.mean(-1, keepdim=True)
    c = start.chol
    shape = torch.stack([c[..., 0].log(), c[..., 2].log(), c[..., 1] / c[..., 2]], -1)
    return torch.cat([(image - mean).permute(0, 2, 1, 3).flatten(2) * 4, res.permute(0, 2, 1, 3).flatten(2) * 8,
                      mean[..., 0].transpose(1, 2), shape / 3], -1)


def sym(t: Tensor) -> Tensor:  # [..., 3] -> [..., 2, 2] symmetric
    return torch.stack([t[..., :2], t[..., 1:]], -2)


def targets(start: Splats, fitted: Splats) -> Tensor:  # -> [B, N, 5]: L^-1 d, log(L^-1 Sigma L^-T) (11, 12, 22)
    inv = torch.linalg.inv(lower(start.chol))
    fit = lower(fitted.chol)
    move = (inv @ (fitted.xy - start.xy)[..., None])[..., 0]
    e, V = torch.linalg.eigh(inv @ fit @ fit.transpose(-1, -2) @ inv.transpose(-1, -2))
    log = V @ torch.diag_embed(e.clamp(min=1e-6).log()) @ V.transpose(-1, -2)
    return torch.cat([move, log[..., 0, :], log[..., 1, 1:]], -1).clamp(-3, 3)


def refine(images: Tensor, start: Splats, net: nn.Module, cfg) -> Splats:  # moves the geometry, solves colours
    with torch.no_grad():
        t = net(features(images, start))
        L = lower(start.chol)
        xy = start.xy + axes_to_pixels(start.chol, t[..., :2])
        sigma = torch.linalg.cholesky(L @ torch.linalg.matrix_exp(sym(t[..., 2:])) @ L.transpose(-1, -2))
        H, W = images.shape[-2:]
        xy = torch.stack([xy[..., 0].clamp(0, W), xy[..., 1].clamp(0, H)], -1)
        moved = replace(start, xy=xy, chol=torch.stack([sigma[..., 0, 0], sigma[..., 1, 0], sigma[..., 1, 1]], -1))
        return replace(moved, rgb=colours_for(moved, images, cfg))


def crops(folder: str, count: int, seed: int = 0) -> Tensor:  # [count, 3, SIZE, SIZE]
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in FOLDER_EXTS)
    if not files:
        raise SystemExit(f"--train {folder}: no {', '.join(FOLDER_EXTS)} images")
    images = [decode_image(f.read_bytes()) for f in files]
    rng, out = random.Random(seed), []
    for i in range(count):
        a = images[i % len(images)]
        H, W = a.shape[1:]
        side = rng.uniform(SIZE, max(SIZE, min(H, W) * 0.9))
        y, x = rng.uniform(0, H - side), rng.uniform(0, W - side)
        out.append(TF.resize(a[:, int(y):int(y + side), int(x):int(x + side)], [SIZE, SIZE], antialias=True))
    return torch.stack(out).clamp(0, 1)


def make_net() -> nn.Module:  # [M, 300] features -> [M, 5] moves, as targets() writes them
    return nn.Sequential(nn.Linear(300, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 5))


def train(X: Tensor, Y: Tensor, epochs: int, held: int) -> nn.Module:  # [M, 300], [M, 5]; the last held rows validate
    torch.manual_seed(0)
    net = make_net()
    Xt, Yt, Xv, Yv = X[:-held], Y[:-held], X[-held:], Y[-held:]
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * (len(Xt) // 2048))
    for epoch in range(epochs):
        perm = torch.randperm(len(Xt))
        for i in range(0, len(Xt) - 2047, 2048):
            j = perm[i:i + 2048]
            loss = F.smooth_l1_loss(net(Xt[j]), Yt[j], beta=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            r2 = 1 - (net(Xv) - Yv).square().mean(0) / Yv.var(0)
        print(f"  epoch {epoch}: held-out crops' R^2 per output {[round(v, 3) for v in r2.tolist()]}", flush=True)
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", action="append", required=True)
    ap.add_argument("--num-splats", type=int, default=400)
    ap.add_argument("--crops", type=int, default=1536)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--net")
    args = ap.parse_args()
    cfg = recipe_config("default", num_splats=args.num_splats)
    if args.net and Path(args.net).exists():
        net = make_net()
        net.load_state_dict(torch.load(args.net))
        evaluate(net.eval(), args, cfg)
        return
    images = crops(args.train, args.crops)
    X, Y, t0 = [], [], time.perf_counter()
    for b in range(0, len(images), 64):
        x = images[b:b + 64].contiguous()
        start = fit_start(x, cfg)
        fitted, _ = fit_batch(x, cfg, init=start)
        X.append(features(x, start).flatten(0, 1))
        Y.append(targets(start, fitted).flatten(0, 1))
        print(f"  fitted {b + len(x)} / {len(images)} crops, {time.perf_counter() - t0:.0f} s", flush=True)
    net = train(torch.cat(X), torch.cat(Y), args.epochs, held=len(Y[-1]))  # the last batch of crops validates
    if args.net:
        torch.save(net.state_dict(), args.net)
    evaluate(net, args, cfg)


def evaluate(net: nn.Module, args, cfg) -> None:
    recipe, init, budgets = REFERENCE
    reference = recipe_config(recipe, num_splats=args.num_splats, init=init, iterations=budgets[-1])
    for folder in args.eval:
        _, photos = named_photos(None, None) if folder == "embedded" else named_photos(13, folder)
        k, x = len(photos), batch_of(photos, 64)
        psnr = lambda s: psnr_per_image(rasterize(s, SIZE, SIZE), x)[:k].mean().item()  # noqa: E731
        starts = {"init": fit_start(x, cfg)}
        t0 = time.perf_counter()
        starts["once"] = refine(x, starts["init"], net, cfg)
        ms = 1000 * (time.perf_counter() - t0) / len(x)
        starts["twice"] = refine(x, starts["once"], net, cfg)
        print(f"{folder}: {args.num_splats} Gaussians, a refinement {ms:.1f} ms/image")
        for name, s in starts.items():
            after = [fit_batch(x, replace(cfg, iterations=T), init=s)[1].psnr[:k].mean().item() for T in (60, 100, 200)]
            print(f"  {name:5s} start {psnr(s):.2f} dB; after 60 / 100 / 200 it. "
                  + " / ".join(f"{p:.2f}" for p in after), flush=True)
        t0 = time.perf_counter()
        target = fit_batch(x, reference)[1].psnr[:k].mean().item()
        target_ms = 1000 * (time.perf_counter() - t0) / len(x)
        print(f"  target ({recipe}, {init} init, {budgets[-1]} it.): {target:.2f} dB in {target_ms:.1f} ms/image")
        for refined, coarse, T in ROUTES:
            t0 = time.perf_counter()
            start = fit_start(x, cfg)
            for _ in range(refined):
                start = refine(x, start, net, cfg)
            route = replace(cfg, coarse_iterations=coarse, iterations=T)
            got = fit_batch(x, route, init=start)[1].psnr[:k].mean().item()
            ms = 1000 * (time.perf_counter() - t0) / len(x)
            print(f"  {['init', 'once', 'twice'][refined]} + {coarse} + {T} it.: {got:.2f} dB in {ms:.1f} ms/image"
                  + (f", {target_ms / ms:.2f}x less time than the target" if got >= target else ", misses the target"),
                  flush=True)


if __name__ == "__main__":
    main()
