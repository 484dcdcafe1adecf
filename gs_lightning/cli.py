"""python -m gs_lightning {fit,embed,train,demo,compare,sweep} (or gs-lightning ...): config to Lightning objects.

Every user error ends the same way: one line `error: <key or file>: <what to do>` and exit status 2,
before any work starts where it can be known then. SIGTERM or Ctrl-C stops a fit at once, keeping every
finished shard (a rerun does the rest); during training SIGTERM first saves last.ckpt (resume=true).
`COMMAND --help` lists the command's configs and every key; `--cfg` checks and prints the composed config and exits.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

# Third-party messages that say nothing about the user's run (filtered at the entry point only).
NOISE_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning's own call of a deprecated torch API
    r"Couldn't infer the batch indices",  # fit batches are ImageBatches, and the writer needs no indices
)
NOISE_LOGS = ("💡 Tip:",)  # Lightning's adverts for its cloud products
DEMO_HINT = ("To run without downloads, `make demo` writes the embedded demo data and its fitted splats, which "
             "`make train EXP=... DATA=demo` (python -m gs_lightning train EXP demo) then reads.")


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
    main = os.getpid()

    def handler(signum, frame):
        # A dataloader worker inherits this handler, and Ctrl-C reaches it too: the main process stops the
        # run and its workers with it, so a worker's own Interrupted would only print its traceback.
        if os.getpid() == main:
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def wait_for_other_ranks(run, output: str) -> None:
    """The end of a multi-rank fit or embed. A rank that died (killed, out of memory, a lost node) breaks the
    barrier; what this rank finished is kept, so that is one line, not the process group's traceback."""
    from gs_lightning.errors import UserError

    try:
        run.strategy.barrier()
    except RuntimeError as e:  # gloo's "Connection closed by peer", NCCL's errors: torch.distributed's failures
        raise UserError(output, f"another rank of this run stopped before the end ({str(e).splitlines()[0][:160]}); "
                                "its log says why. The shards finished here are kept and nothing half-written is: "
                                "rerun the same command to do the rest") from None


def check_all_written(dataset, key: str) -> None:
    """The end of a fit or embed: an input shard that could not be read to its end was not written (its warning
    says why), and the run's exit status says so, for the pipeline that runs the next step on these shards."""
    from gs_lightning.errors import UserError

    if left := [s.name for s in dataset.shards_to_do()]:
        raise UserError(key, f"{len(left)} of its shards could not be read to their end and were not written "
                             f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}); the warnings above say "
                             "why. Everything else is written: mend or drop those inputs and rerun the same "
                             "command to do the rest")


# ---- checks of paths, before any work ----------------------------------------------------------------------


