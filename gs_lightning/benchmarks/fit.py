"""Fitting quality, pruning and throughput on the embedded photos (224x224).

    python -m gs_lightning.benchmarks.fit [--section quality|pruning|throughput|all] [--photos 8]

quality     PSNR after --iterations (3000) at 400 / 1024 / 2304 / 3136 / 4900
            Gaussians, structured vs random init (paper 4.3, Fig. 3), under our
            fitting recipe and under GaussianImage's; writes a plot.
pruning     pruning ratio and PSNR cost of luminance pruning vs no pruning (paper 4.4).
throughput  images/s at 400 Gaussians for a fixed iteration count: batch 1 run
            image after image vs the whole batch at once (the CPU analogue of Fig. 2).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from gs_lightning.benchmarks.common import print_table
from gs_lightning.data.demo import PHOTOS, photo_array
from gs_lightning.data.shards import BadSample, decode_image, existing_sources, resize_center_crop
from gs_lightning.config import FitConfig, PruneConfig, load_fit_config
from gs_lightning.fit.fitter import fit_batch
from gs_lightning.splats import compression_ratio

SIZE = 224
COUNTS = (400, 1024, 2304, 3136, 4900)
PAPER = {400: (25.75, 18.48), 4900: (33.07, 21.09)}  # structured, random (paper 4.3)
# Fitting recipes, as config overlays: ours (the shipped default), and GaussianImage's, the fitting the
# paper builds on and compares its inits under.
RECIPES = {"ours": ["fit"], "gaussianimage": ["fit", "fit_gaussianimage"]}
RECIPE_NOTES = {
    "ours": "experiments/fit.yaml: log scales, per-parameter lr, cosine decay",
    "gaussianimage": "+ fit_gaussianimage: GaussianImage's raw Cholesky factors, Adam at lr 1e-3",
}


def photos(count: int, source: str | None = None) -> torch.Tensor:  # [count, 3, SIZE, SIZE]
    """The embedded photos, or the first `count` images of a shard pattern or image folder, resized and
    centre-cropped as `fit` does."""
    out = []
    if source is None:
        for name, _ in PHOTOS[:count]:
            a = torch.from_numpy(photo_array(name)).float() / 255
            a = a[None].expand(3, *a.shape) if a.dim() == 2 else a.permute(2, 0, 1)
            out.append(resize_center_crop(a.contiguous(), SIZE))
        return torch.stack(out)
    errors: list = []
    for s in existing_sources(source, "--input", "Give a shard pattern or a folder of images."):
        for sample in s.samples(errors):
            try:
                out.append(resize_center_crop(decode_image(sample.image), SIZE))
            except BadSample:  # no image member, or one that does not decode
                errors.append((sample.key, "not a readable image"))
            if len(out) == count:
                return torch.stack(out)
    if not out:
        raise SystemExit(f"--input {source}: no readable images ({errors[:3]})")
    return torch.stack(out)


def recipe_config(recipe: str, **changes) -> FitConfig:
    """A shipped fitting recipe (experiments/fit.yaml, plus its overlay), pruning off, with changes."""
    return replace(load_fit_config(RECIPES[recipe]), prune=PruneConfig(), **changes)


def quality(images: torch.Tensor, iterations: int, out_dir: Path, counts=COUNTS, recipes=tuple(RECIPES)) -> None:
    table, curves = {}, {}
    for recipe in recipes:
        print(f"\n== Fitting quality, {recipe} recipe: PSNR (dB) after {iterations} iterations, {len(images)} photos "
              f"at {SIZE}x{SIZE}, no pruning")
        for n in counts:  # in the order given, so the count that matters most can run first
            for init in ("structured", "random"):
                curve = curves[recipe, n, init] = []

                def record(step, loss, curve=curve):  # loss: [B] MSE of the unclamped render
                    curve.append((step, (-10 * loss.log10()).mean().item()))

                torch.manual_seed(0)  # the random init's draw: the same in every run
                t0 = time.perf_counter()
                _, stats = fit_batch(images, recipe_config(recipe, num_splats=n, iterations=iterations, init=init),
                                     callback=record)
                table[recipe, n, init] = stats.psnr
                curve.append((iterations, stats.psnr.mean().item()))
                print(f"  {n:5d} {init:10s} mean {stats.psnr.mean():.2f} dB  ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    counts = sorted(counts)
    for recipe in recipes:
        rows = []
        for n in counts:
            s, r = table[recipe, n, "structured"], table[recipe, n, "random"]
            paper = PAPER.get(n)
            # Convergence (paper Fig. 3): the first logged iteration at which structured init is as good as
            # random init after all its iterations.
            catch_up = next((step for step, v in curves[recipe, n, "structured"] if v >= r.mean().item()), None)
            rows.append([n, f"{compression_ratio(SIZE, SIZE, n):.1f}x", f"{s.mean():.2f}", f"{s.min():.2f}",
                         f"{r.mean():.2f}", f"{(s - r).mean():+.2f}", catch_up if catch_up is not None else "-",
                         f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "-"])
        print(f"\n{recipe} recipe ({RECIPE_NOTES[recipe]}):")
        print_table(["Gaussians", "compression", "structured", "(min)", "random", "gain",
                     f"it. to random@{iterations}", "paper s / r"], rows)
    _plot_quality(table, curves, counts, recipes, iterations, out_dir / "fit_quality.png")


def _plot_quality(table: dict, curves: dict, counts, recipes, iterations: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 1 + len(recipes), figsize=(5.5 * (1 + len(recipes)), 3.8))
    ax = axes[0]
    for recipe, line in zip(recipes, ("-", ":")):
        for init, (marker, colour) in (("structured", ("o", "tab:green")), ("random", ("s", "tab:gray"))):
            ax.plot(counts, [table[recipe, n, init].mean().item() for n in counts], marker + line, color=colour,
                    label=f"{init} init, {recipe}")
    for n, (s, r) in PAPER.items():
        if n in counts:
            ax.plot([n, n], [s, r], "kx", ms=7)
    ax.plot([], [], "kx", label="paper (4.3)")
    ax.set_xlabel("Gaussians per image (224x224)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Fitting quality after {iterations} iterations")
    for recipe, conv in zip(recipes, axes[1:]):
        for n, colour in zip(sorted({counts[0], counts[-1]}), ("tab:blue", "tab:red")):
            for init, style in (("structured", "-"), ("random", "--")):
                steps, psnr = zip(*curves[recipe, n, init])
                conv.plot(steps, psnr, style, color=colour, label=f"{n} Gaussians, {init}")
        conv.set_xlabel("iteration")
        conv.set_ylabel("mean PSNR (dB)")
        conv.set_title(f"Convergence, {recipe} recipe")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"  plot: {path}")


def pruning(images: torch.Tensor, iterations: int, n: int = 400) -> None:
    print(f"\n== Pruning at {n} Gaussians, {iterations} iterations: ratio and PSNR cost vs no pruning")
    shipped = load_fit_config(RECIPES["ours"]).prune  # experiments/fit.yaml
    base = recipe_config("ours", num_splats=n, iterations=iterations)
    _, ref = fit_batch(images, base)
    rows = []
    for label, prune in [("shipped default", shipped)] + [
        (f"threshold {t}", replace(shipped, threshold=t)) for t in (0.01, 0.04, 0.08)
    ]:
        _, st = fit_batch(images, replace(base, prune=prune))
        ratio = 1 - (st.n_final.sum() / st.n_init.sum()).item()
        rows.append([label, prune.l1_weight, prune.threshold, f"{100 * ratio:.1f}%", f"{st.psnr.mean():.2f}",
                     f"{(st.psnr - ref.psnr).mean():+.2f}",
                     f"{compression_ratio(SIZE, SIZE, st.n_final.float().mean().item()):.1f}x"])
    print(f"  no pruning: {ref.psnr.mean():.2f} dB")
    print_table(["setting", "l1_weight", "threshold", "pruned", "PSNR", "cost (dB)", "compression"], rows)


def throughput(images: torch.Tensor, iterations: int, batch: int = 64) -> None:
    print(f"\n== Fitting throughput at {SIZE}x{SIZE}, 400 Gaussians, {iterations} iterations, "
          f"{torch.get_num_threads()} threads")
    stack = images.repeat((batch + len(images) - 1) // len(images), 1, 1, 1)[:batch]
    cfg = recipe_config("ours", num_splats=400, iterations=iterations)
    fit_batch(stack[:2], replace(cfg, iterations=5))  # warm up
    t0 = time.perf_counter()
    for i in range(batch):
        fit_batch(stack[i : i + 1], cfg)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_batch(stack, cfg)
    many = time.perf_counter() - t0
    print_table(["mode", "images", "seconds", "images/s"],
                [["batch 1, image after image", batch, f"{one:.1f}", f"{batch / one:.2f}"],
                 [f"batch {batch}", batch, f"{many:.1f}", f"{batch / many:.2f}"]])
    print(f"  speedup of the batch: {one / many:.2f}x")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=("quality", "pruning", "throughput", "all"), default="all")
    p.add_argument("--photos", type=int, default=len(PHOTOS))
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--throughput-iterations", type=int, default=50)
    p.add_argument("--counts", type=int, nargs="+", default=list(COUNTS), help="Gaussians per image (quality)")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="(quality)")
    p.add_argument("--out", default="outputs/bench")
    a = p.parse_args(argv)
    images = photos(a.photos)
    if a.section in ("quality", "all"):
        quality(images, a.iterations, Path(a.out), a.counts, a.recipes)
    if a.section in ("pruning", "all"):
        pruning(images, a.iterations)
    if a.section in ("throughput", "all"):
        throughput(images, a.throughput_iterations)


if __name__ == "__main__":
    main()
