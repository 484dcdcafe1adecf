"""Rate-distortion: splat records against JPEG, WebP (and AVIF) at equal bytes.

    python -m gs_lightning.benchmarks.codec [--input SHARD_OR_FOLDER] [--counts 100,400,1024,3136]
                                            [--iterations N] [--csv PATH] [--out DIR]

Images: the embedded photos (default) or every image of a shard pattern or folder, used as given when
already the fit's size (fit.image_size) and otherwise resized and centre-cropped as `fit` does. Splats are
fitted with the shipped recipe (FitConfig's defaults through load_fit_config, --iterations aside), then
stored in each record: splats_fp16 (float16 [N, 8], N x 16 B) and splats_q (the quantized record after
fit.refine_iterations of quantization-aware refinement, every stored byte counted); setting = the requested
N (pruning leaves fewer). Pixel codecs: Pillow at qualities 5, 10, ..., 95 (setting = quality). PSNR and SSIM
(torchmetrics) of what each decodes to against the same resized original.

CSV: one row per (image, method, setting): image,method,setting,bytes,psnr,ssim. Printed: the quantized
record against fp16 at each N (the target: at 400 Gaussians, >= 2x fewer bytes for <= 0.5 dB), and
each method's PSNR at the byte budgets of 400, 1024 and 3136 fp16 splats (N x 16 B): per image, PSNR is
interpolated linearly in log(bytes) between that method's two points around the budget, then averaged over
the images; where a method's largest setting stays under the budget for some image (JPEG at quality 95 is
smaller than 3136 fp16 splats), that image counts at its largest setting and the mean is a lower bound
(">="); where its smallest setting is over the budget for some image, "n/a".
Plot: mean PSNR vs mean bytes per method (out/codec_rd.png).
"""
from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gs_lightning.benchmarks.common import print_table
from gs_lightning.benchmarks.fit import named_photos
from gs_lightning.codec import RECORDS
from gs_lightning.config import load_fit_config
from gs_lightning.data import pixel_codecs
from gs_lightning.data.shards import decode_image
from gs_lightning.fit.fitter import fit_batch
from gs_lightning.fit.refine import refine_quantized
from gs_lightning.render import rasterize
from gs_lightning.splats import BYTES_PER_SPLAT, Splats

COUNTS = (100, 400, 1024, 3136)
BUDGET_COUNTS = (400, 1024, 3136)
QUALITIES = tuple(range(5, 96, 5))
TARGET = {"count": 400, "ratio": 2.0, "loss_db": 0.5}  # the quantized record's goal


