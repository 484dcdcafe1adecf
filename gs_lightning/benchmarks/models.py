"""Splat encoder cost: forward+backward ms per sample and peak memory, vs the RGB ViT at 224x224.

    python -m gs_lightning.benchmarks.models [--batch 4] [--model ViT-B-16-w512]

Visual towers only, as trained: the RGB ViT with every parameter trainable; the splat encoder in
`transfer` mode (blocks 0-1, stem, resampler trainable; the backward still runs through every block).
Each configuration runs in a fresh process; on CPU, memory is the peak resident set above the process's
footprint after building the model (activations and gradients); on a GPU, torch's peak allocation.
"""
import argparse
import multiprocessing as mp
import resource
import time

import torch

from gs_lightning.benchmarks.common import print_table


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(model_name: str, queries: int | None, splats: int | None, batch: int, reps: int, out) -> None:
    from gs_lightning import build
    from gs_lightning.config import TrainRun, compose
    from gs_lightning.splats import Splats

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mode = "rgb" if queries is None else "scratch"
    cfg = compose(TrainRun, [], [f"model.name={model_name}", f"model.mode={mode}",
                                 f"model.splat_encoder.num_queries={queries or 196}"])
    module = build.clip_module(cfg)
    if queries is not None:  # the transfer recipe's trainable set, on random weights
        module.mode = "transfer"
        module.apply_trainable()
    visual = module.model.visual.to(device)
    g = torch.Generator().manual_seed(0)
    if queries is None:
        size = build.image_size(cfg)
        x = torch.rand(batch, 3, size, size, generator=g).to(device)
    else:
        chol = torch.full((batch, splats, 3), 0.02) * torch.tensor([1.0, 0.1, 1.0])
        x = Splats(torch.rand(batch, splats, 2, generator=g), chol, torch.rand(batch, splats, 3, generator=g),
                   torch.ones(batch, splats, dtype=torch.bool), units="unit").to(device)

    def step():
        visual(x).square().sum().backward()
        visual.zero_grad(set_to_none=True)

    base = _peak_rss_mib()  # the built model and inputs
    step()  # warm up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    ms = 1e3 * (time.perf_counter() - t0) / (reps * batch)
    mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_rss_mib() - base
    trainable = sum(p.numel() for p in visual.parameters() if p.requires_grad)
    out.put((ms, mem, base, trainable, device))


def run(model_name: str, queries, splats, batch: int, reps: int):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(model_name, queries, splats, batch, reps, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"benchmark process for queries={queries}, splats={splats} failed ({p.exitcode})")
    return q.get()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-16-w512")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args(argv)
    rgb_ms, rgb_mem, rgb_base, rgb_train, device = run(a.model, None, None, a.batch, a.reps)
    rows = [["RGB ViT (its image size)", "-", "-", f"{rgb_ms:.1f}", "1.00x", f"{rgb_mem:.0f}", f"{rgb_train / 1e6:.1f}M"]]
    for queries in (196, 98):
        for splats in (400, 3136):
            ms, mem, base, trainable, _ = run(a.model, queries, splats, a.batch, a.reps)
            rows.append([f"splat encoder ({a.model})", queries, splats, f"{ms:.1f}", f"{ms / rgb_ms:.2f}x",
                         f"{mem:.0f}", f"{trainable / 1e6:.1f}M"])
    unit = "peak MiB (GPU)" if device == "cuda" else "peak RSS above model, MiB"
    print(f"Visual tower forward+backward, batch {a.batch}, {device}, {torch.get_num_threads()} threads")
    print_table(["encoder", "queries", "splats", "ms/sample", "vs RGB", unit, "trainable"], rows)


if __name__ == "__main__":
    main()
