"""python -m gs_lightning {fit,train,compare,demo,sweep}: config to Lightning objects; no maths here.

Every user error ends the same way: one line `error: <key or file>: <what to do>` and exit status 2,
before any work starts where it can be known then. SIGTERM or Ctrl-C stops a fit at once, keeping every
finished shard (a rerun does the rest); during training SIGTERM first saves last.ckpt (resume=true).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import warnings
from pathlib import Path

from gs_lightning.config import FitRun, TrainRun, UserError, compose, split_args, validate

# Third-party messages that say nothing about the user's run (filtered at the entry point only).
NOISE_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning's own call of a deprecated torch API
    r"Couldn't infer the batch indices",  # fit batches are ImageBatches, and the writer needs no indices
)
NOISE_LOGS = ("💡 Tip:",)  # Lightning's adverts for its cloud products


def quiet_third_party() -> None:
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)

    class DropNoise(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not any(n in record.getMessage() for n in NOISE_LOGS)

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(DropNoise())


class Interrupted(BaseException):
    """SIGTERM or SIGINT during a fit. A BaseException, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGTERM and SIGINT into Interrupted wherever the main thread is. Lightning's predict loop would
    only note a SIGTERM, and a cluster kills a job that outlives its grace period (~30 s)."""
    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _input_pattern(cfg) -> str:
    if cfg.fit.input == "embedded":
        from gs_lightning.data.demo import write_photo_shard

        return write_photo_shard(cfg.data_root)
    return str(cfg.fit.input)


def fit(args: list[str]) -> None:
    names, overrides = split_args(args)
    cfg = compose(FitRun, ["fit", *names], overrides)
    validate(cfg, FitRun)  # before the heavy imports: a typo is answered at once

    import lightning as L
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from gs_lightning.data.image_batches import ImageBatches, as_is
    from gs_lightning.data.shards import existing_sources
    from gs_lightning.fit.module import FitProgressBar, SplatFitModule, SplatShardWriter
    from gs_lightning.fit.summary import format_summary, record_fit_config, summarise

    f = cfg.fit
    sources = existing_sources(_input_pattern(cfg), "fit.input", "Leave fit.input=embedded to fit the photos that "
                               "ship with the project.", f.shard_size)
    fit_cfg = OmegaConf.to_object(f)
    record_fit_config(f.output, f)
    dataset = ImageBatches(sources, f.output, f.image_size, f.batch_size)
    kept = len(sources) - len(dataset.shards_to_do())
    trainer = _trainer(L, **cfg.trainer, inference_mode=False, logger=False, enable_checkpointing=False,
                       use_distributed_sampler=False, callbacks=[SplatShardWriter(fit_cfg), FitProgressBar()])
    loader = DataLoader(dataset, batch_size=None, collate_fn=as_is, num_workers=f.num_workers)
    with stop_on_signals():
        trainer.predict(SplatFitModule(fit_cfg), dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    if trainer.global_rank == 0:
        summary = summarise(f.output, f.image_size, f.iterations, world_size=trainer.world_size,
                            record=f.record)
        print(f"\nfit summary ({f.output}/summary.json); {kept} of {len(sources)} shards were already done and kept")
        print(format_summary(summary))


def _trainer(L, **kwargs):
    """L.Trainer, with Lightning's refusal of a trainer setting reported as the user error it is."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError) as e:
        raise UserError("trainer", str(e).splitlines()[0]) from None