def quality(decoded: torch.Tensor, images: torch.Tensor) -> tuple[list[float], list[float]]:  # [B, 3, H, W] x2
    decoded = decoded.clamp(0, 1)
    psnr = peak_signal_noise_ratio(decoded, images, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(decoded, images, data_range=1.0, reduction="none")
    return psnr.tolist(), ssim.tolist()


def stored(splats: Splats, record: str, size: int) -> tuple[list[int], torch.Tensor]:  # bytes, render [B, 3, S, S]
    """Each image's splats through the record's bytes and back: what a reader gets, rendered."""
    codec = RECORDS[record]
    blobs = [codec.encode(r) for r in splats.to_rows(size, size)]
    back = Splats.from_rows([codec.decode(b) for b in blobs], size, size)
    with torch.no_grad():
        return [codec.nbytes(b) for b in blobs], rasterize(back, size, size)


def splat_rows(names, images, counts, iterations) -> tuple[list[dict], dict]:
    rows, seconds = [], {}
    size = images.shape[-1]
    for n in counts:
        cfg = load_fit_config()
        cfg = replace(cfg, num_splats=n, iterations=iterations or cfg.iterations)
        t0 = time.perf_counter()
        splats, _ = fit_batch(images, cfg)
        fitted = time.perf_counter()
        refined = refine_quantized(images, splats, cfg.refine_iterations, cfg.refine_lr, cfg.backend)
        seconds[n] = ((fitted - t0) / len(images), (time.perf_counter() - fitted) / len(images))
        for method, record, s in (("splats_fp16", "fp16", splats), ("splats_q", "quantized", refined)):
            nbytes, render = stored(s, record, size)
            psnr, ssim = quality(render, images)
            rows += [dict(image=names[i], method=method, setting=n, bytes=nbytes[i], psnr=psnr[i], ssim=ssim[i])
                     for i in range(len(images))]
        print(f"  {n:5d} Gaussians: fitted in {seconds[n][0]:.1f} s/image (+{seconds[n][1]:.1f} s refining)",
              flush=True)
    return rows, seconds


def pixel_rows(names, images, codecs) -> list[dict]:
    rows = []
    for i, image in enumerate(images):
        pixels = pixel_codecs.fit_pixels(image, image.shape[-1])  # already the fit's size: as given
        for codec in codecs:
            blobs = [pixel_codecs.encode(pixels, codec, q) for q in QUALITIES]
            decoded = torch.stack([decode_image(b) for b in blobs])
            psnr, ssim = quality(decoded, image[None].expand_as(decoded))
            rows += [dict(image=names[i], method=codec, setting=q, bytes=len(b), psnr=p, ssim=s)
                     for q, b, p, s in zip(QUALITIES, blobs, psnr, ssim)]
    return rows


def psnr_at(rows: list[dict], method: str, budget: float) -> tuple[float | None, int, int]:
    """Mean over images of PSNR interpolated in log(bytes) at `budget`, how many images the method could not
    get down to the budget (then None), and how many it never filled: those count at its largest setting's
    PSNR, so the mean is then a lower bound."""
    by_image: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["method"] == method:
            by_image.setdefault(r["image"], []).append((r["bytes"], r["psnr"]))
    values, over, under = [], 0, 0
    for points in by_image.values():
        points.sort()
        b = np.log([p[0] for p in points])
        over += np.log(budget) < b[0]
        under += np.log(budget) > b[-1]
        values.append(float(np.interp(np.log(budget), b, [p[1] for p in points])))  # clamps at the ends
    return (float(np.mean(values)) if values and not over else None), over, under


def report(rows: list[dict], counts, seconds: dict) -> None:
    fp16 = {(r["image"], r["setting"]): r for r in rows if r["method"] == "splats_fp16"}
    q = {(r["image"], r["setting"]): r for r in rows if r["method"] == "splats_q"}
    print("\n== The quantized record against float16, same fit (mean over images)")
    table = []
    for n in counts:
        pairs = [(fp16[k], q[k]) for k in fp16 if k[1] == n]
        ratio = np.mean([a["bytes"] / b["bytes"] for a, b in pairs])
        loss = np.mean([a["psnr"] - b["psnr"] for a, b in pairs])
        table.append([n, f"{np.mean([a['bytes'] for a, _ in pairs]):.0f}",
                      f"{np.mean([b['bytes'] for _, b in pairs]):.0f}",
                      f"{ratio:.2f}x", f"{np.mean([a['psnr'] for a, _ in pairs]):.2f}",
                      f"{np.mean([b['psnr'] for _, b in pairs]):.2f}", f"{loss:+.2f}", f"{seconds[n][0]:.1f}"])
        if n == TARGET["count"]:
            met = ratio >= TARGET["ratio"] and loss <= TARGET["loss_db"]
            verdict = (f"target at {n} Gaussians (>= {TARGET['ratio']}x fewer bytes, <= {TARGET['loss_db']} dB): "
                       f"{ratio:.2f}x fewer bytes for {loss:.2f} dB: {'MET' if met else 'MISSED'}")
    print_table(["Gaussians", "fp16 B", "quantized B", "fewer bytes", "fp16 PSNR", "q PSNR", "PSNR loss",
                 "fit s/image"], table)
    if TARGET["count"] in counts:
        print(f"  {verdict}")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    print("\n== PSNR (dB) at the bytes of N float16 splats (N x 16 B), interpolated per image in log(bytes); "
          ">=: some images never fill the budget (counted at the largest setting)")
    table = []
    for n in BUDGET_COUNTS:
        line = [n, n * BYTES_PER_SPLAT]
        for m in methods:
            value, over, under = psnr_at(rows, m, n * BYTES_PER_SPLAT)
            line.append(f"n/a ({over} over)" if value is None else f">= {value:.2f}" if under else f"{value:.2f}")
        table.append(line)
    print_table(["N", "bytes", *methods], table)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        settings = sorted({r["setting"] for r in rows if r["method"] == method})
        xs = [np.mean([r["bytes"] for r in rows if r["method"] == method and r["setting"] == s]) for s in settings]
        ys = [np.mean([r["psnr"] for r in rows if r["method"] == method and r["setting"] == s]) for s in settings]
        ax.plot(xs, ys, "o-" if method.startswith("splats") else ".-", label=method, lw=2 if "splats" in method else 1)
        if method.startswith("splats"):
            for x, y, s in zip(xs, ys, settings):
                ax.annotate(str(s), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (224x224)")
    ax.set_ylabel("PSNR (dB), mean over images")
    ax.set_title("Rate-distortion: splat records vs Pillow codecs")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\n  plot: {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="shard pattern or image folder (default: the embedded photos)")
    p.add_argument("--counts", default=",".join(map(str, COUNTS)), help="Gaussians per image, comma-separated")
    p.add_argument("--iterations", type=int, help="fit iterations (default: the shipped fit.iterations)")
    p.add_argument("--csv", default="outputs/bench/codec.csv")
    p.add_argument("--out", default="outputs/bench")
    a = p.parse_args(argv)
    counts = [int(c) for c in a.counts.split(",")]
    size = load_fit_config().image_size
    names, images = named_photos(None, a.input, size)  # the embedded photos, or every image of --input
    codecs = pixel_codecs.available()
    print(f"== {len(images)} images at {size}x{size}; splats: {counts}; {', '.join(codecs)} at qualities "
          f"{QUALITIES[0]}-{QUALITIES[-1]}")
    rows, seconds = splat_rows(names, images, counts, a.iterations)
    rows += pixel_rows(names, images, codecs)
    Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "method", "setting", "bytes", "psnr", "ssim"])
        w.writeheader()
        w.writerows({**r, "psnr": f"{r['psnr']:.4f}", "ssim": f"{r['ssim']:.5f}"} for r in rows)
    print(f"  csv: {a.csv} ({len(rows)} rows)")
    report(rows, counts, seconds)
    plot(rows, Path(a.out) / "codec_rd.png")


if __name__ == "__main__":
    main()