def check_output_folder(path: str, key: str) -> None:
    """An output must be a folder, or a path where one can be made."""
    from gs_lightning.errors import UserError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(key, f"{path} exists and is not a folder; give a folder (it is created if missing)")
    parent = next(q for q in (p, *p.parents) if q.exists())
    if not parent.is_dir():
        raise UserError(key, f"{path} cannot be made: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(key, f"{path} cannot be written: no write permission in {parent}")


def check_file(path: str | None, key: str, what: str) -> None:
    from gs_lightning.errors import UserError

    if not path:
        raise UserError(key, f"is not set; give {what}")
    if not Path(path).is_file():
        raise UserError(key, f"{path} does not exist or is not a file; give {what}")


TEACHER = "the RGB run's best checkpoint (make train EXP=rgb)"


def check_train_paths(cfg) -> None:
    from gs_lightning.data.shards import existing_sources
    from gs_lightning.models.clip_module import ModelConfig, input_kind

    distills = ModelConfig.reads_teacher_embeddings(cfg.model)
    if cfg.model.mode in ("distill", "transfer") or distills:
        check_file(cfg.model.rgb_checkpoint, "model.rgb_checkpoint", TEACHER)
    if cfg.model.init_checkpoint is not None and cfg.model.mode in ("distill", "transfer"):
        check_file(cfg.model.init_checkpoint, "model.init_checkpoint", "stage 1's best checkpoint (the distill run's)")
    check_output_folder(cfg.output_dir, "output_dir")
    kind = input_kind(cfg.model.mode)
    for split in ("train", "val", "val_quantized") if kind == "splats" else ("train", "val"):
        if split == "val_quantized" and cfg.data[kind][split] is None:
            continue
        existing_sources(cfg.data[kind][split], f"data.{kind}.{split}", DEMO_HINT)
    if distills:
        check_teacher_embeddings(cfg)


def check_teacher_embeddings(cfg) -> dict:
    """data.embeddings holds model.rgb_checkpoint's embeddings of every training shard, at the model's width."""
    import open_clip

    import gs_lightning.models  # noqa: F401  registers the project's model configs with open_clip
    from gs_lightning.data.embeddings import check_embeddings, checkpoint_sha256
    from gs_lightning.data.image_batches import input_origin
    from gs_lightning.data.shards import list_sources
    from gs_lightning.errors import UserError

    if not cfg.data.embeddings:
        raise UserError("data.embeddings", "is not set; give the folder of the teacher's embeddings (python -m "
                                           "gs_lightning embed writes it)")
    shards = {s.name: input_origin(Path(s.url).parent, s.name) if s.url else None for s in list_sources(cfg.data.splats.train)}
    return check_embeddings(cfg.data.embeddings, shards, checkpoint_sha256(cfg.model.rgb_checkpoint),
                            open_clip.get_model_config(cfg.model.name)["embed_dim"])


# ---- commands ---------------------------------------------------------------------------------------------


def _help_or_cfg(args: list[str], usage: str, about: str, groups: dict[str, list[str]], schema, compose) -> bool:
    """Print `--help` (the configs to name, then every key) or `--cfg` (the composed config); True if done."""
    from omegaconf import OmegaConf

    from gs_lightning.build import check_trainer, missing_accelerator
    from gs_lightning.config import compose as compose_schema
    from gs_lightning.config import describe, split_args, validate

    if not {"-h", "--help", "--cfg"} & set(args):
        return False
    names, overrides = split_args([a for a in args if a not in ("-h", "--help", "--cfg")])
    if "--cfg" in args:  # what the command would run: a value it would refuse is refused here too
        cfg = compose(names, overrides)
        validate(cfg, schema)
        if "trainer" in cfg and (missing := missing_accelerator(cfg.trainer)) is not None:
            print(f"note: trainer.accelerator={missing}: this machine has none, so the trainer keys were not "
                  "checked; the run will check them where it runs", file=sys.stderr)
        elif "trainer" in cfg:
            check_trainer(cfg.trainer)
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return True
    # With no names, the schema's own defaults (what every experiment starts from), not one experiment's values.
    cfg = compose(names, overrides) if names else compose_schema(schema, [], overrides)
    print(f"usage: {usage}\n\n{about}\n")
    for title, items in groups.items():
        print(f"{title}: {', '.join(items)}")
    print("\n--help: this text; --cfg: print the composed config (names and overrides applied, values checked) and "
          "exit\n")
    print(f"keys, with their type, {'the value the names above give' if names else 'default'} and meaning:")
    print(describe(schema, cfg))
    return True


def fit(args: list[str], *, all_written: bool = True) -> list[str]:
    """Fit images to splat shards (paper section 4)."""
    from gs_lightning.build import check_trainer
    from gs_lightning.config import FitRun, compose_fit, group_names, split_args, validate

    if _help_or_cfg(args, "python -m gs_lightning fit [RECIPE_OR_OVERLAY ...] [key=value ...]",
                    "Fit every image of fit.input to a splat set, written as shards under fit.output (one per "
                    "input shard; a rerun resumes).", {"recipes and overlays (experiments/fit/)": group_names("fit")},
                    FitRun, compose_fit):
        return
    names, overrides = split_args(args)
    cfg = compose_fit(names, overrides)
    validate(cfg, FitRun)  # before the heavy imports: a typo is answered at once
    check_output_folder(cfg.fit.output, "fit.output")
    check_trainer(cfg.trainer)

    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from gs_lightning.atomic import folder_lock
    from gs_lightning.build import quiet_lightning, trainer
    from gs_lightning.data.image_batches import ImageBatches, as_is
    from gs_lightning.data.shards import existing_sources
    from gs_lightning.fit.module import FitProgressBar, FitWriter, SplatFitModule
    from gs_lightning.fit.summary import format_summary, keep_fit_settings, summarise

    f = OmegaConf.to_object(cfg.fit)
    if f.input == "embedded":
        from gs_lightning.data.demo import write_photo_shard

        pattern, hint = write_photo_shard(cfg.data_root), ""
    else:
        pattern, hint = f.input, "Leave fit.input=embedded to fit the photos that ship with the project."
    sources = existing_sources(pattern, "fit.input", hint, f.shard_size)
    with folder_lock(f.output, "fit.output"), quiet_lightning():
        keep_fit_settings(f)
        dataset = ImageBatches(sources, f.output, f.image_size, f.batch_size)
        dataset.check_done("fit.input", "fit.output")
        kept = len(sources) - len(dataset.shards_to_do())
        run = trainer(**cfg.trainer, ranks_may_wait=True, inference_mode=False, logger=False,
                      enable_checkpointing=False, use_distributed_sampler=False,
                      callbacks=[FitWriter(f, sources), FitProgressBar()])
        loader = DataLoader(dataset, batch_size=None, collate_fn=as_is, num_workers=f.num_workers)
        with stop_on_signals():
            run.predict(SplatFitModule(f), dataloaders=loader, return_predictions=False)
        wait_for_other_ranks(run, f.output)
    if run.global_rank == 0:
        summary = summarise(f)
        if kept == len(sources):  # a rerun, or a suite's task fitted for an earlier run: one line is enough
            print(f"fit: all {kept} shards of {f.output} were done before; nothing to fit (summary.json)")
        else:
            print(f"\nfit summary of {f.output} (summary.json); {kept} of this run's {len(sources)} shards were "
                  "done before it and kept")
            print(format_summary(summary))
        if all_written:
            check_all_written(dataset, "fit.input")
    return [source.url for source in dataset.shards_to_do()]


def embed(args: list[str]) -> None:
    """Compute the RGB teacher's embeddings of the training pairs once, for distillation."""
    from gs_lightning.build import check_trainer
    from gs_lightning.config import TrainRun, compose_train, group_names, split_args, validate

    if _help_or_cfg(args, "python -m gs_lightning embed EXPERIMENT [OVERLAY ...] [key=value ...]",
                    "The teacher (model.rgb_checkpoint) embeds every image of data.rgb.train and its caption, into "
                    "shards of the same names under data.embeddings (a rerun resumes), which the experiment's "
                    "distillation then reads beside the splats.",
                    {"experiments (experiments/train/)": group_names("train"),
                     "overlays (experiments/overlays/)": group_names("overlays")}, TrainRun,
                    compose_train):
        return
    names, overrides = split_args(args)
    cfg = compose_train(names, overrides)
    validate(cfg, TrainRun)
    from gs_lightning.errors import UserError

    check_file(cfg.model.rgb_checkpoint, "model.rgb_checkpoint", TEACHER)
    if not cfg.data.embeddings:
        raise UserError("data.embeddings", "is not set; give the folder to write the teacher's embeddings to")
    check_output_folder(cfg.data.embeddings, "data.embeddings")
    check_trainer(cfg.trainer)

    import open_clip
    from torch.utils.data import DataLoader

    from gs_lightning import build
    from gs_lightning.atomic import folder_lock
    from gs_lightning.data.embeddings import (
        EmbeddingWriter, checkpoint_sha256, keep_embed_settings, summarise_embeddings,
    )
    from gs_lightning.data.image_batches import ImageBatches, as_is
    from gs_lightning.data.shards import existing_sources
    from gs_lightning.models.teacher import TeacherEmbedder

    sources = existing_sources(cfg.data.rgb.train, "data.rgb.train", DEMO_HINT)
    with folder_lock(cfg.data.embeddings, "data.embeddings"), build.quiet_lightning():
        teacher = TeacherEmbedder(name=cfg.model.name, checkpoint=cfg.model.rgb_checkpoint)
        keep_embed_settings(cfg.data.embeddings, {
            "teacher": str(cfg.model.rgb_checkpoint), "teacher_sha256": checkpoint_sha256(cfg.model.rgb_checkpoint),
            "model": cfg.model.name, "dim": teacher.dim, "logit_scale": round(teacher.logit_scale, 6)})
        size = build.image_size(cfg)
        dataset = ImageBatches(sources, cfg.data.embeddings, size, cfg.data.batch_size,
                               preprocess=open_clip.image_transform(size, is_train=False))
        dataset.check_done("data.rgb.train", "data.embeddings")
        kept = len(sources) - len(dataset.shards_to_do())
        t = cfg.trainer
        run = build.trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
                            precision=t.precision, ranks_may_wait=True, logger=False, enable_checkpointing=False, use_distributed_sampler=False,
                            enable_progress_bar=t.enable_progress_bar,
                            callbacks=[EmbeddingWriter(cfg.data.embeddings, sources)])
        loader = DataLoader(dataset, batch_size=None, collate_fn=as_is, num_workers=cfg.data.num_workers)
        with stop_on_signals():
            run.predict(teacher, dataloaders=loader, return_predictions=False)
        wait_for_other_ranks(run, cfg.data.embeddings)
    if run.global_rank == 0:
        s = summarise_embeddings(cfg.data.embeddings)
        ms = "n/a" if s["ms_per_image"] is None else f"{s['ms_per_image']:.2f}"
        print(f"\nteacher embeddings in {cfg.data.embeddings}: {s['images']} images in {s['shards']} shards "
              f"({kept} of this run's {len(sources)} shards were done before it), {ms} ms per image and caption "
              f"on one rank; skipped {len(s['skipped'])}")
        for k in s["skipped"]:
            print(f"skipped: {k}")
        check_all_written(dataset, "data.rgb.train")