def _loggers(cfg, run_dir: Path, exp: str) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from omegaconf import OmegaConf

    loggers = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if cfg.logger.wandb:
        import wandb

        # Online when W&B finds credentials (its own check, no prompt, no network), offline otherwise, so a node
        # without `wandb login` still logs; WANDB_MODE, when set, decides.
        offline = not wandb.login(prompt=False, verify=False)
        loggers.append(WandbLogger(project=cfg.logger.project, name=cfg.name, group=cfg.group, save_dir=str(run_dir),
                                   job_type=exp, offline=offline, config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def train(args: list[str]) -> None:
    names, overrides = split_args(args)
    if not names:
        raise UserError("train", "needs an experiment name, e.g. `python -m gs_lightning train gs196 demo`")
    cfg = compose(TrainRun, ["base", *names], overrides)
    validate(cfg, TrainRun)

    import lightning as L
    import open_clip
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    from gs_lightning.checkpoint import AtomicCheckpoint, SaveOnSigterm
    from gs_lightning.data.datamodules import DataCompDataModule, ZeroShotDataModule
    from gs_lightning.models.clip_module import ClipModule

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.output_dir) / cfg.name
    d = cfg.data
    kind = "rgb" if cfg.model.mode == "rgb" else "gs"
    module = ClipModule(**OmegaConf.to_container(cfg.model, resolve=True), eval_set=d.eval_set)
    size = open_clip.get_model_config(cfg.model.name)["vision_cfg"]["image_size"]
    paths = d[kind]
    val = ZeroShotDataModule(
        kind=kind, path=paths.val, batch_size=d.val_batch_size, num_workers=d.num_workers,
        preprocess=open_clip.image_transform(size, is_train=False) if kind == "rgb" else None,
        max_splats=d.max_splats, key=f"data.{kind}.val",
    )
    data = DataCompDataModule(
        kind=kind, train=paths.train, tokenizer=module.tokenizer, batch_size=d.batch_size,
        preprocess=open_clip.image_transform(size, is_train=True) if kind == "rgb" else None,
        max_splats=d.max_splats, splat_sampling=d.splat_sampling, num_samples=d.num_samples,
        num_workers=d.num_workers, seed=cfg.seed, key=f"data.{kind}.train", val=val,
    )
    checkpoints = run_dir / "checkpoints"
    last = checkpoints / "last.ckpt"
    callbacks = [
        AtomicCheckpoint(dirpath=checkpoints, filename="best", monitor=cfg.checkpoint.monitor, mode="max",
                         save_top_k=1, save_last=False),
        AtomicCheckpoint(dirpath=checkpoints, filename="last", every_n_train_steps=cfg.checkpoint.every_n_train_steps,
                         save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False),
        SaveOnSigterm(last),
    ]
    loggers = _loggers(cfg, run_dir, "+".join(names))
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    # No Lightning model summary: ClipModule prints what matters for transfer (what trains, at which lr).
    trainer = _trainer(L, **cfg.trainer, logger=loggers or False, callbacks=callbacks, use_distributed_sampler=False,
                       default_root_dir=str(run_dir), enable_model_summary=False)
    # Every rank says what it was given: sweep agents pass their parameters as these overrides.
    keys = [k.split("=")[0].lstrip("+") for k in overrides]
    given = ", ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in keys)
    print(f"[rank {trainer.global_rank}] {cfg.name}: {given or 'no overrides'}", flush=True)
    if trainer.global_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    if cfg.resume and not last.exists():
        print(f"resume=true but {last} does not exist: starting from scratch")
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if cfg.resume and last.exists() else None,
                    weights_only=True)
    except SIGTERMException:
        raise Interrupted(signal.SIGTERM) from None


def compare(args: list[str]) -> None:
    from gs_lightning.compare import compare as compare_runs

    parser = argparse.ArgumentParser(prog="python -m gs_lightning compare")
    parser.add_argument("runs", nargs="+", help="run directories (output_dir/name)")
    parser.add_argument("--out", default="outputs/compare")
    parser.add_argument("--no-equal-bytes", action="store_true",
                        help="skip the evaluations at equal bytes (JPEG/WebP for the RGB teacher, quantized splats)")
    ns = parser.parse_args(args)
    print(compare_runs(ns.runs, ns.out, with_equal_bytes=not ns.no_equal_bytes))


def sweep(args: list[str]) -> None:
    """Create a W&B sweep from experiments/sweeps/NAME.yaml and run an agent on it (`make sweep SWEEP=NAME`)."""
    import subprocess

    import wandb
    import yaml

    from gs_lightning.config import EXPERIMENTS

    if len(args) != 1:
        raise UserError("sweep", "takes one name: experiments/sweeps/NAME.yaml")
    path = EXPERIMENTS / "sweeps" / f"{args[0]}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise UserError(args[0], f"no sweep of that name ({path}); known: {known}")
    spec = yaml.safe_load(path.read_text())
    sweep_id = wandb.sweep(spec, project=spec.get("project", "gs-lightning"))
    subprocess.run(["wandb", "agent", f"{wandb.api.viewer()['entity']}/{spec.get('project', 'gs-lightning')}/"
                    f"{sweep_id}"], check=True)


