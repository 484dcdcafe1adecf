"""The comparison of runs: a results table, the paper's Figures 6 and 7, equal-bytes baselines, and the
edge-cloud report.

    python -m gs_lightning compare RUN_DIR [RUN_DIR ...] [--out DIR] [--no-equal-bytes]

Each run directory is what `train` writes: config.yaml, csv/metrics.csv, csv/hparams.yaml and
checkpoints/best.ckpt. A splat run's splat count, record and bytes per image come from the fit summary
beside its eval shards (data.splats.val), or its training shards' when that has none.

Equal bytes, when an RGB run (the teacher) with a best checkpoint is among the runs: for every splat eval
set of the splat runs (data.splats.val, and data.splats.val_quantized where set), the teacher is evaluated on its own
eval images (data.rgb.val) re-encoded with JPEG and with WebP, each image at the bytes of its own splat
record (data/pixel_codecs.py: the closest quality; the bytes actually used are reported, and how many images
could not get near their budget); and every splat run with data.splats.val_quantized is evaluated on it too.
Those evaluations are cached in out/equal_bytes/, keyed by checkpoint and data, so a rerun is cheap.

Edge-cloud report, per representation: bytes per image; the energy to upload a million images at the
paper's 0.1-0.2 kWh/GB for a mobile uplink and 0.03 kWh/GB for fixed broadband (its section 2, "The
Edge-Cloud Data Transfer Challenge", citing the EU ICT impact study [1]); and the time to encode one image
on this machine's CPU, measured (the fit's seconds per image for splats, batched as it ran; one Pillow
encode at the chosen quality for JPEG and WebP, whose search for the quality is not counted).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gs_lightning.atomic import write_text_atomic
from gs_lightning.errors import UserError
from gs_lightning.splats import BYTES_PER_SPLAT

PIXEL_BASELINES = ("jpeg", "webp")
RENDERED = "rendered splats"  # the teacher on the eval images rendered back from their splats: the ceiling
KWH_PER_GB = {"mobile": (0.1, 0.2), "fixed": 0.03}  # paper section 2, [1]
UPLOADS = 1_000_000


@dataclass
class Run:
    name: str
    mode: str
    queries: int | None
    splats: float | None  # mean splats per eval image (None for RGB)
    compression: float | None  # uint8 pixels / splat bytes as stored; 1.0 for RGB input, None: no fit summary
    trainable: float | None  # share of parameters trained
    epochs: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> {epoch (from 0): value}
    run_dir: Path | None = None
    record: str | None = None  # the splat record of its eval set
    bytes: float | None = None  # bytes per eval image as stored
    image_size: int | None = None
    encode_ms: float | None = None  # the fit's time per image
    config: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """What the model reads: "rgb" (the teacher) or "splats"."""
        from gs_lightning.models.clip_module import input_kind

        return input_kind(self.mode)

    def best(self) -> tuple[float, float]:
        """(top-1, top-5) at the epoch of the best top-1."""
        top1 = self.epochs.get("val/top1", {})
        scored = [e for e, v in top1.items() if math.isfinite(v)]  # an epoch whose validation gave NaN is no best
        if not scored:
            return float("nan"), float("nan")
        e = max(scored, key=top1.__getitem__)
        return top1[e], self.epochs.get("val/top5", {}).get(e, float("nan"))

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs counted from 1, values) of a metric, at the epochs it was logged: validation may skip some
        (trainer.check_val_every_n_epoch)."""
        values = self.epochs.get(key, {})
        return [e + 1 for e in sorted(values)], [values[e] for e in sorted(values)]


@dataclass
class Point:
    """A result beside the training logs: a checkpoint evaluated on other inputs (Fig. 6's extra curves)."""

    name: str
    model: str  # the run evaluated
    input: str  # "quantized splats", "jpeg", "webp"
    bytes: float  # per image, as stored
    top1: float
    top5: float
    encode_ms: float | None
    matches: str  # the splat eval set whose bytes (jpeg, webp) or images (splats) it takes
    note: str = ""


