"""Experiments: every config composes; a sweep agent's command reaches every DDP rank; a killed run resumes;
compare reads CSV logs right."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_TRAIN
from helpers import fake_run, fitted_shards

from gs_lightning.compare import load_run, table
from gs_lightning.config import EXPERIMENTS, FitRun, compose, compose_fit, compose_train, group_names, load_fit_config
from gs_lightning.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("exp", group_names("train"))
@pytest.mark.parametrize("overlay", [[], ["demo"]])
def test_every_experiment_composes(exp, overlay):
    from gs_lightning.models.clip_module import MODES, ModelConfig, input_kind

    cfg = compose_train([exp, *overlay])
    assert cfg.model.mode in MODES and cfg.name == exp
    kind = input_kind(cfg.model.mode)
    assert cfg.data[kind].train and cfg.data[kind].val
    if cfg.model.mode in ("distill", "transfer") or ModelConfig.reads_teacher_embeddings(cfg.model):
        assert cfg.model.rgb_checkpoint.endswith("rgb/checkpoints/best.ckpt")
    if ModelConfig.reads_teacher_embeddings(cfg.model):
        assert cfg.data.embeddings
    if cfg.model.init_checkpoint:  # stage 2 starts from its own stage 1: the experiment named like it
        assert cfg.model.init_checkpoint.endswith(f"{exp.replace('_transfer', '')}/checkpoints/best.ckpt")
    if overlay:
        assert cfg.trainer.accelerator == "cpu" and int(cfg.trainer.max_epochs) > 0


@pytest.mark.parametrize("overlay", group_names("fit"))
def test_every_fit_overlay_composes(overlay):
    from gs_lightning.fit.parameterization import PARAMETERIZATIONS

    cfg = load_fit_config([overlay])
    assert cfg.parameterization in PARAMETERIZATIONS and cfg.iterations > 0


def _leaves(node, prefix=""):  # {"fit.lr.xy": 0.02, ...} of a YAML mapping
    out = {}
    for k, v in node.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("group", ["fit", "train", "overlays"])
def test_an_experiment_file_holds_only_its_differences(group):
    """The typed configs hold every default (one home each): a file sets a key only to change it, from the
    defaults it composes on, or (an overlay) from what some experiment gives."""
    from omegaconf import OmegaConf

    from gs_lightning.config import FitRun, TrainRun, compose

    schema = FitRun if group == "fit" else TrainRun
    experiments = [compose_train([name]) for name in group_names("train")] if group == "overlays" else []
    for name in group_names(group):
        path = EXPERIMENTS / group / f"{name}.yaml"
        raw = OmegaConf.to_container(OmegaConf.load(path))
        base = compose(schema, [EXPERIMENTS / group / f"{d}.yaml" for d in raw.pop("defaults", [])])
        for key, value in _leaves(raw).items():
            before = [OmegaConf.select(c, key) for c in [base, *experiments]]
            assert any(b != value for b in before), f"{path}: {key}: {value!r} is what it already is"


def test_unknown_keys_and_experiments_are_named():
    with pytest.raises(UserError, match=r"^trainer\.devicez: unknown config key"):
        compose_train(["gs196"], ["trainer.devicez=2"])
    with pytest.raises(UserError, match=r"^gs197: no experiment of that name.*known: .*gs196"):
        compose_train(["gs197"])
    with pytest.raises(UserError, match=r"^demo2: no overlay of that name.*known: .*demo"):
        compose_train(["gs196", "demo2"])
    with pytest.raises(UserError, match=r"^fit\.num_splats: Value 'abc' of type 'str' could not be converted"):
        compose_fit([], ["fit.num_splats=abc"])


def test_a_bad_key_in_a_file_names_the_file_it_came_from(tmp_path):
    """A typo or a wrong type in an experiment file, or in a file its `defaults` pull in, is named with the
    file that holds it, not only the key."""
    (tmp_path / "base.yaml").write_text("fit:\n  num_splatz: 9\n")
    (tmp_path / "mine.yaml").write_text("defaults: [base]\nfit:\n  iterations: 7\n")
    with pytest.raises(UserError, match=r"^fit\.num_splatz: unknown config key \(from .*/base\.yaml\)"):
        compose(FitRun, [tmp_path / "mine.yaml"])
    (tmp_path / "base.yaml").write_text("fit:\n  num_splats: many\n")
    with pytest.raises(UserError, match=r"^fit\.num_splats: .* \(from .*/base\.yaml\)$"):
        compose(FitRun, [tmp_path / "mine.yaml"])


def test_a_users_own_file_takes_its_defaults_from_the_shipped_experiments_and_overlays(tmp_path):
    """An experiment file kept outside experiments/ may build on shipped ones: its `defaults` are looked up beside
    it, then in the groups of what it configures."""
    from omegaconf import OmegaConf

    (tmp_path / "mine.yaml").write_text("defaults: [gs196, demo]\nmodel:\n  lr: 0.5\n")
    mine = compose_train([str(tmp_path / "mine.yaml")])
    assert OmegaConf.to_container(mine) == OmegaConf.to_container(compose_train(["gs196", "demo"], ["model.lr=0.5"]))
    (tmp_path / "typo.yaml").write_text("defaults: [gs197]\n")
    with pytest.raises(UserError, match=r"typo\.yaml: its default 'gs197' is in none of .*experiments/train, "):
        compose_train([str(tmp_path / "typo.yaml")])
    (tmp_path / "bare.yaml").write_text("defaults: gs196\n")  # a name, not a list of names
    with pytest.raises(UserError, match=r"bare\.yaml: `defaults` is a list of file names, .* not 'gs196'$"):
        compose_train([str(tmp_path / "bare.yaml")])


def agent_command(spec: dict, params: dict) -> list[str]:
    """The command line a W&B agent builds from a sweep spec and one set of parameters (its macros expanded)."""
    args = [f"{k}={v}" for k, v in params.items()]
    out = []
    for item in spec["command"]:
        if item == "${env}":
            out.append("/usr/bin/env")
        elif item == "${interpreter}":
            out.append("python")  # by name, as wandb_agent.py gives it: the PATH that `sweep` sets finds it
        elif item == "${args_no_hyphens}":
            out.extend(args)
        else:
            out.append(item)
    return out


def agent_env(tmp_path) -> dict:
    """The command line and environment `sweep` starts its W&B agent with (W&B's server stood in for)."""
    import types

    import wandb

    from gs_lightning import cli

    started = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wandb, "sweep", lambda spec, project: "sweep7")
        mp.setattr(wandb, "api", types.SimpleNamespace(viewer=lambda: {"entity": "me"}), raising=False)
        mp.setattr(subprocess, "run", lambda cmd, env, check: started.update(cmd=cmd, env=env))
        mp.setenv("PATH", str(tmp_path))  # an environment not activated: no python, no wandb on the PATH
        cli.sweep(["demo_gs196"])
    assert started["cmd"] == [sys.executable, "-m", "wandb", "agent", "me/gs-lightning-demo/sweep7"]
    return started["env"]


