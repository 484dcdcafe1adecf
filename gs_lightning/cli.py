"""python -m gs_lightning {fit,...}: config to Lightning objects; no maths here."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gs_lightning.config import ConfigError, compose, split_args


def _input_pattern(cfg) -> str:
    if cfg.fit.input == "embedded":
        from gs_lightning.data.demo import write_photo_shard

        return write_photo_shard(cfg.data_root)
    return str(cfg.fit.input)


def fit(args: list[str]) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from gs_lightning.data.shards import existing_sources
    from gs_lightning.fit.fitter import FitConfig
    from gs_lightning.fit.module import (
        FitProgressBar, ShardBatches, SplatFitModule, SplatShardWriter, collate_one, format_summary,
        record_fit_config, summarise,
    )

    names, overrides = split_args(args)
    cfg = compose(["fit", *names], overrides)
    f = cfg.fit
    pattern = _input_pattern(cfg)
    sources = existing_sources(pattern, "fit.input", "Leave fit.input=embedded to fit the photos that ship with "
                               "the project.", f.shard_size)
    fit_cfg = FitConfig.from_config(f)
    record_fit_config(f.output, f)
    dataset = ShardBatches(sources, f.output, f.image_size, f.batch_size)
    kept = len(sources) - len(dataset.shards_to_do())
    writer = SplatShardWriter(f.output, f.image_size, f.iterations)
    trainer = L.Trainer(
        **cfg.trainer, inference_mode=False, logger=False, enable_checkpointing=False,
        use_distributed_sampler=False, callbacks=[writer, FitProgressBar()],
    )
    loader = DataLoader(dataset, batch_size=None, collate_fn=collate_one, num_workers=f.num_workers)
    trainer.predict(SplatFitModule(fit_cfg, backend=f.backend), dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    if trainer.global_rank == 0:
        summary = summarise(f.output, f.image_size, world_size=trainer.world_size)
        print(f"\nfit summary ({f.output}/summary.json); {kept} of {len(sources)} shards were already done and kept")
        print(format_summary(summary))


def _loggers(cfg, run_dir: Path, exp: str) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from omegaconf import OmegaConf

    loggers = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if cfg.logger.wandb:
        import os

        logged_in = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in (
            Path.home().joinpath(".netrc").read_text() if Path.home().joinpath(".netrc").exists() else "")
        loggers.append(WandbLogger(
            project=cfg.logger.project, name=cfg.name, group=cfg.group, save_dir=str(run_dir), job_type=exp,
            offline=not logged_in and os.environ.get("WANDB_MODE") != "online",
            config=OmegaConf.to_container(cfg, resolve=True),
        ))
    return loggers


def train(args: list[str]) -> None:
    import lightning as L
    import open_clip
    from lightning.pytorch.callbacks import LearningRateMonitor
    from omegaconf import OmegaConf

    from gs_lightning.checkpoint import AtomicCheckpoint
    from gs_lightning.data.datamodules import DataCompDataModule, ZeroShotDataModule
    from gs_lightning.models.clip_module import ClipModule

    names, overrides = split_args(args)
    if not names:
        raise ConfigError("train needs an experiment name, e.g. `python -m gs_lightning train gs196 demo`")
    cfg = compose(["base", *names], overrides)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.output_dir) / cfg.name
    m, d = cfg.model, cfg.data
    kind = "rgb" if m.mode == "rgb" else "gs"
    module = ClipModule(
        model_name=m.name, mode=m.mode, gs=OmegaConf.to_container(m.gs), rgb_checkpoint=m.rgb_checkpoint, lr=m.lr,
        weight_decay=m.weight_decay, warmup_steps=m.warmup_steps, transfer_lr_scale=m.transfer_lr_scale,
        unfrozen_blocks=m.unfrozen_blocks, logit_scale_max=m.logit_scale_max, classnames=d.classnames,
    )
    size = open_clip.get_model_config(m.name)["vision_cfg"]["image_size"]
    paths = d[kind]
    val = ZeroShotDataModule(
        kind=kind, path=paths.val, batch_size=d.val_batch_size, num_workers=d.num_workers,
        preprocess=open_clip.image_transform(size, is_train=False) if kind == "rgb" else None,
        max_splats=d.max_splats, classnames=module.classnames, templates=module.templates, key=f"data.{kind}.val",
    )
    data = DataCompDataModule(
        kind=kind, train=paths.train, tokenizer=module.tokenizer, batch_size=d.batch_size,
        preprocess=open_clip.image_transform(size, is_train=True) if kind == "rgb" else None,
        max_splats=d.max_splats, splat_sampling=d.splat_sampling, num_samples=d.num_samples,
        num_workers=d.num_workers, seed=cfg.seed, key=f"data.{kind}.train", val=val,
    )
    checkpoints = run_dir / "checkpoints"
    callbacks = [
        AtomicCheckpoint(dirpath=checkpoints, filename="best", monitor=cfg.checkpoint.monitor, mode="max",
                         save_top_k=1, save_last=False),
        AtomicCheckpoint(dirpath=checkpoints, filename="last", every_n_train_steps=cfg.checkpoint.every_n_train_steps,
                         save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False),
    ]
    loggers = _loggers(cfg, run_dir, "+".join(names))
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = L.Trainer(**cfg.trainer, logger=loggers or False, callbacks=callbacks, use_distributed_sampler=False,
                        default_root_dir=str(run_dir))
    # Every rank says what it was given: sweep agents pass their parameters as these overrides.
    given = ", ".join(f"{k}={OmegaConf.select(cfg, k.split('=')[0].lstrip('+'))}" for k in overrides)
    print(f"[rank {trainer.global_rank}] {cfg.name}: {given or 'no overrides'}", flush=True)
    if trainer.global_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    last = checkpoints / "last.ckpt"
    if cfg.resume and not last.exists():
        print(f"resume=true but {last} does not exist: starting from scratch")
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if cfg.resume and last.exists() else None)


def compare(args: list[str]) -> None:
    from gs_lightning.compare import compare as compare_runs

    parser = argparse.ArgumentParser(prog="python -m gs_lightning compare")
    parser.add_argument("runs", nargs="+", help="run directories (output_dir/name)")
    parser.add_argument("--out", default="outputs/compare")
    ns = parser.parse_args(args)
    print(compare_runs(ns.runs, ns.out))


def sweep(args: list[str]) -> None:
    """Create a W&B sweep from experiments/sweeps/NAME.yaml and run an agent on it (`make sweep SWEEP=NAME`)."""
    import subprocess

    import wandb
    import yaml

    from gs_lightning.config import EXPERIMENTS

    if len(args) != 1:
        raise ConfigError("sweep takes one name: experiments/sweeps/NAME.yaml")
    path = EXPERIMENTS / "sweeps" / f"{args[0]}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"no sweep {args[0]!r} ({path}); known: {known}")
    spec = yaml.safe_load(path.read_text())
    sweep_id = wandb.sweep(spec, project=spec.get("project", "gs-lightning"))
    subprocess.run(["wandb", "agent", f"{wandb.api.viewer()['entity']}/{spec.get('project', 'gs-lightning')}/"
                    f"{sweep_id}"], check=True)


DEMO_RUNS = ("rgb", "gs196", "gs98", "gs196_scratch")


def demo(args: list[str]) -> None:
    """Fit the demo images, train the RGB teacher, transfer to gs196 and gs98, gs196 from scratch, compare."""
    import resource
    import time

    from gs_lightning.compare import compare as compare_runs
    from gs_lightning.data.demo import write_fashion_mnist

    t0 = time.perf_counter()
    cfg = compose(["base", "demo"], [a for a in args if "=" in a])
    data = Path(cfg.data.rgb.train).parents[2]  # outputs/demo/data
    write_fashion_mnist(data)
    fit_root = Path(cfg.data.gs.train).parents[1]  # outputs/demo/fit
    for split in ("train", "val"):
        source, target = cfg.data.rgb[split], Path(cfg.data.gs[split]).parent
        fit(["fit_demo", f"fit.input={source}", f"fit.output={target}"])
    for exp in DEMO_RUNS:
        train([exp, "demo", *args])
    print(f"\n== demo results ({fit_root.parent}/results)")
    print(compare_runs([str(Path(cfg.output_dir) / e) for e in DEMO_RUNS], fit_root.parent / "results"))
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"\nmake demo: wall time {(time.perf_counter() - t0) / 60:.1f} min, peak memory {peak / 2**20:.2f} GiB "
          "(largest single process)")


COMMANDS = {"fit": fit, "train": train, "compare": compare, "demo": demo, "sweep": sweep}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gs_lightning")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("args", nargs="*", help="experiment/overlay names and key=value overrides")
    ns = parser.parse_args(argv)
    try:
        COMMANDS[ns.command](ns.args)
    except (ConfigError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
