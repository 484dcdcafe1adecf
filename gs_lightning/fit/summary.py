"""What a fit keeps beside its shards: each shard's account (_stats/<shard>.json), merged into summary.json and
sizes.json over every shard in the folder, and fit.yaml, the settings of the folder.

A rerun into the same fit.output resumes there, so it must fit the way the first run did, or one folder
would hold two kinds of splats: `keep_fit_settings` writes the settings once and names the keys that differ.
A tally holds sums, minima and maxima, not per-image lists, so it stays the same size however many images a
shard holds.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from omegaconf import OmegaConf

from gs_lightning.atomic import write_text_atomic
from gs_lightning.data.image_batches import SETTINGS_FILES, check_output_kind, stats_path
from gs_lightning.data.shards import update_sizes
from gs_lightning.errors import UserError
from gs_lightning.fit.config import FitConfig
from gs_lightning.fit.fitter import FitStats
from gs_lightning.splats import compression_ratio

# Keys a rerun into the same output may change: which images (to fit more shards into a folder), and
# how fast. The rest decide what a splat set is, and one folder holds one kind.
FREE_KEYS = ("input", "output", "batch_size", "backend", "num_workers")


def _leaves(node: dict, prefix: str = "") -> dict:  # {"prune.threshold": 0.02, ...}
    out = {}
    for k, v in node.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def keep_fit_settings(cfg: FitConfig) -> None:
    """Write the settings that make a splat set what it is to cfg.output/fit.yaml, or refuse a rerun there
    with other ones while the folder holds a shard fitted under them (a fit stopped before its first shard
    finished leaves none, and its settings bind nothing). A key that an older fit.yaml lacks is taken at its
    default, which is what that fit used."""
    check_output_kind(cfg.output, "fit", "fit.output")
    now = {k: v for k, v in _leaves(asdict(cfg)).items() if k.split(".")[0] not in FREE_KEYS}
    path = Path(cfg.output) / SETTINGS_FILES["fit"]
    if path.exists() and any(Path(cfg.output).glob("*.tar")):
        defaults = _leaves(asdict(FitConfig()))
        before = _leaves(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
        differ = [f"fit.{k} was {before.get(k, defaults[k])!r}, now {v!r}" for k, v in sorted(now.items())
                  if before.get(k, defaults[k]) != v]
        if differ:
            raise UserError("fit.output", f"{cfg.output} holds a fit made with other settings ({'; '.join(differ)}). "
                                          "A rerun into the same fit.output resumes that fit: pass the same "
                                          "settings, or a new fit.output.")
        return
    nested = OmegaConf.to_yaml(OmegaConf.masked_copy(OmegaConf.structured(cfg), [k for k in asdict(cfg)
                                                                               if k not in FREE_KEYS]))
    write_text_atomic(path, nested)  # every rank may write it: the same text


@dataclass
class Tally:
    """The account of one fitted shard, kept as output/_stats/<shard>.json beside it; `summarise` merges those
    of every shard in the folder, so the summary covers the folder whatever runs and ranks fitted it."""

    images: int = 0
    skipped: list[str] = field(default_factory=list)  # "shard/key: reason"
    shards: dict[str, int] = field(default_factory=dict)  # completed shard -> samples in it
    ranks: dict[str, int] = field(default_factory=dict)  # completed shard -> the rank that fitted it
    inputs: dict[str, str] = field(default_factory=dict)  # completed shard -> its input's origin
    bytes_splats: int = 0
    psnr_sum: float = 0.0
    psnr_min: float = math.inf
    n_init: int = 0  # summed over images
    n_final: int = 0
    iterations: int = 0
    iterations_max: int = 0
    at_cap: int = 0  # images that ran fit.iterations (did not reach fit.target_psnr, if set)
    seconds: float = 0.0  # fitting time on the rank that fitted it

    def add(self, stats: FitStats, cap: int) -> None:
        """Count a fitted batch's images; cap: fit.iterations."""
        self.add_images(stats.psnr.double().tolist(), stats.n_init.tolist(), stats.n_final.tolist(),
                        stats.iterations.tolist(), cap)

    def add_images(self, psnr: list[float], n_init: list[int], n_final: list[int], iterations: list[int],
                   cap: int) -> None:
        if not psnr:
            return
        self.images += len(psnr)
        self.psnr_sum += sum(psnr)
        self.psnr_min = min(self.psnr_min, *psnr)
        self.n_init += int(sum(n_init))
        self.n_final += int(sum(n_final))
        self.iterations += int(sum(iterations))
        self.iterations_max = max(self.iterations_max, *map(int, iterations))
        self.at_cap += sum(int(i) >= cap for i in iterations)

    def merge(self, other: "Tally") -> "Tally":
        out = Tally()
        for f in fields(Tally):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "psnr_min":
                setattr(out, f.name, min(a, b))
            elif f.name == "iterations_max":
                setattr(out, f.name, max(a, b))
            elif isinstance(a, dict):
                setattr(out, f.name, {**a, **b})
            else:
                setattr(out, f.name, a + b)
        return out

    def save(self, output: str | Path, shard: str) -> None:
        write_text_atomic(stats_path(output, shard), json.dumps(asdict(self)))


