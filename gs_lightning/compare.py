"""The comparison of runs, from their CSV logs: a results table and plots like the paper's Figures 6 and 7.

    python -m gs_lightning compare RUN_DIR [RUN_DIR ...] [--out DIR]

Each run directory is what `train` writes: config.yaml, csv/metrics.csv, csv/hparams.yaml. A splat run's
splat count and compression ratio come from the fit summary beside its training shards.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class Run:
    name: str
    mode: str
    queries: int | None
    splats: float | None  # mean splats per training image (None for RGB)
    compression: float  # uint8 pixels / float16 splats; 1.0 for RGB input
    trainable: float | None  # share of parameters trained
    epochs: dict[str, list[float]] = field(default_factory=dict)  # metric -> value per epoch

    def best(self) -> tuple[float, float]:
        """(top-1, top-5) at the epoch of the best top-1."""
        top1 = self.epochs.get("val/top1", [])
        if not top1:
            return float("nan"), float("nan")
        i = max(range(len(top1)), key=top1.__getitem__)
        return top1[i], self.epochs.get("val/top5", [float("nan")] * len(top1))[i]


def _fit_summary(pattern: str) -> dict | None:
    f = Path(pattern).parent / "summary.json"  # braces live in the shard file name
    return json.loads(f.read_text()) if f.exists() else None


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    cfg_file, metrics_file = run_dir / "config.yaml", run_dir / "csv" / "metrics.csv"
    for f in (cfg_file, metrics_file):
        if not f.exists():
            raise FileNotFoundError(f"{run_dir} is not a finished train run: {f} is missing")
    cfg = yaml.safe_load(cfg_file.read_text())
    mode = cfg["model"]["mode"]
    splats, compression = None, 1.0
    if mode != "rgb":
        summary = _fit_summary(cfg["data"]["gs"]["train"])
        if summary and summary.get("compression_ratio"):
            splats, compression = summary["splats_mean"], summary["compression_ratio"]
    hparams_file = run_dir / "csv" / "hparams.yaml"
    hparams = (yaml.safe_load(hparams_file.read_text()) or {}) if hparams_file.exists() else {}
    per_epoch: dict[str, dict[int, float]] = {}
    with open(metrics_file) as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            for key, value in row.items():
                if value and key not in ("epoch", "step"):
                    per_epoch.setdefault(key, {})[int(row["epoch"])] = float(value)
    epochs = {k: [v[e] for e in sorted(v)] for k, v in per_epoch.items()}
    # trainable_share and queries are what the built model reported at fit start (ClipModule.on_fit_start)
    return Run(cfg["name"], mode, hparams.get("queries"), splats, compression, hparams.get("trainable_share"), epochs)


def table(runs: list[Run]) -> str:
    head = "| model | mode | splats | compression | trainable | top-1 | top-5 |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for r in runs:
        top1, top5 = r.best()
        lines.append(
            f"| {r.name} | {r.mode}{f' ({r.queries} queries)' if r.queries else ''} | "
            f"{'-' if r.splats is None else f'{r.splats:.0f}'} | {r.compression:.1f}x | "
            f"{'-' if r.trainable is None else f'{100 * r.trainable:.1f}%'} | {100 * top1:.1f}% | {100 * top5:.1f}% |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    # Fig. 6: zero-shot accuracy vs compression, the RGB teacher as the reference line.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, k, label in ((axes[0], 0, "top-1"), (axes[1], 1, "top-5")):
        for i, r in enumerate(runs):
            acc = 100 * r.best()[k]
            if r.mode == "rgb":
                ax.axhline(acc, color=f"C{i}", ls="--", label=f"{r.name} (RGB teacher)")
            else:
                ax.plot(r.compression, acc, "o" if r.mode == "transfer" else "s", color=f"C{i}", ms=8, label=r.name)
        ax.set_xlabel("compression ratio vs uint8 pixels")
        ax.set_ylabel(f"zero-shot {label} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Zero-shot accuracy vs compression (paper Fig. 6)")
    fig.tight_layout()
    paths.append(out / "accuracy_vs_compression.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # Fig. 7: top-1, top-5, loss and logit scale per epoch.
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = (("val/top1", "zero-shot top-1"), ("val/top5", "zero-shot top-5"),
              ("train/loss_epoch", "contrastive loss"), ("train/logit_scale_epoch", "logit scale"))
    for ax, (key, title) in zip(axes.flat, panels):
        for i, r in enumerate(runs):  # one colour per run, as in the figure above
            ys = r.epochs.get(key)
            if ys:
                ax.plot(range(1, len(ys) + 1), ys, "o-" if r.mode != "scratch" else "s--", color=f"C{i}", label=r.name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Scratch vs transfer per epoch (paper Fig. 7)")
    fig.tight_layout()
    paths.append(out / "training_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def compare(run_dirs: list[str], out: str | Path) -> str:
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    text = table(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    paths = plot(runs, out)
    return text + "\n\n" + "\n".join(f"plot: {p}" for p in paths)