# The demo's runs, as (experiment, settings): a teacher trained longer than the splat runs, and query counts for
# its ViT's 7x7 = 49 tokens (gs196: as many as RGB, gs98: half). gs196 also runs at the other DEMO_COUNTS, so
# that Fig. 6 (accuracy vs bytes) has a curve.
DEMO_COUNTS = (8, 16, 32)  # splats per 28x28 image; fit_demo.yaml's own (16) and two more
DEMO_RUNS = [
    ("rgb", ["trainer.max_epochs=4"]),
    ("gs196", ["model.gs.num_queries=49"]),
    ("gs98", ["model.gs.num_queries=24"]),
    ("gs196_scratch", ["model.gs.num_queries=49"]),
]


def _demo_splats(cfg, n: int, own: int) -> dict[str, str]:
    """data.gs.{train,val,val_quantized} of the demo's fit of n splats: demo.yaml's folders for its own count,
    sibling folders (outputs/demo/fit-n8/...) for the others; the eval images' quantized record beside their
    fp16 one (test-q/)."""
    val = Path(cfg.data.gs.val)
    paths = {"train": cfg.data.gs.train, "val": str(val),
             "val_quantized": str(val.parent.with_name(val.parent.name + "-q") / val.name)}
    root = str(Path(cfg.data.gs.train).parents[1])
    return {k: v if n == own else v.replace(root, f"{root}-n{n}", 1) for k, v in paths.items()}


def demo(args: list[str]) -> None:
    """Fit the demo images at DEMO_COUNTS (eval images also in the quantized record), train the RGB teacher,
    transfer to gs196 (at every count) and gs98, gs196 from scratch; compare, at equal bytes too."""
    import resource
    import time

    from gs_lightning.compare import compare as compare_runs
    from gs_lightning.data.demo import write_fashion_mnist

    t0 = time.perf_counter()
    cfg = compose(TrainRun, ["base", "demo"], [a for a in args if "=" in a])
    data = Path(cfg.data.rgb.train).parents[2]  # outputs/demo/data
    write_fashion_mnist(data)
    own = compose(FitRun, ["fit", "fit_demo"]).fit.num_splats
    quantized = f"data.gs.val_quantized={_demo_splats(cfg, own, own)['val_quantized']}"
    runs = [(exp, settings if exp == "rgb" else [*settings, quantized]) for exp, settings in DEMO_RUNS]
    for n in DEMO_COUNTS:
        paths = _demo_splats(cfg, n, own)
        for source, target, record in ((cfg.data.rgb.train, paths["train"], "fp16"),
                                       (cfg.data.rgb.val, paths["val"], "fp16"),
                                       (cfg.data.rgb.val, paths["val_quantized"], "quantized")):
            fit(["fit_demo", f"fit.input={source}", f"fit.output={Path(target).parent}", f"fit.num_splats={n}",
                 f"fit.record={record}"])
        if n != own:
            runs.append(("gs196", [f"name=gs196_n{n}", "model.gs.num_queries=49",
                                   *(f"data.gs.{k}={v}" for k, v in paths.items())]))
    names = []
    for exp, settings in runs:
        train([exp, "demo", *settings, *args])
        names.append(compose(TrainRun, ["base", exp, "demo"], [*settings, *args]).name)
    results = Path(cfg.output_dir).parent / "results"
    print(f"\n== demo results ({results})")
    print(compare_runs([str(Path(cfg.output_dir) / n) for n in names], results))
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"\nmake demo: wall time {(time.perf_counter() - t0) / 60:.1f} min, peak memory {peak / 2**20:.2f} GiB "
          "(largest single process)")


COMMANDS = {"fit": fit, "train": train, "compare": compare, "demo": demo, "sweep": sweep}


def main(argv: list[str] | None = None) -> None:
    quiet_third_party()
    parser = argparse.ArgumentParser(prog="python -m gs_lightning")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("args", nargs="*", help="experiment/overlay names and key=value overrides")
    ns = parser.parse_args(argv)
    try:
        COMMANDS[ns.command](ns.args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"\nstopped by {e}: finished shards and checkpoints are kept; rerun the same command to resume "
              "(train: with resume=true)", file=sys.stderr)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    main()