def splat_set(pattern: str | None) -> dict | None:
    """The fit summary beside a shard pattern (braces live in the shard file name), with bytes per image."""
    from gs_lightning.data.shards import pattern_folder

    if not pattern:
        return None
    f = pattern_folder(pattern) / "summary.json"
    if not f.exists():
        return None
    s = json.loads(f.read_text())
    # A summary that names no record and no bytes holds float16 splats, 16 B each.
    s.setdefault("record", "fp16")
    if s.get("bytes_per_image") is None and s.get("splats_mean") is not None:
        s["bytes_per_image"] = BYTES_PER_SPLAT * s["splats_mean"]
    s["encode_ms"] = 1000 * s["seconds"] / s["images_fitted"] if s.get("seconds") and s.get("images_fitted") else None
    return s


def earlier_metrics(csv_dir: Path) -> list[tuple[int, Path]]:
    """(K, csv/metrics-K.csv) of a resumed run's earlier attempts, oldest first (cli.keep_earlier_metrics)."""
    return sorted((int(m.group(1)), f) for f in csv_dir.glob("metrics-*.csv")
                  if (m := re.fullmatch(r"metrics-(\d+)\.csv", f.name)))


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    cfg_file, metrics_file = run_dir / "config.yaml", run_dir / "csv" / "metrics.csv"
    for f in (cfg_file, metrics_file):
        if not f.exists():
            raise UserError(str(run_dir), f"is not a finished train run: {f} is missing")
    cfg = yaml.safe_load(cfg_file.read_text())
    mode = cfg["model"]["mode"]
    run = Run(cfg["name"], mode, None, None, None, None, run_dir=run_dir, config=cfg)
    if run.kind == "rgb":
        run.compression = 1.0
    if run.kind == "splats":
        paths = cfg["data"]["splats"]
        summary = splat_set(paths.get("val")) or splat_set(paths.get("train"))
        if summary and summary.get("compression_ratio"):
            run.splats, run.compression = summary["splats_mean"], summary["compression_ratio"]
            run.record, run.bytes, run.image_size = summary["record"], summary["bytes_per_image"], summary["image_size"]
            run.encode_ms = summary["encode_ms"]
    hparams_file = run_dir / "csv" / "hparams.yaml"
    hparams = (yaml.safe_load(hparams_file.read_text()) or {}) if hparams_file.exists() else {}
    run.queries, run.trainable = hparams.get("queries"), hparams.get("trainable_share")
    # A resumed run's earlier attempts left csv/metrics-K.csv (cli.keep_earlier_metrics): read in order, an
    # epoch that a later attempt logged again takes the later value.
    earlier = earlier_metrics(metrics_file.parent)
    per_epoch: dict[str, dict[int, float]] = {}
    for path in [*(f for _, f in earlier), metrics_file]:
        with open(path) as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                for key, value in row.items():
                    if value and key not in ("epoch", "step"):
                        per_epoch.setdefault(key, {})[int(row["epoch"])] = float(value)
    run.epochs = per_epoch
    return run


def series(name: str) -> str:
    """The experiment a run belongs to: its name without a splat-count suffix (gs196_n8 -> gs196)."""
    return re.sub(r"_n\d+$", "", name)


def _bytes(b: float | None) -> str:
    return "-" if b is None else f"{b:,.0f}"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}x"


def _percent(v: float) -> str:
    return f"{100 * v:.1f}%" if math.isfinite(v) else "n/a"