def tally_of_shard(path: Path, cap: int) -> Tally:
    """A fitted shard's account read back from the figures its samples' json carry (a shard whose own
    _stats file is missing: a folder whose fit wrote the shard before its account and stopped between the two,
    or an account deleted). Its fitting time is unknown."""
    from gs_lightning.data.shards import Source, shard_name

    t, figures = Tally(), {"psnr": [], "n_init": [], "n_final": [], "iterations": []}
    source = Source(name=shard_name(str(path)), url=str(path))  # a file, not a pattern: `out [v2]` is no glob
    for raw in source.samples([]):
        if missing := [k for k in (*figures, "bytes") if k not in raw.meta]:
            from gs_lightning.errors import UserError

            raise UserError("fit.output", f"holds {path.name}, whose sample {raw.key} has no {', '.join(missing)} "
                                          "in its json: a shard no fit wrote. Give fit.output a folder of its own")
        for k in figures:
            figures[k].append(raw.meta[k])
        t.bytes_splats += raw.meta["bytes"]
    t.add_images(figures["psnr"], figures["n_init"], figures["n_final"], figures["iterations"], cap)
    t.shards[path.name] = t.images
    return t


def summarise(cfg: FitConfig) -> dict:
    """Merge the accounts of every shard in cfg.output into its summary.json and sizes.json; return the summary."""
    t = Tally()
    for shard in sorted(Path(cfg.output).glob("*.tar")):
        f = stats_path(cfg.output, shard.name)
        t = t.merge(Tally(**json.loads(f.read_text())) if f.exists() else tally_of_shard(shard, cfg.iterations))
    update_sizes(cfg.output, t.shards)
    n = t.images
    mean_n = t.n_final / n if n else 0.0
    summary = {
        "images_fitted": n,
        "images_skipped": len(t.skipped),
        "skipped": t.skipped,
        "shards_written": len(t.shards),
        "shards_per_rank": {r: sum(v == r for v in t.ranks.values()) for r in sorted(set(t.ranks.values()))},
        "psnr_mean": t.psnr_sum / n if n else None,
        "psnr_min": t.psnr_min if n else None,
        "splats_mean": mean_n,
        "pruned_fraction": 1 - t.n_final / t.n_init if t.n_init else 0.0,
        "iterations_mean": t.iterations / n if n else None,
        "iterations_max": t.iterations_max if n else None,
        "images_at_cap": t.at_cap,
        "image_size": cfg.image_size,
        "record": cfg.record,
        "bytes_splats": t.bytes_splats,  # as codec.py counts them (fp16: N * 16; quantized: the whole record)
        "bytes_per_image": t.bytes_splats / n if n else None,
        "compression_ratio": (compression_ratio(cfg.image_size, cfg.image_size, mean_n, t.bytes_splats / t.n_final)
                              if t.bytes_splats and t.n_final else None),
        "seconds": t.seconds,  # summed over shards, each on the rank that fitted it
        "images_per_second": n / t.seconds if t.seconds else None,  # per rank
    }
    write_text_atomic(Path(cfg.output) / "summary.json", json.dumps(summary, indent=2))
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
        f"throughput        {f(s['images_per_second'], '.2f')} images/s per rank",
    ]
    lines += [f"skipped: {k}" for k in s["skipped"]]
    return "\n".join(lines)
