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

    from gs_lightning.data.shards import list_sources
    from gs_lightning.fit.fitter import FitConfig
    from gs_lightning.fit.module import (
        FitProgressBar, ShardBatches, SplatFitModule, SplatShardWriter, collate_one, format_summary, summarise,
    )

    names, overrides = split_args(args)
    cfg = compose(["fit", *names], overrides)
    f = cfg.fit
    pattern = _input_pattern(cfg)
    sources = list_sources(pattern, f.shard_size)
    missing = [s.url for s in sources if s.url is not None and not Path(s.url).exists()]
    if not sources or missing:
        raise ConfigError(
            f"fit.input={pattern!r}: no input shards or images found"
            + (f" (missing: {', '.join(missing[:3])})" if missing else "")
            + "; leave fit.input=embedded to fit the photos that ship with the project"
        )
    fit_cfg = FitConfig.from_config(f)
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


COMMANDS = {"fit": fit}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gs_lightning")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("args", nargs="*", help="experiment/overlay names and key=value overrides")
    ns = parser.parse_args(argv)
    try:
        COMMANDS[ns.command](ns.args)
    except ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
