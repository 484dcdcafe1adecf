"""The GPU check's workers (gpu_check.py runs each in its own process, under its step's time limit).

    python -m gs_lightning.benchmarks.gpu_steps {env,probe,render,fit,train} --results FILE --budget SECONDS
                                                [--site DIR] [--smoke]

Each writes its figures to --results as it measures them, so a worker stopped at its limit keeps what it had.
--budget is the worker's share of the check's time: the fit and train workers size their work to it.
--smoke: the fit and train workers on the CPU at toy size, to prove their code runs (the dry run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from gs_lightning.benchmarks.gpu_check import PSNR_TOL


class Results(dict):
    """A worker's figures, written to their file (atomically) each time `save` is called."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self, default=float))
        os.replace(tmp, self.path)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ---- env, probe ------------------------------------------------------------------------------------------------


def env(out: Results, **_) -> None:
    import torch

    nvcc = [line for line in _run(["nvcc", "--version"]).splitlines() if "release" in line]
    out.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
               cuda_available=torch.cuda.is_available(), cpus=os.cpu_count(),
               driver=_run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) or None,
               nvcc=nvcc[-1].split(",")[-1].strip() if nvcc else None)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   multiprocessors=p.multi_processor_count)
    out.save()
    print(json.dumps(out, indent=1))