def train(args: list[str]) -> None:
    """Train CLIP on images (the RGB teacher) or on splats (transfer, scratch)."""
    from gs_lightning.build import check_trainer
    from gs_lightning.config import TrainRun, compose_train, group_names, split_args, validate
    from gs_lightning.errors import UserError

    if _help_or_cfg(args, "python -m gs_lightning train EXPERIMENT [OVERLAY ...] [key=value ...]",
                    "Train CLIP, with zero-shot evaluation every epoch; the run lands in output_dir/name.",
                    {"experiments (experiments/train/)": group_names("train"),
                     "overlays (experiments/overlays/)": group_names("overlays")}, TrainRun,
                    compose_train):
        return
    names, overrides = split_args(args)
    cfg = compose_train(names, overrides)
    validate(cfg, TrainRun)
    if cfg.resume_from and not cfg.resume:  # else the run would start from scratch without a word
        raise UserError("resume_from", "is read by a resume alone; add resume=true to go on from it")
    check_train_paths(cfg)
    check_trainer(cfg.trainer)
    run_dir = Path(cfg.output_dir) / cfg.name
    check_run_folder(cfg, run_dir)

    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    from gs_lightning import build

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build.clip_module(cfg)
    data = build.train_data(cfg, module.tokenizer)
    callbacks = build.callbacks(cfg, run_dir)
    loggers = build.loggers(cfg, run_dir, "+".join(names))
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    # No Lightning model summary: ClipModule prints what matters for transfer (what trains, at which lr).
    trainer = build.trainer(**cfg.trainer, logger=loggers or False, callbacks=callbacks,
                            use_distributed_sampler=False, default_root_dir=str(run_dir), enable_model_summary=False)
    # Every rank says what it was given: sweep agents pass their parameters as these overrides.
    keys = [k.split("=")[0].lstrip("+") for k in overrides]
    given = ", ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in keys)
    print(f"[rank {trainer.global_rank}] {cfg.name}: {given or 'no overrides'}", flush=True)
    start = resume_checkpoint(cfg, run_dir) if cfg.resume else None
    if trainer.global_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if start is not None:
            keep_earlier_metrics(run_dir)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=start, weights_only=True)
    except SIGTERMException:
        raise Interrupted(signal.SIGTERM) from None