def test_a_sweeps_agent_and_its_trials_run_this_environments_python_activated_or_not(tmp_path):
    import shutil

    found = shutil.which("python", path=agent_env(tmp_path)["PATH"])
    assert found and Path(found).parent == Path(sys.executable).parent


def test_a_sweep_without_a_wandb_login_is_one_error_naming_the_way_out(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")} | {"HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "gs_lightning", "sweep", "demo_gs196"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.startswith("error: sweep: W&B would not create it: ") and "wandb login" in out.stderr


def test_a_sweep_agents_command_reaches_every_ddp_rank(tmp_path):
    spec = yaml.safe_load((EXPERIMENTS / "sweeps" / "demo_gs196.yaml").read_text())
    pattern = fitted_shards(tmp_path / "gs", [4, 4])
    # One draw of the sweep's parameters, plus fixed values a user would pin with `value:` entries.
    params = {k: v["values"][-1] for k, v in spec["parameters"].items()}
    params.update({"model.mode": "scratch", "output_dir": str(tmp_path / "runs"), "data.splats.train": pattern,
                   "data.splats.val": pattern, "trainer.devices": 2, "trainer.strategy": "ddp", "trainer.max_epochs": 1,
                   "trainer.limit_train_batches": 1, "trainer.limit_val_batches": 1, "data.batch_size": 2,
                   "data.val_batch_size": 2})
    params.update(dict(a.split("=", 1) for a in TINY_TRAIN))
    # The agent sets WANDB_RUN_ID for each trial (wandb_agent.py), which names the trial's run folder.
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_RUN_ID": "trial7",
           "PATH": agent_env(tmp_path)["PATH"]}
    out = subprocess.run(agent_command(spec, params), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "runs" / "demo_gs196-trial7" / "checkpoints" / "best.ckpt").exists()
    for rank in (0, 1):
        line = next(l for l in out.stdout.splitlines() if l.startswith(f"[rank {rank}]"))
        given = line.split(": ", 1)[1].split(", ")  # each override as key=value, the value as the run sees it
        assert "model.lr=0.003" in given and "model.unfrozen_blocks=4" in given, line