def probe(out: Results, site: str, **_) -> None:
    """What the check imports, imported: the carried modules must come from the wheels' folder, and open_clip's
    tokenizer (ftfy, regex) must run. Records the versions of what the image has."""
    import importlib.metadata as md

    import gs_lightning.data.datamodules  # noqa: F401  webdataset
    import open_clip

    from gs_lightning.config import TrainRun, compose, find, load_fit_config, validate

    load_fit_config(["paper"])  # omegaconf, composing the recipes the fit step runs
    for experiment in ("gs196", "rgb"):
        validate(compose(TrainRun, [find(experiment, "train")]), TrainRun)  # open_clip knows the paper's model
    tokens = open_clip.get_tokenizer("ViT-B-16-w512")(["a photo of a cat."])  # ftfy, regex
    assert tokens.shape == (1, 77), tokens.shape
    from gs_lightning.data.demo import PHOTOS, photo_array

    out["photos"] = [name for name, _ in PHOTOS if photo_array(name).size]  # the fit's: scikit-image's own files
    cli = subprocess.run([sys.executable, "-m", "gs_lightning", "train", "--help"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-2000:]  # the commands import (the CLI is a layer above this one)
    carried = {d.metadata["Name"]: d for d in md.distributions(path=[site])}
    out["carried"] = {name: d.version for name, d in carried.items()}
    wrong, unused = [], []
    for name, d in carried.items():
        for module in sorted({f.parts[0].removesuffix(".py") for f in d.files or () if f.suffix == ".py"}):
            loaded = sys.modules.get(module)
            if loaded is None:
                unused.append(module)
            elif not str(getattr(loaded, "__file__", "")).startswith(site):
                wrong.append(f"{module} ({name}) came from {loaded.__file__}")
    out["not_imported"] = unused  # carried for the package's other needs (open_clip_train comes with open_clip)
    out["image"] = {name: _version(name) for name in ("torch", "torchvision", "lightning", "torchmetrics", "timm",
                                                       "numpy", "pillow", "scikit-image", "regex", "pytest")}
    out.save()
    print(json.dumps(out, indent=1))
    if wrong:
        raise SystemExit("carried modules not loaded from the wheels: " + "; ".join(wrong))


def _version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


# ---- render --------------------------------------------------------------------------------------------------


def render(out: Results, **_) -> None:
    from gs_lightning.benchmarks.render import gpu_benchmark

    out.update(gpu_benchmark())
    out.save()


# ---- fit -----------------------------------------------------------------------------------------------------

# (recipe, Gaussians, iterations), most important first; the share of the GPU sweep time each gets (what one
# leaves goes to the next). The default recipe is FitConfig's, the paper's experiments/fit/paper.yaml, both as
# shipped (pruning on).
FIT_RUNS = [("default", 400, 300, 0.4), ("paper", 400, 3000, 0.2), ("default", 3136, 300, 0.25),
            ("paper", 3136, 3000, 0.15)]
SMOKE_RUNS = [("default", 16, 4, 0.5), ("paper", 16, 4, 0.5)]
FIRST_BATCH, MAX_BATCH = 64, 16384  # 16384 images are 10 GB a [B, 3, 224, 224] tensor; a fit holds several
CPU_PHOTOS = {"default": 8, "paper": 4}  # the CPU reference fits these many photos (the paper's: 10x the steps)
GPU_SHARE = 0.8  # of the budget for the GPU sweeps; the CPU references take what is left


def dihedral(images):  # [n, 3, S, S] -> [8n, 3, S, S]: the originals first, then flips and quarter turns
    import torch

    turns = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    return torch.cat(turns + [t.flip(3) for t in turns])


def fit(out: Results, budget: float, smoke: bool = False, **_) -> None:
    """images/s and PSNR of fit_batch on the GPU, per recipe and Gaussian count, at batches doubling from 64
    while the next one fits in the run's share of the budget; then each recipe's PSNR at batch 64 against a CPU
    fit of the same photos.

    Time estimates: a fit costs about images x iterations, whatever the count (the Gaussians shrink as they
    multiply, so the pixel-Gaussian pairs stay about the same), with a factor 2 to spare; doubling a batch at
    most doubles its time."""
    from dataclasses import replace

    import torch

    from gs_lightning.benchmarks.fit import named_photos
    from gs_lightning.config import load_fit_config
    from gs_lightning.fit.fitter import fit_batch

    start = time.monotonic()
    device = "cpu" if smoke else "cuda"
    size, first, most = (32, 8, 16) if smoke else (224, FIRST_BATCH, MAX_BATCH)
    _, photos = named_photos(8, size=size)
    pool = dihedral(photos).to(device)
    plan = SMOKE_RUNS if smoke else FIT_RUNS
    runs, checks = out.setdefault("runs", []), out.setdefault("cpu_checks", [])
    out.update(device=torch.cuda.get_device_name() if device == "cuda" else "cpu", size=size, photos=len(photos),
               distinct_images=len(pool), budget=budget)
    recipes = {r: load_fit_config([] if r == "default" else [r]) for r in ("default", "paper")}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def timed_fit(images, recipe: str, n: int, iterations: int):
        cfg = replace(recipes[recipe], num_splats=n, iterations=iterations)
        sync()
        t0 = time.perf_counter()
        _, stats = fit_batch(images, cfg)
        sync()
        return stats, time.perf_counter() - t0

    gpu_time = GPU_SHARE * (budget - (time.monotonic() - start))  # after the imports and the photos
    rate, carry, at_first, failures = None, 0.0, {}, []  # rate: GPU seconds per image-iteration at the first batch
    for recipe, n, iterations, share in plan:
        allot, used, batch, last = share * gpu_time + carry, 0.0, first, None
        estimate = 2 * rate * first * iterations if rate else 0.0
        if estimate > allot:
            runs.append({"recipe": recipe, "splats": n, "iterations": iterations, "batch": first,
                         "error": f"not run: about {estimate:.0f} s, {allot:.0f} s allotted"})
            carry = allot
            continue
        while batch <= most and (last is None or used + 2 * last <= allot):
            run = {"recipe": recipe, "splats": n, "iterations": iterations, "batch": batch}
            runs.append(run)
            try:
                if batch == first:
                    timed_fit(pool[:8], recipe, n, 3)  # warm-up: kernels, cuBLAS, the allocator
                images = pool.repeat((batch + len(pool) - 1) // len(pool), 1, 1, 1)[:batch]
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                run["t0"] = time.time()
                stats, last = timed_fit(images, recipe, n, iterations)
                run.update(t1=time.time(), seconds=last, images_per_s=batch / last,
                           psnr_mean=stats.psnr.mean().item(), psnr_min=stats.psnr.min().item())
                if device == "cuda":
                    run["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except Exception as e:  # out of memory ends the sweep; another error this run, and fails the step
                if "out of memory" in str(e):  # torch's OutOfMemoryError, or the extension's RuntimeError
                    run["error"] = "out of memory"
                else:
                    traceback.print_exc()
                    run["error"] = f"{type(e).__name__}: {e}"[:300]
                    failures.append(f"{recipe} {n}")
                break
            finally:
                images = None
                if device == "cuda":
                    torch.cuda.empty_cache()
                out.save()
            if batch == first:
                at_first[recipe, n] = stats.psnr[: len(photos)].cpu()
                rate = rate or last / (first * iterations)
            used += last
            print(f"  {recipe} {n} Gaussians, {iterations} it., batch {batch}: {run['images_per_s']:.1f} images/s, "
                  f"{run['psnr_mean']:.2f} dB ({last:.1f} s)", flush=True)
            batch *= 2
        carry = max(allot - used, 0.0)

    rate = None  # CPU seconds per image-iteration
    for recipe, n, iterations, _ in plan:
        if (recipe, n) not in at_first:
            continue
        k = CPU_PHOTOS[recipe]
        c = {"recipe": recipe, "splats": n, "iterations": iterations, "photos": k, "batch": first}
        checks.append(c)
        left = budget - (time.monotonic() - start) - 2
        estimate = 2 * rate * k * iterations if rate else 0.0
        if estimate > left:
            c["verdict"] = f"not run: about {estimate:.0f} s, {left:.0f} s left"
            out.save()
            continue
        stats, c["cpu_seconds"] = timed_fit(photos[:k].cpu(), recipe, n, iterations)
        rate = rate or c["cpu_seconds"] / (k * iterations)
        cpu, gpu = stats.psnr, at_first[recipe, n][:k]
        delta = gpu - cpu
        c.update(cpu_psnr=cpu.mean().item(), gpu_psnr=gpu.mean().item(), delta_mean=delta.mean().item(),
                 delta_max=delta.abs().max().item(), per_image=[[x.item(), y.item()] for x, y in zip(cpu, gpu)])
        c["verdict"] = "ok" if abs(c["delta_mean"]) <= PSNR_TOL else f"outside {PSNR_TOL} dB"
        out.save()
        print(f"  CPU check {recipe} {n}: CPU {c['cpu_psnr']:.2f} dB, GPU {c['gpu_psnr']:.2f} dB "
              f"({c['delta_mean']:+.2f}), {c['cpu_seconds']:.1f} s", flush=True)
    if failures:
        raise SystemExit(f"fit failed: {', '.join(failures)}")


# ---- train ---------------------------------------------------------------------------------------------------

# (run, experiment, the trainable set) at the experiment's own model, batch and precision; most important first.
# gs196 trains the transfer set (paper 5.1) on random weights: no RGB checkpoint travels.
TRAIN_RUNS = [("gs196", "gs196", "transfer"), ("rgb", "rgb", "rgb"), ("gs196_scratch", "gs196_scratch", "scratch")]
TRAIN_SPLATS = 400  # per image: fit.num_splats's default
WARM_STEPS, TIMED_STEPS = 3, 10
# The tests' tiny model (tests/conftest.py TINY_MODEL), for the smoke run.
SMOKE_MODEL = ["model.name=ViT-Tiny-16", "model.splat_encoder.num_queries=5", "model.splat_encoder.resampler_heads=2",
               "model.splat_encoder.stem_hidden=16", "model.splat_encoder.num_freqs=3", "data.batch_size=4"]


def train(out: Results, budget: float, smoke: bool = False, **_) -> None:
    """A few Lightning training steps per run on synthetic batches already on the device, at the experiment's
    precision: ms/step and samples/s over the steps after the warm-up, and the peak of torch's allocations."""
    import lightning as L
    import torch

    from gs_lightning import build
    from gs_lightning.config import TrainRun, compose, find
    from gs_lightning.splats import Splats

    class StepClock(L.Callback):
        """Wall time from the first step after the warm-up to the last one's end, synchronised with the device;
        resets torch's peak-memory count at that first step."""

        def __init__(self):
            self.t0, self.seconds, self.loss = None, 0.0, None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == warm:
                sync()
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.t0 is not None:
                sync()
                self.seconds = time.perf_counter() - self.t0
                self.loss = float(outputs["loss"])

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.monotonic()
    device = "cpu" if smoke else "cuda"
    warm, timed = (1, 2) if smoke else (WARM_STEPS, TIMED_STEPS)
    runs, failures = out.setdefault("runs", []), []
    out["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    for name, experiment, mode in TRAIN_RUNS:
        # Each run's build and first steps take about as long as the last one's; stop when that would not fit.
        if runs and "seconds" in runs[-1] and time.monotonic() - start + runs[-1]["seconds"] > budget - 2:
            runs.append({"run": name, "model": "-", "batch": "-", "error": "not run: out of time"})
            break
        cfg = compose(TrainRun, [find(experiment, "train")],
                      ["model.mode=" + ("rgb" if mode == "rgb" else "scratch"), "model.rgb_checkpoint=null",
                       "logger.wandb=false", *(SMOKE_MODEL if smoke else [])])
        t_run = time.monotonic()
        torch.manual_seed(0)
        module = build.clip_module(cfg)
        if mode == "transfer":  # the transfer recipe's trainable set, as benchmarks/models.py does
            module.mode = "transfer"
            module.apply_trainable()
        b = cfg.data.batch_size
        g = torch.Generator().manual_seed(0)
        text = module.tokenizer([f"a photo of thing {i}" for i in range(b)])
        if mode == "rgb":
            size = build.image_size(cfg)
            batch = {"image": torch.rand(b, 3, size, size, generator=g), "text": text}
        else:
            chol = torch.stack([0.02 + 0.05 * torch.rand(b, TRAIN_SPLATS, generator=g),
                                0.01 * torch.randn(b, TRAIN_SPLATS, generator=g),
                                0.02 + 0.05 * torch.rand(b, TRAIN_SPLATS, generator=g)], -1)
            batch = {"splats": Splats(torch.rand(b, TRAIN_SPLATS, 2, generator=g), chol,
                                      torch.rand(b, TRAIN_SPLATS, 3, generator=g),
                                      torch.ones(b, TRAIN_SPLATS, dtype=torch.bool), units="unit"), "text": text}
        batch = {k: v.to(device) for k, v in batch.items()}  # on the device: the step alone is timed
        run = {"run": name, "model": cfg.model.name, "batch": b, "precision": cfg.trainer.precision,
               "trainable": f"{module.parameter_table()[1]:.1%}"}
        runs.append(run)
        clock = StepClock()
        trainer = L.Trainer(max_steps=warm + timed, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                            precision=cfg.trainer.precision, logger=False, callbacks=[clock],
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0)
        try:
            trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch] * (warm + timed),
                                                                              batch_size=None))
            steps = trainer.global_step - warm
            run.update(steps=steps, ms_per_step=1e3 * clock.seconds / steps, samples_per_s=b * steps / clock.seconds,
                       loss=clock.loss)
            if device == "cuda":
                run["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        except torch.cuda.OutOfMemoryError:
            run["error"] = "out of memory"
        except Exception as e:  # the next run may still work: record this one's error, fail the step at the end
            traceback.print_exc()
            run["error"] = f"{type(e).__name__}: {e}"[:300]
            failures.append(name)
        run["seconds"] = time.monotonic() - t_run
        out["precision"] = cfg.trainer.precision
        out.save()
        print(f"  {name}: {run.get('samples_per_s', 0):.0f} samples/s, {run.get('peak_gib', 0):.1f} GiB peak",
              flush=True)
        del module, trainer, batch
        if device == "cuda":
            torch.cuda.empty_cache()
    if failures:
        raise SystemExit(f"training failed: {', '.join(failures)}")


WORKERS = {"env": env, "probe": probe, "render": render, "fit": fit, "train": train}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("worker", choices=sorted(WORKERS))
    p.add_argument("--results", required=True, type=Path)
    p.add_argument("--budget", type=float, default=60.0)
    p.add_argument("--site", default="")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    WORKERS[a.worker](Results(a.results), budget=a.budget, smoke=a.smoke, site=a.site)


if __name__ == "__main__":
    main()