def compare(args: list[str]) -> None:
    """Results table, plots and the edge-cloud report of finished runs."""
    from gs_lightning.compare import compare as compare_runs

    parser = argparse.ArgumentParser(prog="python -m gs_lightning compare", description=compare.__doc__)
    parser.add_argument("runs", nargs="+", help="run directories (output_dir/name)")
    parser.add_argument("--out", default="outputs/compare")
    parser.add_argument("--no-equal-bytes", action="store_true",
                        help="skip the evaluations at equal bytes (JPEG/WebP for the RGB teacher, quantized splats)")
    ns = parser.parse_args(args)
    check_output_folder(ns.out, "--out")
    print(compare_runs(ns.runs, ns.out, with_equal_bytes=not ns.no_equal_bytes))


# What a resume may change: where and how the steps run, what is logged, how often last.ckpt is written, where
# the data lies (a moved copy, a broken shard left out) and how much of it may be lost, and where the checkpoints
# the run started from lie (their weights are in the one it goes on from; a distilled teacher's identity is
# checked against its embeddings' sha256). Anything else (the model, its rates, the batch) would go on from a
# checkpoint trained otherwise under a config.yaml that says the new values.
RESUME_MAY_CHANGE = ("resume", "resume_from", "output_dir", "group", "logger", "trainer",
                     "checkpoint.every_n_train_steps", "data.num_workers", "data.val_batch_size", "data.rgb",
                     "data.splats", "data.embeddings", "data.max_lost_share", "model.rgb_checkpoint",
                     "model.init_checkpoint")
# Of the trainer's settings, those that set the learning-rate schedule's length and the batches of a step: the
# schedule is computed again on a resume, and its restored step would land elsewhere on the curve.
RESUME_KEEPS = ("trainer.max_epochs", "trainer.max_steps", "trainer.accumulate_grad_batches",
                "trainer.limit_train_batches")


