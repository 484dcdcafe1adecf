"""FitConfig: the `fit` node of `python -m gs_lightning fit`. Its defaults are the shipped recipe, tuned on
held-out photos (README "Fitting"); experiments/fit/*.yaml hold other recipes as differences from it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from gs_lightning.codec import RECORDS
from gs_lightning.fit.init import INITS
from gs_lightning.fit.parameterization import PARAMETERIZATIONS
from gs_lightning.render import BACKENDS
from gs_lightning.schema import setting


@dataclass
class LearningRates:
    """Adam's learning rate per parameter, in the units of fit.parameterization; each decays (cosine) over the
    run's Adam steps (fit.coarse_iterations' and fit.iterations; with fit.coarse_restart, over each part)."""

    xy: float = setting(0.2, "centres: sigmas along each Gaussian's axes under axes, pixels under log_scale", gt=0)
    diagonal: float = setting(0.08, "l11, l22 (their logs under axes and log_scale)", gt=0)
    shear: float = setting(0.08, "l21", gt=0)
    rgb: float = setting(0.015, "colour weights", gt=0)
    decay_to: float = setting(0.05, "the cosine decay's end, as a fraction of every lr", gt=0, le=1)
    beta1: float = setting(0.9, "Adam's first-moment decay", ge=0, lt=1)
    # Adam's second moment averages about the last 1 / (1 - beta2) squared gradients. A fit's gradients shrink
    # by orders of magnitude within its run, so an average over much of the run remembers the first ones and
    # the late steps fall far below the scheduled rate: at 300 iterations 0.95 gave +1.3 dB at 400 Gaussians
    # and +2.4 dB at 4900 over Adam's 0.999 on held-out photos. Like the cosine decay, the horizon scales with
    # the run up to 300 steps (schedule.adam_beta2): at 100 iterations 0.85 gains +0.8 dB at 400 and +1.8 dB
    # at 4900 over 0.95 on the tuning photos; longer runs keep 0.95 (0.995 at 3000 lost 0.04-0.23 dB).
    beta2: Optional[float] = setting(None, "Adam's second-moment decay; null: 1 - 15 / the run's Adam steps, its "
                                           "horizon a fifteenth of the run, within [0.85, 0.95] (0.85 at 100 "
                                           "steps and below, 0.95 at 300 and above)", gt=0, lt=1)


@dataclass
class PruneConfig:
    """Luminance pruning (paper 4.4): an L1 penalty pushes weak colours to zero, then Gaussians whose
    luminance 0.2126|R| + 0.7152|G| + 0.0722|B| is below the threshold are dropped."""

    l1_weight: float = setting(0.0005, "weight of the mean |rgb| per image in the loss", ge=0)
    threshold: float = setting(0.02, "prune a Gaussian whose luminance is below this (0: never)", ge=0)
    at: list[float] = setting(lambda: [0.5, 0.75], "when to prune, as fractions of fit.iterations", ge=0, lt=1)

    @classmethod
    def off(cls) -> "PruneConfig":
        """No L1 penalty and no pruning (the benchmarks compare recipes without it)."""
        return cls(l1_weight=0.0, threshold=0.0, at=[])


@dataclass
class FitConfig:
    input: str = setting("embedded", "shard pattern (dir/{00000..00099}.tar, .tar.gz too), glob, comma list, "
                                     "image folder or image files (photos/*.{jpg,png}); a brace or comma of a name "
                                     "is written \\{ \\, ; 'embedded': the photos "
                                     "that ship with scikit-image")
    output: str = setting("outputs/fit/photos-400", "folder of the fitted shards (a rerun there resumes)")
    num_splats: int = setting(400, "Gaussians per image", ge=1)
    iterations: int = setting(300, "Adam steps per image at full resolution, after any fit.coarse_iterations "
                                   "(the cap, with target_psnr)", ge=1)
    init: str = setting("oriented", "oriented (cells of equal detail, each Gaussian along its cell's edges) | "
                                    "adaptive (the same cells, axis-aligned) | structured (the paper's grid, "
                                    "4.3) | random (GaussianImage's)", choices=INITS)
    seed: int = setting(0, "random init: every batch draws from a generator seeded with this, so a fit repeats")
    adaptive_floor: float = setting(0.3, "oriented and adaptive inits: share of the detail density spread "
                                         "uniformly, so flat regions keep some Gaussians", ge=0, le=1)
    adaptive_scale: float = setting(1.0, "oriented and adaptive inits: a Gaussian's sigma over its cell's half "
                                         "side (oriented: their geometric means)", gt=0)
    oriented_max_aspect: float = setting(4.0, "oriented init: the cap on a Gaussian's sigma along its cell's edges "
                                              "over sigma across them", ge=1)
    image_size: int = setting(224, "images are resized (shorter side) and centre-cropped to this", ge=1)
    batch_size: int = setting(64, "images fitted at once", ge=1)
    backend: str = setting("auto", "rasterizer backend", choices=BACKENDS)
    shard_size: int = setting(1000, "images per output shard when the input is an image folder or image files", ge=1)
    num_workers: int = setting(1, "decoding workers per rank", ge=0)
    parameterization: str = setting("axes", "what Adam steps: axes (log scales, each centre stepped along its "
                                            "own Gaussian's axes) | log_scale (the same, centres in pixels) | "
                                            "gaussianimage (GaussianImage's own, the paper's baseline)",
                                    choices=PARAMETERIZATIONS)
    lr: LearningRates = setting(LearningRates)
    prune: PruneConfig = setting(PruneConfig)
    solve_colours: bool = setting(True, "colours by least squares for the init's geometry and after each prune")
    solve_steps: int = setting(20, "conjugate-gradient steps of a colour solve, each about one iteration's "
                                   "cost (the fitting loss's fused pass)", ge=1)
    solve_ridge: float = setting(1e-3, "the colour solve's ridge, relative to each Gaussian's energy", ge=0)
    coarse_iterations: list[int] = setting(lambda: [], "coarse-to-fine: Adam steps on the images averaged down "
                                                       "2^k x, coarsest first, before fit.iterations at full "
                                                       "resolution, all under one Adam and one decay ([150]: 150 at "
                                                       "half); []: none", ge=1)
    coarse_restart: bool = setting(False, "coarse-to-fine: the coarse steps take one cosine decay and the "
                                          "full-resolution steps a second, from the full rates (Adam's moments "
                                          "carry on), which pays after long coarse runs ([400] + 100); false: "
                                          "one decay spans every step")
    target_psnr: Optional[float] = setting(None, "each image stops once its PSNR (dB) reaches this; null: "
                                                 "every image runs fit.iterations", gt=0)
    record: str = setting("fp16", "how a splat set is stored: fp16 (16 B a splat, the paper's) | quantized "
                                  "(gs_lightning/codec.py)", choices=RECORDS)
    refine_iterations: int = setting(100, "quantized record: quantization-aware (straight-through) steps after "
                                          "the fit", ge=0)
    refine_lr: float = setting(0.1, "their Adam lr, in quantization steps (codes) per step", gt=0)