def test_a_run_is_deterministic_for_its_seed(tmp_path):
    """The same command twice gives the same weights, bit for bit (shuffle, splat subsampling, init, dropout all
    follow `seed`), so a difference of a few points between runs is a difference of settings; another seed moves."""
    pattern = fitted_shards(tmp_path / "gs", [24, 24], n_splats=(3, 20))
    base = ["train", "gs196_scratch", "demo", f"data.splats.train={pattern}", f"data.splats.val={pattern}",
            "data.batch_size=4", "data.max_splats=8", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
            "data.num_workers=1", *TINY_TRAIN]
    weights = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = subprocess.run([sys.executable, "-m", "gs_lightning", *base, f"output_dir={tmp_path}/{run}",
                              f"seed={seed}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        ckpt = tmp_path / run / "gs196_scratch" / "checkpoints" / "best.ckpt"  # one epoch: its weights
        weights[run] = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        # last.ckpt is saved at the epoch's end too, though its 12 steps are fewer than every_n_train_steps
        last = torch.load(ckpt.parent / "last.ckpt", map_location="cpu", weights_only=True)
        assert last["global_step"] == 12 and all(torch.equal(last["state_dict"][k], v) for k, v in weights[run].items())
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


# A resume, changing what cli.RESUME_MAY_CHANGE allows: how often steps are logged, how much data may be lost.
RESUME = ["resume=true", "trainer.log_every_n_steps=5", "data.max_lost_share=0.02"]


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    pattern = fitted_shards(tmp_path / "gs", [60, 60])
    run = tmp_path / "runs" / "gs196_scratch"
    args = [sys.executable, "-m", "gs_lightning", "train", "gs196_scratch", "demo", f"output_dir={tmp_path}/runs",
            f"data.splats.train={pattern}", f"data.splats.val={pattern}", "data.batch_size=2", "trainer.max_epochs=1",
            "trainer.limit_val_batches=1", "checkpoint.every_n_train_steps=5", *TINY_TRAIN]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert last.exists(), proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # checkpoints are renamed into place: a visible one is whole
    proc.wait()
    saved = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < saved < 60, "killed mid-epoch"
    config = (run / "config.yaml").read_text()
    for extra, why in (([], rf"^error: output_dir: {run} already holds a run; go on from its last.ckpt with resume=true"),
                       ([f"resume_from={last}"], r"^error: resume_from: is read by a resume alone; add resume=true"),
                       (["resume=true", "model.lr=0.01", "data.batch_size=4"],
                        rf"^error: resume: {run} was trained with data.batch_size=2, not 4, model.lr=0.001, not 0.01; ")):
        refused = subprocess.run(args + extra, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert refused.returncode == 2 and re.search(why, refused.stderr, re.M), refused.stderr[-3000:]
    assert (run / "config.yaml").read_text() == config  # nothing written over
    out = subprocess.run(args + RESUME, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"training from global step {saved} " in out.stdout + out.stderr
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == 60
    adam_steps = {int(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {60}  # the optimizer went on counting: its state was restored, not rebuilt
    assert final["lr_schedulers"][0]["last_epoch"] == 60  # and so did the schedule


def test_a_resume_may_move_its_run_and_the_checkpoints_it_started_from(tmp_path):
    """A run folder moved with its teacher (output_dir=new place): the teacher's path in config.yaml, resolved
    under the old output_dir, may change on resume; the model's settings may not."""
    from omegaconf import OmegaConf

    from gs_lightning.cli import check_run_folder

    run = tmp_path / "new" / "gs196_distill_transfer"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"saved")
    OmegaConf.save(compose_train(["gs196_distill_transfer", "demo"], [f"output_dir={tmp_path}/old"]),
                   run / "config.yaml", resolve=True)
    moved = ["resume=true", f"output_dir={tmp_path}/new"]
    check_run_folder(compose_train(["gs196_distill_transfer", "demo"], moved), run)
    with pytest.raises(UserError, match=r"^resume: .* was trained with model\.lr=[0-9.e-]+, not 0\.5; "):
        check_run_folder(compose_train(["gs196_distill_transfer", "demo"], [*moved, "model.lr=0.5"]), run)
    # the trainer's placement may change, not the schedule's length: its restored step would land elsewhere (the
    # count of processes is checked against the checkpoint's, test_data.py)
    check_run_folder(compose_train(["gs196_distill_transfer", "demo"], [*moved, "trainer.devices=2"]), run)
    for key, value in (("max_epochs", 99), ("accumulate_grad_batches", 2), ("limit_train_batches", 3)):
        with pytest.raises(UserError, match=rf"^resume: .* was trained with trainer\.{key}=\S+, not {value}; .*"
                                            r"but not trainer\.max_epochs"):
            check_run_folder(compose_train(["gs196_distill_transfer", "demo"], [*moved, f"trainer.{key}={value}"]),
                             run)


def test_a_run_that_stopped_before_its_first_checkpoint_is_started_again_with_any_settings(tmp_path):
    """Out of memory at step 1: the folder holds config.yaml and no checkpoint. Nothing in it can be read or gone
    on from, so the same command with a smaller batch (resume or not) starts it again; once a checkpoint is
    there, the folder's run is kept."""
    from omegaconf import OmegaConf

    from gs_lightning.cli import check_run_folder

    run = tmp_path / "gs196_scratch"
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(compose_train(["gs196_scratch", "demo"], ["data.batch_size=256"]), run / "config.yaml")
    for extra in ([], ["resume=true"]):
        check_run_folder(compose_train(["gs196_scratch", "demo"], ["data.batch_size=128", *extra]), run)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"saved")
    with pytest.raises(UserError, match=r"^output_dir: .* already holds a run"):
        check_run_folder(compose_train(["gs196_scratch", "demo"], ["data.batch_size=128"]), run)
    with pytest.raises(UserError, match=r"^resume: .* was trained with data\.batch_size=256, not 128"):
        check_run_folder(compose_train(["gs196_scratch", "demo"], ["data.batch_size=128", "resume=true"]), run)


def test_sigterm_saves_last_checkpoint_and_resume_goes_on_from_it(tmp_path):
    """A cluster's SIGTERM (preemption, time limit): last.ckpt is saved at the next batch boundary, the run exits
    128 + 15 within the grace period, and resume=true continues from that step."""
    pattern = fitted_shards(tmp_path / "gs", [300, 300])
    run = tmp_path / "runs" / "gs196_scratch"
    args = [sys.executable, "-m", "gs_lightning", "train", "gs196_scratch", "demo", f"output_dir={tmp_path}/runs",
            f"data.splats.train={pattern}", f"data.splats.val={pattern}", "data.batch_size=2", "trainer.max_epochs=1",
            "trainer.limit_val_batches=1", "checkpoint.every_n_train_steps=100000", "trainer.log_every_n_steps=1",
            *TINY_TRAIN]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = run / "csv" / "metrics.csv"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and (not metrics.exists() or metrics.stat().st_size < 200):
        time.sleep(0.05)  # the CSV logger has flushed a few steps: training is under way
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert not last.exists()  # no periodic checkpoint: only SIGTERM can write it
    os.kill(proc.pid, signal.SIGTERM)
    t0 = time.time()
    output = proc.communicate(timeout=60)[0].decode()
    assert time.time() - t0 < 30 and proc.returncode == 128 + signal.SIGTERM, (proc.returncode, output[-3000:])
    assert "Traceback" not in output and "stopped by SIGTERM" in output
    saved = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < saved < 300
    out = subprocess.run(args + RESUME, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"training from global step {saved} " in out.stdout + out.stderr


def test_a_checkpoint_killed_mid_write_is_never_torn(tmp_path):
    """Kill half way through the second save of last.ckpt, as a cluster job dies while Lightning moves its
    checkpoint from a local /tmp onto a shared filesystem (tests/stop_at.py): last.ckpt stays the first save."""
    pattern = fitted_shards(tmp_path / "gs", [40, 40])
    args = [sys.executable, "tests/stop_at.py", "interrupted-move", "last.ckpt", "2", "--", "train", "gs196_scratch",
            "demo", f"output_dir={tmp_path}/runs", f"data.splats.train={pattern}", f"data.splats.val={pattern}",
            "data.batch_size=2", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
            "checkpoint.every_n_train_steps=3", *TINY_TRAIN]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == -signal.SIGKILL, f"the fault hook did not fire: {out.returncode} {out.stderr[-2000:]}"
    last = tmp_path / "runs" / "gs196_scratch" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3


def test_a_resumed_runs_earlier_metrics_are_kept_and_read_before_its_own(tmp_path):
    """Lightning's CSVLogger deletes the metrics.csv it finds: each resume keeps the earlier attempt's, and compare
    reads every attempt, an epoch logged again taking the later value."""
    from gs_lightning.cli import keep_earlier_metrics

    run = tmp_path / "r"
    fake_run(run, "gs196", "transfer", top1=[0.10, 0.30], top5=[0.40, 0.50])  # attempt 1: epochs 0 and 1
    keep_earlier_metrics(run)
    fake_run(run, "gs196", "transfer", top1=[0.0, 0.20, 0.25], top5=[0.0, 0.60, 0.70])  # attempt 2 redid epoch 1
    (run / "csv" / "metrics.csv").write_text("\n".join(
        l for l in (run / "csv" / "metrics.csv").read_text().splitlines() if not l.startswith("0,")) + "\n")
    keep_earlier_metrics(run)
    fake_run(run, "gs196", "transfer", top1=[0.0, 0.0, 0.0, 0.27], top5=[0.0, 0.0, 0.0, 0.80])  # attempt 3
    (run / "csv" / "metrics.csv").write_text("\n".join(
        l for l in (run / "csv" / "metrics.csv").read_text().splitlines() if l[0] not in "012") + "\n")
    assert sorted(f.name for f in (run / "csv").glob("metrics*.csv")) == ["metrics-1.csv", "metrics-2.csv", "metrics.csv"]
    r = load_run(run)
    assert r.curve("val/top1") == ([1, 2, 3, 4], [0.10, 0.20, 0.25, 0.27])
    assert r.best() == (0.27, 0.80)
    keep_earlier_metrics(tmp_path / "none")  # a run with no metrics yet: nothing to keep


def test_the_best_epoch_skips_an_epoch_whose_validation_gave_nan(tmp_path):
    fake_run(tmp_path / "a", "gs196", "transfer", top1=[float("nan"), 0.40, 0.30], top5=[0.5, 0.6, 0.7])
    assert load_run(tmp_path / "a").best() == (0.40, 0.6)
    fake_run(tmp_path / "b", "gs196", "transfer", top1=[float("nan")], top5=[0.5])
    assert "| n/a | n/a |" in table([load_run(tmp_path / "b")])


def test_a_run_validated_every_other_epoch_is_read_at_its_epochs(tmp_path):
    """trainer.check_val_every_n_epoch=2: top-1 and top-5 are logged at epochs 1 and 3 (from 0), the loss at
    every one. The curves keep the epochs (Fig. 7 draws them there, not at 1 and 2), and the best top-1's top-5
    is its own epoch's."""
    fake_run(tmp_path / "r", "gs196", "transfer", top1=[0.0] * 4, top5=[0.0] * 4)
    rows = ["epoch,step,val/top1,val/top5,train/loss_epoch,train/logit_scale_epoch"]
    rows += [f"{e},{10 * e + 9},,,{4.0 - e},{14.0 + e}" for e in range(4)]
    rows += ["1,19,0.30,0.60,,", "3,39,0.20,0.90,,"]
    (tmp_path / "r" / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    r = load_run(tmp_path / "r")
    assert r.curve("val/top1") == ([2, 4], [0.30, 0.20]) and r.curve("val/top5") == ([2, 4], [0.60, 0.90])
    assert r.curve("train/loss_epoch") == ([1, 2, 3, 4], [4.0, 3.0, 2.0, 1.0])
    assert r.best() == (0.30, 0.60)


def test_a_splat_run_without_its_fit_summary_shows_no_compression(tmp_path):
    fake_run(tmp_path / "gs", "gs196", "transfer", top1=[0.5], top5=[0.7])  # its splats have no summary.json
    fake_run(tmp_path / "rgb", "rgb", "rgb", top1=[0.5], top5=[0.7])
    rows = table([load_run(tmp_path / "gs"), load_run(tmp_path / "rgb")]).splitlines()[2:]
    assert [row.split(" | ")[5] for row in rows] == ["-", "1.0x"]


def test_compare_reads_the_best_epoch(tmp_path):
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "summary.json").write_text('{"splats_mean": 400, "compression_ratio": 23.52, "image_size": 224}')
    fake_run(tmp_path / "r", "gs196", "transfer", top1=[0.10, 0.25, 0.20], top5=[0.30, 0.50, 0.70],
             fit_dir=tmp_path / "fit")
    r = load_run(tmp_path / "r")
    assert r.best() == (0.25, 0.50) and r.curve("train/loss_epoch") == ([1, 2, 3], [4.0, 3.0, 2.0])
    assert r.compression == pytest.approx(23.52, abs=0.01)
    # a summary from before the quantized record: float16, 400 x 16 bytes an image
    assert "| gs196 | transfer (196 queries) | fp16 splats | 400 | 6,400 | 23.5x | 8.2% | 25.0% | 50.0% |" in table([r])
