"""What a fit run records: per-rank tallies merged into summary.json, and fit.yaml, the settings of a folder.

A rerun into the same fit.output resumes there, so it must fit the way the first run did, or one folder
would hold two kinds of splats: `record_fit_config` keeps the settings and names the keys that differ.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gs_lightning.atomic import write_text_atomic
from gs_lightning.config import UserError
from gs_lightning.data.shards import update_sizes
from gs_lightning.splats import compression_ratio

# Keys a rerun into the same output may change: which images (to fit more shards into a folder), and
# how fast. The rest decide what a splat set is, and one folder holds one kind.
FREE_KEYS = ("input", "output", "batch_size", "backend", "num_workers")


def record_fit_config(output: str | Path, fit: DictConfig) -> None:
    """Keep the `fit` config in output/fit.yaml, or refuse a rerun there with other settings."""
    now = OmegaConf.masked_copy(fit, [k for k in fit if k not in FREE_KEYS])
    path = Path(output) / "fit.yaml"
    if path.exists():
        before, after = _leaves(OmegaConf.load(path)), _leaves(now)
        differ = [f"fit.{k} was {before.get(k)!r}, now {after.get(k)!r}" for k in sorted(before.keys() | after.keys())
                  if before.get(k) != after.get(k)]
        if differ:
            raise UserError("fit.output", f"{output} holds a fit made with other settings ({'; '.join(differ)}). "
                                          "A rerun into the same fit.output resumes that fit: pass the same "
                                          "settings, or a new fit.output.")
        return
    write_text_atomic(path, OmegaConf.to_yaml(now, resolve=True))  # every rank may write it: the same text


def _leaves(cfg: DictConfig) -> dict:  # {"prune.threshold": 0.02, ...}
    out = {}
    for k, v in OmegaConf.to_container(cfg, resolve=True).items():
        out.update({f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
    return out


@dataclass
class Tally:
    """One rank's account of a run; written as output/_stats/rankNNNN.json and merged by `summarise`."""

    images: int = 0
    skipped: list[str] = field(default_factory=list)  # "shard/key: reason"
    shards: dict[str, int] = field(default_factory=dict)  # completed shard -> samples in it
    bytes_splats: int = 0
    psnr: list[float] = field(default_factory=list)
    n_init: list[int] = field(default_factory=list)
    n_final: list[int] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)  # Adam steps per image
    seconds: float = 0.0

    def save(self, output: str | Path, rank: int) -> None:
        write_text_atomic(stats_path(output, rank), json.dumps(asdict(self)))


def stats_path(output: str | Path, rank: int) -> Path:
    return Path(output) / "_stats" / f"rank{rank:04d}.json"


def summarise(output: str | Path, image_size: int, iterations: int, world_size: int = 1,
              record: str = "fp16") -> dict:
    """Merge this run's tallies of ranks 0..world_size-1 into summary.json and return it.
    iterations: fit.iterations, the cap (an image below it stopped at fit.target_psnr)."""
    paths = [stats_path(output, r) for r in range(world_size)]
    tallies = [Tally(**json.loads(p.read_text())) for p in paths if p.exists()]
    psnr = [x for t in tallies for x in t.psnr]
    n_final = [x for t in tallies for x in t.n_final]
    n_init = [x for t in tallies for x in t.n_init]
    steps = [x for t in tallies for x in t.iterations]
    images = sum(t.images for t in tallies)
    bytes_splats = sum(t.bytes_splats for t in tallies)
    seconds = max((t.seconds for t in tallies), default=0.0)
    mean_n = sum(n_final) / len(n_final) if n_final else 0.0
    update_sizes(output, {k: v for t in tallies for k, v in t.shards.items()})
    summary = {
        "images_fitted": images,
        "images_skipped": sum(len(t.skipped) for t in tallies),
        "skipped": [k for t in tallies for k in t.skipped],
        "shards_written": sum(len(t.shards) for t in tallies),
        "psnr_mean": sum(psnr) / len(psnr) if psnr else None,
        "psnr_min": min(psnr) if psnr else None,
        "splats_mean": mean_n,
        "pruned_fraction": 1 - sum(n_final) / sum(n_init) if n_init else 0.0,
        "iterations_mean": sum(steps) / len(steps) if steps else None,
        "iterations_max": max(steps) if steps else None,
        "images_at_cap": sum(s >= iterations for s in steps),  # did not reach fit.target_psnr (if set)
        "image_size": image_size,
        "record": record,
        "bytes_splats": bytes_splats,  # as codec.py counts them (fp16: N * 16; quantized: the whole record)
        "bytes_per_image": bytes_splats / images if images else None,
        "compression_ratio": (compression_ratio(image_size, image_size, mean_n, bytes_splats / sum(n_final))
                              if bytes_splats and sum(n_final) else None),
        "seconds": seconds,
        "images_per_second": images / seconds if seconds else None,
    }
    write_text_atomic(Path(output) / "summary.json", json.dumps(summary, indent=2))
    return summary


def format_summary(s: dict) -> str:
    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    lines = [
        f"images fitted     {s['images_fitted']}  (skipped {s['images_skipped']})",
        f"shards written    {s['shards_written']}",
        f"PSNR mean / min   {f(s['psnr_mean'], '.2f')} / {f(s['psnr_min'], '.2f')} dB",
        f"splats per image  {s['splats_mean']:.1f}  (pruned {100 * s['pruned_fraction']:.1f}%)",
        f"iterations        mean {f(s['iterations_mean'], '.0f')}, max {f(s['iterations_max'], 'd')}  "
        f"({s['images_at_cap']} images ran to the cap)",
        f"bytes written     {s['bytes_splats']:,} of splats, {s['record']} record "
        f"({f(s['bytes_per_image'], '.0f')} B per image; fp16 is 16 B per splat)",
        f"compression       {f(s['compression_ratio'], '.1f')}x vs uint8 pixels",
        f"throughput        {f(s['images_per_second'], '.2f')} images/s",
    ]
    lines += [f"skipped: {k}" for k in s["skipped"]]
    return "\n".join(lines)