def check_run_folder(cfg, run_dir: Path) -> None:
    """A run folder holds one run: a new run may not write over another's (eval, compare and stage 2 read its
    best.ckpt), and a resume goes on with the settings its run was trained with (its config.yaml). Checked by
    rank 0 alone: the ranks Lightning starts for DDP start after it wrote config.yaml. Ranks started together
    (srun, torchrun) are ended by their launcher when rank 0 refuses (srun with --kill-on-bad-exit)."""
    from lightning.pytorch.utilities import rank_zero_only
    from omegaconf import OmegaConf

    from gs_lightning.errors import UserError

    saved = run_dir / "config.yaml"
    # A run that stopped before its first checkpoint (out of memory at step 1) left nothing to read or go on from:
    # it is started again, with any settings
    if rank_zero_only.rank != 0 or not any((run_dir / "checkpoints").glob("*.ckpt")):
        return
    if not cfg.resume:
        raise UserError("output_dir", f"{run_dir} already holds a run; go on from its last.ckpt with resume=true, "
                                      "or give the new run another name= (or output_dir=)")
    if not saved.exists():
        return

    def leaves(node, prefix=""):  # {dotted key: value} of a resolved container
        if not isinstance(node, dict):
            return {prefix[:-1]: node}
        return {k: v for key, value in node.items() for k, v in leaves(value, f"{prefix}{key}.").items()}

    before = leaves(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
    now = leaves(OmegaConf.to_container(cfg, resolve=True))
    changed = [k for k in before.keys() & now.keys() if before[k] != now[k] and (k in RESUME_KEEPS or not any(
               k == p or k.startswith(p + ".") for p in RESUME_MAY_CHANGE))]
    if changed:
        shown = ", ".join(f"{k}={before[k]!r}, not {now[k]!r}" for k in sorted(changed)[:3])
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise UserError("resume", f"{run_dir} was trained with {shown}{more}; a resume goes on with its run's "
                                  f"settings (it may change {', '.join(RESUME_MAY_CHANGE[2:])}, but not "
                                  f"{', '.join(RESUME_KEEPS)}): drop those overrides, or train a new run under "
                                  "another name=")


def keep_earlier_metrics(run_dir: Path) -> None:
    """Lightning's CSVLogger deletes the metrics.csv it finds: a resume keeps the earlier attempt's as
    csv/metrics-K.csv (K = 1, 2, ...), which compare.load_run reads before metrics.csv."""
    from gs_lightning.compare import earlier_metrics

    metrics = run_dir / "csv" / "metrics.csv"
    if metrics.exists():
        k = 1 + max((k for k, _ in earlier_metrics(metrics.parent)), default=0)
        metrics.rename(metrics.with_name(f"metrics-{k}.csv"))


def resume_checkpoint(cfg, run_dir: Path) -> str | None:
    """The checkpoint a resume=true run goes on from (resume_from, or last.ckpt), once it is known to open; None
    when there is none yet. A torn or foreign one is a UserError naming it: an older one is used only if asked."""
    import torch

    from gs_lightning.errors import UserError

    key = "resume_from" if cfg.resume_from else "resume"
    path = Path(cfg.resume_from) if cfg.resume_from else run_dir / "checkpoints" / "last.ckpt"
    if not path.exists():
        if cfg.resume_from:
            raise UserError("resume_from", f"{path} does not exist")
        print(f"resume=true but {path} does not exist: starting from scratch")
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001  a torn zip, pickled objects, not a checkpoint at all
        older = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
        raise UserError(key, f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}); go on "
                             f"from another with resume_from=<checkpoint>{f' (there: {older})' if older else ''}, or "
                             "start over with resume=false") from None
    # A teacher's or stage 1's weights given as resume_from (model.init_checkpoint's job) would fail inside
    # Lightning, on a missing key or the optimizer's parameter groups
    if not (isinstance(ckpt, dict) and {"state_dict", "optimizer_states", "loops"} <= ckpt.keys()):
        raise UserError(key, f"{path} is no training checkpoint of a run (no optimizer or loop state): a resume "
                             "goes on from a run's last.ckpt; to start a new run from weights, give them as "
                             "model.init_checkpoint")
    saved = {k: ckpt.get("hyper_parameters", {}).get(k) for k in ("name", "mode")}
    if saved != {"name": cfg.model.name, "mode": cfg.model.mode}:
        raise UserError(key, f"{path} is a checkpoint of a {saved['name']} run in mode {saved['mode']}, and this run "
                             f"trains {cfg.model.name} in mode {cfg.model.mode}: a resume goes on from its own run's "
                             "checkpoint; to start from another run's weights, give them as model.init_checkpoint")
    return str(path)


