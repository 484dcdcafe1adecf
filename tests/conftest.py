"""The real configs, composed from experiments/ and shrunk for a 2-core CPU: one place for "tiny".

Tests take what the user's commands take (the typed configs' defaults, the experiment files), changed only in
size, so a test never runs on settings no user has.
"""
import functools
import importlib.util
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

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


# mutmut's per-test map (make mutmut) records the functions a test enters in its own process, and credits a
# shared fixture's work to the first test that sets it up. While the map is made, every Python a test starts
# writes what it entered (tests/mutants/subprocess_stats), and a fixture's hits are credited to every test that
# uses it, so code reached only through the CLI or a module-scoped fixture is tested too.
_SUBPROCESS_STATS = Path(__file__).parent / "mutants" / "subprocess_stats"
_FIXTURE_HITS: dict = {}


def _collecting_mutmut_stats() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def _subprocess_hits() -> set[str]:
    hits = set()
    for f in Path(os.environ["GS_MUTMUT_HITS"]).glob("*.txt"):
        hits.update(f.read_text().split())
        f.unlink()
    return hits


@functools.cache
def _record_forks():
    """The test's own forks (DataLoader workers) write their hits too, by the hook the Pythons it starts load.
    Cached: loaded and registered once, and kept alive (the fork registry holds it weakly)."""
    spec = importlib.util.spec_from_file_location("gs_mutmut_hits", _SUBPROCESS_STATS / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.record_forks()
    return module


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _collecting_mutmut_stats():
        _record_forks()  # before GS_MUTMUT_HITS is set: the hook's own import-time setup is for started Pythons
        os.environ["GS_MUTMUT_HITS"] = tempfile.mkdtemp(prefix="mutmut-hits-")
        os.environ["GS_MUTMUT_PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SUBPROCESS_STATS),
                                                                 os.environ["GS_MUTMUT_PYTHONPATH"]]))


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if not (_collecting_mutmut_stats() and "GS_MUTMUT_HITS" in os.environ):
        yield
        return
    from mutmut.state import state
    before = set(state()._stats)
    yield
    _FIXTURE_HITS[fixturedef] = (state()._stats - before) | _subprocess_hits()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if "GS_MUTMUT_HITS" not in os.environ:
        return
    from mutmut.state import state
    state()._stats.update(_subprocess_hits())
    for name in item.fixturenames:
        for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
            state()._stats.update(_FIXTURE_HITS.get(fixturedef, ()))
    shutil.rmtree(os.environ.pop("GS_MUTMUT_HITS"), ignore_errors=True)
    os.environ["PYTHONPATH"] = os.environ.pop("GS_MUTMUT_PYTHONPATH")


def pytest_collection_modifyitems(session, config, items):
    """Under mutmut the tests come as a set of ids, in no order: back into file order, so that a module's
    fixtures (a trained run, the CLI's answers) are made once, not once per visit to the module."""
    if "MUTANT_UNDER_TEST" in os.environ:
        items.sort(key=lambda item: (str(item.path), item.location[1]))
