"""The real configs, composed from experiments/ and shrunk for a 2-core CPU: one place for "tiny".

Tests take what the user's commands take (the typed configs' defaults, the experiment files), changed only in
size, so a test never runs on settings no user has.
"""
from dataclasses import replace

import pytest
from omegaconf import OmegaConf

from gs_lightning.config import TrainRun, compose, load_fit_config
from gs_lightning.fit.config import FitConfig, PruneConfig

# A ViT of 3 blocks at width 32 on 16x16 images, and a splat encoder to match.
TINY_MODEL = ["model.name=ViT-Tiny-16", "model.splat_encoder.num_queries=5", "model.splat_encoder.resampler_heads=2",
              "model.splat_encoder.stem_hidden=16", "model.splat_encoder.num_freqs=3", "model.warmup_steps=1"]
# `train` on the CPU, in the test's process tree: no workers, no W&B, no bar.
TINY_TRAIN = [*TINY_MODEL, "data.num_workers=0", "logger.wandb=false", "trainer.enable_progress_bar=false",
              "trainer.accelerator=cpu"]
# `fit` of 16 splats on 32x32 images, a few iterations.
TINY_FIT = ["fit.num_splats=16", "fit.iterations=5", "fit.image_size=32", "fit.num_workers=0",
            "trainer.accelerator=cpu"]


def shipped_fit_config(names=(), **changes) -> FitConfig:
    """The shipped recipe (+ experiments/fit/ files) as fit_batch takes it, pruning off unless given, with
    changes."""
    return replace(load_fit_config(list(names)), **{"prune": PruneConfig.off(), **changes})


def shipped_model_kwargs(overrides=(), **changes) -> dict:
    """ClipModule's keywords from the shipped model node with TINY_MODEL, plus changes."""
    cfg = compose(TrainRun, [], [*TINY_MODEL, *overrides])
    return {**OmegaConf.to_container(cfg.model, resolve=True), **changes}


@pytest.fixture
def fit_cfg():
    return shipped_fit_config


@pytest.fixture(scope="session")
def model_kwargs():
    return shipped_model_kwargs