def evaluate_suite(args: list[str]) -> None:
    """Zero-shot metrics of finished runs on a suite of tasks (the published table: per task, mean, ratio to RGB)."""
    from gs_lightning.config import EXPERIMENTS, EvalRun, compose, split_args, validate
    from gs_lightning.errors import UserError

    suites = sorted(p.stem for p in (EXPERIMENTS / "suites").glob("*.yaml"))
    usage = "python -m gs_lightning eval RUN_DIR [RUN_DIR ...] [suite=NAME|FILE] [suite.root=DIR] [key=value ...]"
    about = ("Each run's best checkpoint on each task of the suite, by the task's main metric: RGB runs read the "
             "task's images; splat runs read them fitted with the run's own fit settings (fitted once, kept under "
             "`fitted`). Writes suite.md, suite.csv and suite.png under `out`.")
    args = [f"suite.name={a.split('=', 1)[1]}" if a.startswith("suite=") else a for a in args]
    if _help_or_cfg(args, usage, about, {"suites (experiments/suites/)": suites, "run folders": ["output_dir/name"]},
                    EvalRun, lambda names, overrides: compose(EvalRun, [], overrides)):
        return
    run_dirs, overrides = split_args(args)
    cfg = compose(EvalRun, [], overrides)
    validate(cfg, EvalRun)
    if not run_dirs:
        raise UserError("eval", f"needs run folders (output_dir/name), e.g. `{usage}`")
    for run in map(Path, run_dirs):
        for f in (run / "config.yaml", run / "checkpoints" / "best.ckpt"):
            if not f.is_file():
                raise UserError(str(run), f"is not a finished train run: {f} is missing")
    name = cfg.suite.name
    path = Path(name) if name.endswith(".yaml") else EXPERIMENTS / "suites" / f"{name}.yaml"
    if not path.is_file():
        raise UserError("suite", f"no suite {name!r} ({path}); known: {', '.join(suites)}, or a suite file")
    # Every task of every run takes minutes: what would stop the table at its end is refused before the first.
    check_output_folder(cfg.out, "out")
    check_output_folder(cfg.fitted, "fitted")

    from gs_lightning.compare import SuiteRow, suite_csv, suite_plot, suite_table
    from gs_lightning.atomic import write_text_atomic
    from gs_lightning.evaluate import load_rate, run_config
    from gs_lightning.models.clip_module import input_kind
    from gs_lightning.zeroshot.tasks import METRICS, read_suite

    names = [run_config(run).name for run in run_dirs]
    if cfg.reference and cfg.reference not in names:
        raise UserError("reference", f"{cfg.reference!r} is none of the runs given ({', '.join(names)}); give one "
                                     "of their names, or leave it out for the first RGB run")

    tasks = read_suite(path, cfg.suite.root)
    rows = []
    for run in map(Path, run_dirs):
        rcfg = run_config(run)
        kind = input_kind(rcfg.model.mode)
        settings = _fit_settings(rcfg) if kind == "splats" else None
        row = SuiteRow(rcfg.name, kind, 0.0, 1.0, None)
        for task in tasks:
            if not task.evaluable:
                row.scores[task.name] = None
                continue
            try:
                shards, unfitted = (task.shards, 0) if kind == "rgb" else _fitted(task, settings, Path(cfg.fitted))
                result = _score(run, shards, task, Path(cfg.out))
            except UserError as e:
                raise UserError(f"task {task.name}: {e.where}", e.what) from None
            result = {**result, "skipped": result["skipped"] + unfitted}
            row.scores[task.name] = result[METRICS[task.metric]]
            row.read[task.name] = result["samples"], result["skipped"]
            lost = f", {result['skipped']:,} unreadable (the warnings above name them)" if result["skipped"] else ""
            print(f"{row.name} on {task.name}: {result['samples']:,} samples scored{lost}", flush=True)
            if row.load_rate is None:  # the first task's: what reading this input costs, beside the others'
                row.load_rate = load_rate(run, shards)
                row.values, row.compression = _input_size(rcfg, shards)
        rows.append(row)
        print(f"{row.name}: {', '.join(f'{t}={v:.3f}' for t, v in row.scores.items() if v is not None)}", flush=True)
    reference = next((r for r in rows if r.name == cfg.reference), None) if cfg.reference else \
        next((r for r in rows if r.kind == "rgb"), None)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    text = suite_table(rows, tasks, reference)
    write_text_atomic(out / "suite.md", text + "\n")
    suite_csv(rows, tasks, out / "suite.csv")
    print(f"\n== zero-shot suite {name} ({len(tasks)} tasks; {out}/suite.md, suite.csv)\n{text}\n"
          f"plot: {suite_plot(rows, tasks, out / 'suite.png')}")


def _fit_settings(run_cfg) -> dict:
    """The fit settings a splat run's eval images were fitted with (fit.yaml beside data.splats.val)."""
    import yaml

    from gs_lightning.data.image_batches import SETTINGS_FILES
    from gs_lightning.errors import UserError

    path = Path(run_cfg.data.splats.val).parent / SETTINGS_FILES["fit"]
    if not path.is_file():
        raise UserError("data.splats.val", f"{path} is missing: a suite's images are fitted with the settings the "
                                           "run's eval images were fitted with, which `fit` keeps there")
    return yaml.safe_load(path.read_text())


def _fitted(task, settings: dict, root: Path) -> tuple[str, int]:
    """The task's images fitted with `settings`, once: under root/<task>/<hash of the settings>, so another
    run with the same settings reuses them, and other settings fit again (fit resumes what is there). Returns
    the fitted shards and how many of the task's samples are in none: a torn task shard is not fitted (fit
    writes no shard it cannot read to its end), and its samples count as unread, from the task's sizes.json,
    else as one, as a torn shard read as images counts the rest."""
    import hashlib

    import yaml

    from gs_lightning.atomic import write_text_atomic
    from gs_lightning.data.shards import literal, shard_name, shard_sizes
    from gs_lightning.errors import UserError

    key = hashlib.sha256(yaml.safe_dump(settings, sort_keys=True).encode()).hexdigest()[:12]
    recipe = root / f"{key}.yaml"
    if not recipe.exists():  # atomic: a torn recipe would fit every later run's task with other settings
        root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(recipe, yaml.safe_dump({"fit": settings}, sort_keys=False))
    out = root / task.name.replace("/", "-") / key
    unfitted = fit([str(recipe), f"fit.input={task.shards}", f"fit.output={out}"], all_written=False)
    if not unfitted:
        return f"{literal(out)}/{Path(task.shards).name}", 0
    if not any(out.glob("*.tar")):
        raise UserError(task.shards, "none of its shards could be read to its end (the warnings above say why): "
                                     "no image was fitted, nothing to score")
    sizes = shard_sizes(unfitted)
    return f"{literal(out)}/*.tar", sum(sizes.get(shard_name(u), 1) for u in unfitted)