def table(runs: list[Run], points: list[Point] = ()) -> str:
    head = ("| model | mode | input | splats | bytes/image | compression | trainable | top-1 | top-5 |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in runs:
        top1, top5 = r.best()
        given = "images" if r.kind == "rgb" else f"{r.record} splats" if r.record else "splats"
        lines.append(
            f"| {r.name} | {r.mode}{f' ({r.queries} queries)' if r.queries else ''} | {given} | "
            f"{'-' if r.splats is None else f'{r.splats:.0f}'} | {_bytes(r.bytes)} | {_ratio(r.compression)} | "
            f"{'-' if r.trainable is None else f'{100 * r.trainable:.1f}%'} | {_percent(top1)} | {_percent(top5)} |"
        )
    for p in points:
        what = f"{p.input} at the bytes of {p.matches}" if p.input in PIXEL_BASELINES else \
            f"{p.matches}, rendered to pixels" if p.input == RENDERED else p.input
        lines.append(f"| {p.name} | {p.model}'s best, evaluated | {what}{f' ({p.note})' if p.note else ''} | - | "
                     f"{_bytes(p.bytes)} | - | - | {100 * p.top1:.1f}% | {100 * p.top5:.1f}% |")
    return "\n".join(lines)


# ---- equal bytes ------------------------------------------------------------------------------------------


def files_signature(*paths: str | Path) -> str:
    """What a cached evaluation depends on: the files (names, sizes, times) behind checkpoints, patterns and
    image folders."""
    from gs_lightning.data.shards import expand_urls, pattern_folder

    parts = []
    for p in map(str, paths):
        if Path(p).is_dir():  # an image folder (ImageNet's val): its images, which may change inside it
            files = sorted(f for f in Path(p).rglob("*") if f.is_file())
        else:
            files = [Path(p)] if Path(p).is_file() else [Path(u) for u in expand_urls(p)] + [pattern_folder(p) / "summary.json"]
        parts += [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cached(folder: Path, key: str, compute) -> dict:
    """compute(), kept in folder/result.json under `key`: returned from there while the key matches."""
    f = folder / "result.json"
    try:
        kept = json.loads(f.read_text())
        if kept.get("signature") == key:
            return kept["result"]
    except (OSError, ValueError, AttributeError, KeyError):  # none yet, or not one this function wrote: again
        pass
    result = compute()
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(f, json.dumps({"signature": key, "result": result}, indent=1))
    return result


def _content(pattern: str) -> str:
    """The hash of the shards' bytes: two re-encodings that made the same images make the same hash."""
    from gs_lightning.data.shards import expand_urls

    h = hashlib.sha256()
    for u in sorted(expand_urls(pattern)):
        h.update(Path(u).read_bytes())
    return h.hexdigest()[:16]


def _evaluated(out: Path, run: Run, pattern: str) -> dict:
    """{"top1", "top5"} of the run's best checkpoint on the shards of `pattern`, evaluated once per content: JPEG at
    every splat budget below its smallest file is the same images each time."""
    from gs_lightning.evaluate import evaluate

    best = run.run_dir / "checkpoints" / "best.ckpt"
    return cached(out / "equal_bytes" / "evaluations" / f"{run.name}-{_content(pattern)}", files_signature(best),
                   lambda: evaluate(run.run_dir, pattern))


def _slug(pattern: str) -> str:
    """A splat set's folder name: its folders, to read, and its pattern's hash, as two sets can share a folder
    (all of its shards, and the first ten of them)."""
    parent = Path(pattern).parent
    return f"{parent.parent.name}-{parent.name}-{hashlib.sha256(pattern.encode()).hexdigest()[:8]}"


def _fresh(folder: Path) -> Path:
    """`folder`, emptied: what an earlier computation left there (another set's shards) would be read too."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return folder


def equal_bytes(runs: list[Run], out: Path) -> list[Point]:
    """The teacher on JPEG/WebP at each splat eval set's per-image bytes and on the set's splats rendered back to
    pixels; splat runs on their quantized sets."""
    from gs_lightning.data.pixel_codecs import reencode_eval_set
    from gs_lightning.data.rendered import render_eval_set
    from gs_lightning.data.shards import literal, splat_bytes
    from gs_lightning.evaluate import evaluate

    teacher = next((r for r in runs if r.kind == "rgb" and (r.run_dir / "checkpoints" / "best.ckpt").exists()), None)
    points, sets = [], {}  # sets: splat eval pattern -> label
    for r in runs:
        if r.kind == "rgb":
            continue
        paths = r.config["data"]["splats"]
        if paths.get("val") and splat_set(paths["val"]):
            sets.setdefault(paths["val"], f"{r.splats:.0f} {r.record} splats")
        quantized = paths.get("val_quantized")
        best = r.run_dir / "checkpoints" / "best.ckpt"
        if quantized and best.exists() and (s := splat_set(quantized)):
            label = f"{s['splats_mean']:.0f} {s['record']} splats"
            sets.setdefault(quantized, label)
            acc = cached(out / "equal_bytes" / f"{r.name}-on-{_slug(quantized)}", files_signature(best, quantized),
                          lambda: evaluate(r.run_dir, quantized))
            points.append(Point(f"{r.name} on {label}", r.name, f"{s['record']} splats", s["bytes_per_image"],
                                acc["top1"], acc["top5"], s["encode_ms"], label))
    if teacher is None:
        return points
    images = teacher.config["data"]["rgb"]["val"]
    best = teacher.run_dir / "checkpoints" / "best.ckpt"
    for pattern, label in sets.items():
        s = splat_set(pattern)
        size = s["image_size"]
        folder = out / "equal_bytes" / f"{teacher.name}-rendered-{_slug(pattern)}"

        def rendered(folder=folder, pattern=pattern, size=size):
            account = render_eval_set(pattern, size, _fresh(folder / "shards"))
            return {**_evaluated(out, teacher, f"{literal(folder / 'shards')}/*.tar"), **account}

        res = cached(folder, files_signature(best, pattern), rendered)
        points.append(Point(f"{teacher.name} on rendered {label}", teacher.name, RENDERED, s["bytes_per_image"],
                            res["top1"], res["top5"], None, label))
        for codec in PIXEL_BASELINES:
            folder = out / "equal_bytes" / f"{teacher.name}-{codec}-at-{_slug(pattern)}"

            def compute(folder=folder, codec=codec, pattern=pattern, size=size):
                account = reencode_eval_set(images, splat_bytes(pattern), size, codec, _fresh(folder / "shards"))
                return {**_evaluated(out, teacher, f"{literal(folder / 'shards')}/*.tar"),
                        **{k: v for k, v in account.items() if k != "per_image"}}

            res = cached(folder, files_signature(best, images, pattern), compute)
            missed = {k: v for k, v in res["status"].items() if k != "on" and v}
            note = f"{res['bytes_mean'] / res['budget_mean']:.2f}x the budget" + (
                "; " + ", ".join(f"{v} of {res['images']} {k}" for k, v in missed.items()) if missed else "")
            points.append(Point(f"{teacher.name} on {codec}", teacher.name, codec, res["bytes_mean"], res["top1"],
                                res["top5"], res["encode_ms_mean"], label, note))
    return points


# ---- the edge-cloud report ------------------------------------------------------------------------------


def edge_cloud(runs: list[Run], points: list[Point]) -> str:
    rows: dict[tuple, tuple] = {}  # (input, bytes) -> (label, bytes, encode ms, how it was timed)
    sizes = {r.image_size for r in runs if r.image_size}
    for size in sorted(sizes):
        rows[("pixels", size)] = (f"uint8 pixels {size}x{size}", 3 * size * size, None, "-")
    for r in runs:
        if r.bytes is not None:
            rows.setdefault((r.record, round(r.bytes)), (f"{r.splats:.0f} splats, {r.record}", r.bytes, r.encode_ms, "fit"))
    for p in points:
        if p.input == RENDERED:  # what a receiver renders; nothing more is sent
            continue
        if p.input in PIXEL_BASELINES:
            rows.setdefault((p.input, round(p.bytes)), (f"{p.input} at {p.matches}' bytes", p.bytes, p.encode_ms,
                                                        "one encode"))
        else:
            rows.setdefault((p.input, round(p.bytes)), (p.matches, p.bytes, p.encode_ms, "fit"))
    lo, hi = KWH_PER_GB["mobile"]
    lines = [f"Uploading {UPLOADS:,} images (paper section 2: {lo}-{hi} kWh/GB mobile uplink, "
             f"{KWH_PER_GB['fixed']} kWh/GB fixed broadband; 1 GB = 1e9 bytes); encode time per image on this CPU.",
             "", "| representation | bytes/image | mobile uplink (kWh) | fixed broadband (kWh) | encode ms/image |",
             "|---|---|---|---|---|"]
    for label, b, ms, how in sorted(rows.values(), key=lambda v: v[1]):
        gb = b * UPLOADS / 1e9
        lines.append(f"| {label} | {b:,.0f} | {gb * lo:.3g}-{gb * hi:.3g} | {gb * KWH_PER_GB['fixed']:.3g} | "
                     f"{'-' if ms is None else f'{ms:.2f} ({how})'} |")
    return "\n".join(lines)


# ---- plots -----------------------------------------------------------------------------------------------


def plot(runs: list[Run], out: Path, points: list[Point] = ()) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    colour = {r.name: f"C{i}" for i, r in enumerate(runs)}
    by_name = {r.name: r for r in runs}
    # Fig. 6: zero-shot accuracy vs bytes per image; the runs of one series (one experiment at several splat
    # counts: gs196, gs196_n8, gs196_n32) form a curve per record.
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    for ax, k, label in ((axes[0], 0, "top-1"), (axes[1], 1, "top-5")):
        curves: dict[str, list[tuple[float, float]]] = {}
        for r in runs:
            acc = 100 * r.best()[k]
            if r.kind == "rgb":
                ax.axhline(acc, color=colour[r.name], ls="--", label=f"{r.name} (RGB teacher, original images)")
            elif r.bytes is not None:
                curves.setdefault(f"{series(r.name)}, {r.record}", []).append((r.bytes, acc))
        for p in points:  # a splat run's other record joins its series' curve; the teacher's inputs are their own
            r = by_name.get(p.model)
            name = f"{series(r.name)}, {p.input.split()[0]}" if r and r.kind == "splats" else \
                f"{p.model} on {p.input}"
            curves.setdefault(name, []).append((p.bytes, 100 * (p.top1, p.top5)[k]))
        for i, (name, xy) in enumerate(curves.items()):
            xs, ys = zip(*sorted(xy))
            style = "s--" if any(c in name for c in PIXEL_BASELINES) else "^:" if RENDERED in name else "o-"
            ax.plot(xs, ys, style, color=f"C{(i + len(runs)) % 10}", ms=6, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("bytes per image, as stored")
        ax.set_ylabel(f"zero-shot {label} (%)")
        ax.grid(alpha=0.3, which="both")
    # Below the axes, where it hides no point.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Zero-shot accuracy vs bytes per image (paper Fig. 6, with JPEG and WebP at equal bytes)")
    fig.tight_layout(rect=(0, 0.1 + 0.035 * ((len(axes[0].get_legend_handles_labels()[1]) + 2) // 3), 1, 1))
    paths.append(out / "accuracy_vs_bytes.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # Fig. 7: top-1, top-5, loss and logit scale per epoch.
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = (("val/top1", "zero-shot top-1"), ("val/top5", "zero-shot top-5"),
              ("train/loss_epoch", "contrastive loss"), ("train/logit_scale_epoch", "logit scale"))
    for ax, (key, title) in zip(axes.flat, panels):
        for r in runs:  # one colour per run, as in the figure above
            xs, ys = r.curve(key)
            if ys:
                ax.plot(xs, ys, "o-" if r.mode != "scratch" else "s--", color=colour[r.name],
                        label=r.name)
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


def compare(run_dirs: list[str], out: str | Path, with_equal_bytes: bool = True) -> str:
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = equal_bytes(runs, out) if with_equal_bytes else []
    text = table(runs, points) + "\n\n" + edge_cloud(runs, points)
    write_text_atomic(out / "results.md", table(runs, points) + "\n")
    write_text_atomic(out / "edge_cloud.md", edge_cloud(runs, points) + "\n")
    paths = plot(runs, out, points)
    return text + "\n\n" + "\n".join(f"plot: {p}" for p in paths)


# ---- the zero-shot suite -------------------------------------------------------------------------------------


@dataclass
class SuiteRow:
    """One run on a suite: its main metric per task (None: not evaluated), and what its input costs."""

    name: str
    kind: str  # rgb | splats
    values: float  # values per image: pixels x 3, or splats x 8
    compression: float  # uint8 pixels over the bytes as stored
    load_rate: float | None  # samples/s its eval DataModule reads (decoded, ready for the model)
    scores: dict[str, float | None] = field(default_factory=dict)
    read: dict[str, tuple[int, int]] = field(default_factory=dict)  # task -> (samples scored, samples unreadable)

    def mean(self) -> float | None:
        got = [v for v in self.scores.values() if v is not None]
        return sum(got) / len(got) if got else None


def suite_table(rows: list[SuiteRow], tasks: list, reference: SuiteRow | None) -> str:
    """The published Table 1's shape: per task, the mean, and the mean of the per-task ratios to `reference`
    (tasks: zeroshot.tasks.Task; those not evaluated show their metric and n/a, and count in no mean)."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    head = ["model", "input", "values/image", "compression", "load speed-up"] + \
        [f"{t.title} ({t.metric})" for t in tasks] + ["mean", f"ratio to {reference.name}" if reference else "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratios = [r.scores[t.name] / reference.scores[t.name] for t in tasks
                  if reference and r.scores.get(t.name) is not None and reference.scores.get(t.name)]
        speed = f"{r.load_rate / reference.load_rate:.1f}x" if reference and r.load_rate and reference.load_rate \
            else "-"
        cells = [r.name, "images" if r.kind == "rgb" else "splats", f"{r.values:,.0f}", f"{r.compression:.1f}x", speed]
        cells += [pct(r.scores.get(t.name)) for t in tasks]
        cells += [pct(r.mean()), f"{sum(ratios) / len(ratios):.2f}" if ratios else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    unscored = [t for t in tasks if not t.evaluable]
    if unscored:
        lines.append(f"\n{len(unscored)} of {len(tasks)} tasks not evaluated (their metric needs more than labelled "
                     f"images: {', '.join(sorted({t.metric for t in unscored}))}); the mean is over the other "
                     f"{len(tasks) - len(unscored)}.")
    titles = {t.name: t.title for t in tasks}
    for r in rows:
        lost = {task: (k, n + k) for task, (n, k) in r.read.items() if k}
        if lost:
            lines.append(f"\n{r.name} is scored on the samples it could read: " + ", ".join(
                f"{titles.get(task, task)} {k:,} of {n:,} unreadable" for task, (k, n) in lost.items()) + ".")
    return "\n".join(lines)


def suite_csv(rows: list[SuiteRow], tasks: list, path: Path) -> None:
    import io

    with io.StringIO(newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "task", "metric", "value", "samples", "unreadable", "values_per_image", "compression",
                    "load_rate"])
        for r in rows:
            for t in tasks:
                v = r.scores.get(t.name)
                read = ("", "") if v is None else r.read.get(t.name, ("", ""))  # the value's samples, those lost
                w.writerow([r.name, t.name, t.metric, "" if v is None else f"{v:.6f}", *read, f"{r.values:.0f}",
                            f"{r.compression:.4f}", "" if r.load_rate is None else f"{r.load_rate:.1f}"])
        write_text_atomic(path, f.getvalue())


def suite_plot(rows: list[SuiteRow], tasks: list, path: Path) -> Path:
    """Each task's main metric per run, side by side, and their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in tasks if t.evaluable]
    labels = [t.title for t in shown] + ["mean"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) * max(1, len(rows)) / 3), 4.5))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        ys = [100 * (r.scores.get(t.name) or 0) for t in shown] + [100 * (r.mean() or 0)]
        ax.bar([j + i * width for j in range(len(labels))], ys, width, label=r.name, color=f"C{i % 10}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("main metric (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Zero-shot suite: each task's main metric, and the mean")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