def _score(run: Path, shards: str, task, out: Path) -> dict:
    """evaluate() of one run on one task, kept under out/scores once done: a suite is hours of tasks, and a
    rerun after a kill or a failed task scores only what is not kept. The key is what the score depends on:
    the checkpoint's and the shards' files (names, sizes, times), the task's classes, templates and metric."""
    import hashlib
    import json

    from gs_lightning.compare import cached, files_signature
    from gs_lightning.evaluate import evaluate

    best = run / "checkpoints" / "best.ckpt"
    depends = json.dumps([files_signature(best, shards), task.classnames, task.templates, task.metric])
    where = hashlib.sha256(str(run.resolve()).encode()).hexdigest()[:8]  # two runs of one name in two folders
    name = f"{run.name}-{where}-{task.name.replace('/', '-')}"
    return cached(out / "scores" / name, hashlib.sha256(depends.encode()).hexdigest()[:16],
                   lambda: evaluate(run, shards, task))


def _input_size(run_cfg, shards: str) -> tuple[float, float]:
    """(values per image, compression over uint8 pixels) of what a run reads: pixels x 3 at its model's size, or
    splats x 8 and the record's bytes from the fit summary beside `shards`."""
    from gs_lightning import build
    from gs_lightning.compare import splat_set

    summary = splat_set(shards)
    if summary is None:
        size = build.image_size(run_cfg)
        return 3.0 * size * size, 1.0
    return 8.0 * summary["splats_mean"], summary["compression_ratio"]


def sweep(args: list[str]) -> None:
    """Create a W&B sweep from experiments/sweeps/NAME.yaml and run an agent on it (make sweep SWEEP=NAME)."""
    import subprocess

    import yaml

    from gs_lightning.config import EXPERIMENTS
    from gs_lightning.errors import UserError

    known = ", ".join(sorted(p.stem for p in (EXPERIMENTS / "sweeps").glob("*.yaml")))
    if len(args) != 1 or args[0] in ("-h", "--help"):
        if args and args[0] in ("-h", "--help"):
            print(f"usage: python -m gs_lightning sweep NAME\n\n{sweep.__doc__}\nsweeps: {known}")
            return
        raise UserError("sweep", f"takes one name: experiments/sweeps/NAME.yaml; known: {known}")
    path = EXPERIMENTS / "sweeps" / f"{args[0]}.yaml"
    if not path.exists():
        raise UserError(args[0], f"no sweep of that name ({path}); known: {known}")
    import wandb

    spec = yaml.safe_load(path.read_text())
    project = spec.get("project", "gs-lightning")
    try:
        sweep_id = wandb.sweep(spec, project=project)
        entity = wandb.api.viewer()["entity"]
    except wandb.errors.Error as e:  # no API key, or the server refused: nothing was created
        raise UserError("sweep", f"W&B would not create it: {e} A sweep lives on the W&B server; log in first "
                                 "(.venv/bin/wandb login)") from None
    # The agent runs each trial as `python -m gs_lightning ...` by name: this environment's python, whether or not
    # it is activated.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    subprocess.run([sys.executable, "-m", "wandb", "agent", f"{entity}/{project}/{sweep_id}"], env=env, check=True)


def demo(args: list[str]) -> None:
    """The whole pipeline on the embedded data (experiments/demo.yaml): fits, teacher embeddings, training, compare."""
    import resource
    import time

    from gs_lightning.compare import compare as compare_runs
    from gs_lightning.config import EXPERIMENTS, DemoPlan, TrainRun, compose, compose_train, split_args, validate
    from gs_lightning.data.demo import write_fashion_mnist
    from gs_lightning.errors import UserError

    plan = compose(DemoPlan, [EXPERIMENTS / "demo.yaml"])
    validate(plan, DemoPlan)
    if {"-h", "--help"} & set(args):
        print("usage: python -m gs_lightning demo [--with NAME ...] [key=value ...]\n\n" + demo.__doc__ +
              "\nkey=value overrides reach every train and embed step; --with adds a group of optional steps ("
              f"{', '.join(plan.optional)}).\n\n" + (EXPERIMENTS / "demo.yaml").read_text())
        return
    if args and args[-1] == "--with":
        raise UserError("--with", f"needs the name of an optional group: {', '.join(plan.optional)}")
    extra = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--with"]
    args = [a for i, a in enumerate(args) if a != "--with" and (i == 0 or args[i - 1] != "--with")]
    if unknown := [name for name in extra if name not in plan.optional]:
        raise UserError("--with", f"{unknown[0]!r} is not an optional group of experiments/demo.yaml; there are "
                                  f"{', '.join(plan.optional)}")
    commands = {"fit": fit, "embed": embed, "train": train}
    steps = [*plan.steps, *(step for name in extra for step in plan.optional[name])]
    for command, *items in steps:  # a typo in an override is answered now, not after the fits
        if command not in commands:
            raise UserError(str(EXPERIMENTS / "demo.yaml"), f"a step runs {command!r}; steps run "
                                                            f"{', '.join(commands)}")
        if command in ("train", "embed"):
            validate(compose_train(*split_args([*items, *args])), TrainRun)
    t0 = time.perf_counter()
    write_fashion_mnist(plan.data_root, train_limit=plan.train_images, test_limit=plan.test_images)
    runs, took = [], []
    own = Path(plan.data_root).resolve().parent  # outputs/demo: the demo's data, runs and results
    for command, *items in steps:
        t = time.perf_counter()
        if command in ("train", "embed"):
            # A rerun of the demo trains its runs again, so its teacher's embeddings are made again too; what lies
            # outside the demo's folder is not its own to remove (train refuses to write over a run, embed over
            # another teacher's embeddings).
            cfg = compose_train(*split_args([*items, *args]))
            made = Path(cfg.output_dir) / cfg.name if command == "train" else Path(cfg.data.embeddings)
            if command == "train":
                runs.append(str(made))
            if made.exists() and own in made.resolve().parents:
                print(f"demo: {command} {made} again (the earlier demo's is removed)")
                shutil.rmtree(made)
        commands[command]([*items, *args] if command in ("train", "embed") else list(items))
        took.append((f"{command} {' '.join(items)}", time.perf_counter() - t))
    print(f"\n== demo results ({plan.results})")
    t = time.perf_counter()
    print(compare_runs(runs, plan.results))
    took.append(("compare (equal bytes: JPEG, WebP, rendered, quantized)", time.perf_counter() - t))
    from gs_lightning.zeroshot.demo import write_demo_suite

    write_demo_suite(plan.suite.root)
    t = time.perf_counter()
    evaluate_suite([*runs, f"suite.name={plan.suite.name}", f"suite.root={plan.suite.root}", f"out={plan.results}",
                    f"fitted={Path(plan.results).parent / 'suite-fitted'}"])
    took.append(("eval (the suite)", time.perf_counter() - t))
    print("\nmake demo, step by step (wall seconds):\n" + "\n".join(f"  {s:6.0f}  {name}" for name, s in took))
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"\nmake demo: wall time {(time.perf_counter() - t0) / 60:.1f} min, peak memory {peak / 2**20:.2f} GiB "
          "(largest single process)")


def check_repeated_keys(args: list[str]) -> None:
    """A key given in several arguments in a row is a shell's brace expansion of an unquoted pattern (bash makes
    `fit.input=d/{0..99}.tar` a hundred overrides, of which the last would win): refuse it, naming the fix. A key
    given again further on is an override of an earlier one (a preset, then the user's), and the last wins."""
    from gs_lightning.errors import UserError

    keys = [a.split("=", 1)[0] if "=" in a and not a.startswith("-") else None for a in args]
    for i, key in enumerate(keys):
        if key is not None and i + 1 < len(keys) and keys[i + 1] == key:
            n = next((j for j in range(i, len(keys)) if keys[j] != key), len(keys)) - i
            values = [a.split("=", 1)[1] for a in args[i : i + 2]]
            raise UserError(key, f"given {n} times in a row ({', '.join(values)}{', ...' if n > 2 else ''}): the "
                                 f"shell expanded an unquoted pattern; quote it, e.g. '{key}=dir/{{00000..00099}}.tar'")


COMMANDS = {"fit": fit, "embed": embed, "train": train, "eval": evaluate_suite, "demo": demo, "compare": compare,
            "sweep": sweep}


USAGE = "usage: python -m gs_lightning COMMAND [ARGS ...]   (or: gs-lightning COMMAND [ARGS ...])"


def main(argv: list[str] | None = None) -> None:
    quiet_third_party()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = "\n".join(f"  {name:<8} {fn.__doc__.splitlines()[0]}" for name, fn in COMMANDS.items())
    about = f"{USAGE}\n\ncommands:\n{commands}\n\nCOMMAND --help lists what it takes."
    if not argv or argv[0] in ("-h", "--help"):
        print(about)
        return
    if argv[0] not in COMMANDS:
        print(about, file=sys.stderr)
        print(f"error: {argv[0]}: not a command; the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    from gs_lightning.errors import UserError

    try:
        check_repeated_keys(argv[1:])
        COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"\nstopped by {e}: finished shards and checkpoints are kept; rerun the same command to resume "
              "(train: with resume=true)", file=sys.stderr)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    main()
