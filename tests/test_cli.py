"""Every user error, through the real command: one line `error: <key or file>: ...`, exit status 2, no traceback.

The cases are the ones a new user hits and every range the configs declare. Hostile
input too: a checkpoint carrying a pickled payload must be refused without the payload running.
"""
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image
from helpers import fitted_shards

from gs_lightning.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs `touch <marker>`: what a malicious 'checkpoint' would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    (d / "a_file").write_text("not a folder")
    (d / "random.ckpt").write_bytes(os.urandom(4096))
    torch.save({"state_dict": {"visual.proj": torch.zeros(2, 2)}, "extra": Payload(d / "PAYLOAD_RAN")},
               d / "payload.ckpt")
    gs = fitted_shards(d / "gs", [4])
    (d / "pngs").mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (100 * i, 50, 50)).save(d / "pngs" / f"{i}.png")
    run = d / "runs" / "a_run"  # what eval and compare check before they read a run: its config and best.ckpt
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("name: a_run\n")
    (run / "checkpoints" / "best.ckpt").write_bytes(os.urandom(64))
    return {"file": d / "a_file", "random": d / "random.ckpt", "payload": d / "payload.ckpt",
            "marker": d / "PAYLOAD_RAN", "dir": d, "pngs": d / "pngs", "run": run,
            "gs": f"data.splats.train={gs} data.splats.val={gs} data.splats.val_quantized={gs}"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gs_lightning", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


# (command line, with {file}, {random}, {payload}, {dir} and {gs} (existing splat shards) filled from the
# fixture; what the error must name, filled the same way)
CASES = {
    # what a new user hits first
    "num_splats_zero": ("fit fit.num_splats=0", "fit.num_splats"),
    "num_splats_text": ("fit fit.num_splats=abc", "fit.num_splats"),
    "image_size_zero": ("fit fit.image_size=0", "fit.image_size"),
    "iterations_negative": ("fit fit.iterations=-1", "fit.iterations"),
    "output_is_a_file": ("fit fit.output={file}", "fit.output"),
    "lr_text": ("train gs196 demo model.lr=fast", "model.lr"),
    "checkpoint_random_bytes": ("train gs196 demo {gs} model.rgb_checkpoint={random}", "model.rgb_checkpoint"),
    "checkpoint_pickled_payload": ("train gs196 demo {gs} model.rgb_checkpoint={payload}", "model.rgb_checkpoint"),
    # the declared ranges
    "iterations_zero": ("fit fit.iterations=0", "fit.iterations"),
    "fit_batch_size_zero": ("fit fit.batch_size=0", "fit.batch_size"),
    "fit_lr_zero": ("fit fit.lr.xy=0", "fit.lr.xy"),
    "fit_lr_negative": ("fit fit.lr.rgb=-0.1", "fit.lr.rgb"),
    "prune_threshold_negative": ("fit fit.prune.threshold=-0.01", "fit.prune.threshold"),
    "prune_outside_the_run": ("fit fit.prune.at=[0.5,1.5]", "fit.prune.at[1]"),
    "prune_points_text": ("fit fit.prune.at=[soon]", "fit.prune.at[0]"),
    "init_unknown": ("fit fit.init=grid", "fit.init"),
    "solve_colours_text": ("fit fit.solve_colours=maybe", "fit.solve_colours"),
    "solve_steps_zero": ("fit fit.solve_steps=0", "fit.solve_steps"),
    "target_psnr_negative": ("fit fit.target_psnr=-3", "fit.target_psnr"),
    "target_psnr_text": ("fit fit.target_psnr=high", "fit.target_psnr"),
    "beta2_one": ("fit fit.lr.beta2=1", "fit.lr.beta2"),
    "decay_above_one": ("fit fit.lr.decay_to=1.5", "fit.lr.decay_to"),
    "adaptive_floor_above_one": ("fit fit.adaptive_floor=1.2", "fit.adaptive_floor"),
    "oriented_aspect_below_one": ("fit fit.oriented_max_aspect=0.5", "fit.oriented_max_aspect"),
    "rgb_distills": ("train rgb demo model.distill.embedding_weight=0.5 --cfg", "model.distill.embedding_weight"),
    "stage_1_weighed": ("train gs196_distill demo model.distill.logit_weight=1 --cfg", "model.distill.logit_weight"),
    "model_beta_one": ("train gs196 demo model.betas=[0.9,1.0]", "model.betas"),
    "scratch_from_a_checkpoint": ("train gs196_scratch demo model.init_checkpoint={random} --cfg",
                                  "model.init_checkpoint"),
    "resume_from_without_resume": ("train gs196_scratch demo {gs} resume_from={random}", "resume_from"),
    "splats_on_a_resnet": ("train gs196 demo model.name=RN50 --cfg", "model.name"),
    "splats_on_a_timm_tower": ("train gs196_scratch demo model.name=convnext_base --cfg", "model.name"),
    "siglip_loss": ("train rgb demo model.name=ViT-B-16-SigLIP --cfg", "model.name"),
    "heads_do_not_divide_width": ("train gs196_scratch demo model.splat_encoder.resampler_heads=7",
                                  "model.splat_encoder.resampler_heads"),
    "input_missing": ("fit fit.input={dir}/nowhere/{{00000..00003}}.tar", "fit.input"),
    "output_under_a_file": ("fit fit.output={file}/out", "fit.output"),
    "key_unknown": ("fit fit.num_splat=3", "fit.num_splat"),
    # a value where the schema has a group of keys, or keys where it has a list
    "group_given_a_value": ("fit fit=4 --cfg", "fit"),
    "fit_lr_group_given_a_value": ("fit fit.lr=3 --cfg", "fit.lr"),
    "model_group_given_a_value": ("train gs196 demo model=3 --cfg", "model"),
    "splats_group_given_a_value": ("train gs196 demo data.splats=x --cfg", "data.splats"),
    "list_given_keys": ("fit fit.prune.at.x=1 --cfg", "fit.prune.at"),
    "list_cut_short": ("fit fit.prune.at=[0.5, --cfg", "fit.prune.at"),  # `[0.5, 0.75]` split by the shell
    "number_not_yaml": ("fit fit.num_splats=[3 --cfg", "fit.num_splats"),
    "model_lr_zero": ("train gs196 demo model.lr=0", "model.lr"),
    "train_batch_size_zero": ("train gs196 demo data.batch_size=0", "data.batch_size"),
    "weight_decay_negative": ("train rgb demo model.weight_decay=-1", "model.weight_decay"),
    "mode_unknown": ("train gs196 demo model.mode=finetune", "model.mode"),
    "monitor_not_logged": ("train rgb demo checkpoint.monitor=val/acc --cfg", "checkpoint.monitor"),
    "model_unknown": ("train rgb demo model.name=ViT-Huge-99", "model.name"),
    "checkpoint_missing": ("train gs196 demo model.rgb_checkpoint={dir}/none.ckpt", "model.rgb_checkpoint"),
    "train_data_missing": ("train gs196_scratch demo data.splats.train={dir}/nowhere/{{0..3}}.tar", "data.splats.train"),
    "experiment_unknown": ("train gs197", "gs197"),
    "compare_not_a_run": ("compare {dir}", "{dir}"),
    "compare_out_is_a_file": ("compare {run} --out {file}", "--out"),
    "eval_out_is_a_file": ("eval {run} suite=demo suite.root={dir}/suite fitted={dir}/fitted out={file}", "out"),
    "eval_reference_unknown": ("eval {run} suite=demo suite.root={dir}/suite fitted={dir}/fitted out={dir}/eval "
                               "reference=foo", "reference"),
    "pattern_expanded_by_the_shell": ("fit fit.input={dir}/0.tar fit.input={dir}/1.tar", "fit.input"),
    "output_dir_is_a_file": ("train rgb demo output_dir={file}", "output_dir"),
    # what Lightning refuses of the trainer keys (a TypeError, an ImportError), before anything is written
    "devices_negative": ("fit fit.input={pngs} fit.output={dir}/out_devices trainer.devices=-1", "trainer.devices"),
    "accelerator_not_installed": ("fit fit.input={pngs} fit.output={dir}/out_tpu trainer.accelerator=tpu",
                                  "trainer.accelerator"),
    "strategy_unknown": ("fit fit.input={pngs} fit.output={dir}/out_strategy trainer.strategy=foo",
                         "trainer.strategy"),
    "precision_unknown": ("train rgb demo trainer.precision=foo --cfg", "trainer.precision"),
    # the splat record
    "record_unknown": ("fit fit.record=zip", "fit.record"),
    "refine_iterations_negative": ("fit fit.refine_iterations=-1", "fit.refine_iterations"),
    "refine_iterations_text": ("fit fit.refine_iterations=many", "fit.refine_iterations"),
    "refine_lr_zero": ("fit fit.refine_lr=0", "fit.refine_lr"),
    "embeddings_missing": ("train gs196_distill demo {gs} model.rgb_checkpoint={random} data.embeddings={dir}/none",
                           "data.embeddings"),
    "val_quantized_missing": ("train gs196_scratch demo {gs} data.splats.val_quantized={dir}/nowhere/{{0..3}}.tar",
                              "data.splats.val_quantized"),
}


@pytest.fixture(scope="module")
def answers(request, files) -> dict[str, subprocess.CompletedProcess]:
    """The selected cases' runs, a process per core at once: each is mostly interpreter and import start-up, and
    a mutant's run selects one case of dozens."""
    selected = {item.callspec.params["case"] for item in request.session.items
                if "case" in getattr(getattr(item, "callspec", None), "params", {})}
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        futures = {case: pool.submit(run_cli, *line.format(**files).split()) for case, (line, _) in CASES.items()
                   if case in selected}
    return {case: f.result() for case, f in futures.items()}


@pytest.mark.parametrize("case", CASES)
def test_user_errors_are_one_line_naming_the_key(case, answers, files):
    key = CASES[case][1].format(**files)
    out = answers[case]
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {key}: "), last
    if case == "output_is_a_file":  # says what to give, not only that the path cannot be made
        assert "exists and is not a folder; give a folder" in last, last
    if case.endswith("group_given_a_value"):  # says what to give instead
        assert "is a group of keys" in last and f"set the keys inside it, e.g. {key}." in last, last
    if case == "list_given_keys":
        assert "is a list" in last and "fit.prune.at=[" in last, last
    if case in ("devices_negative", "accelerator_not_installed", "strategy_unknown"):  # before fit.output is made
        out_dir = CASES[case][0].split("fit.output=")[1].split()[0].format(**files)
        assert not Path(out_dir).exists(), sorted(Path(out_dir).rglob("*"))
    if case.startswith("eval_"):  # refused before the first task: nothing fitted, nothing written
        assert not (files["dir"] / "eval").exists() and not (files["dir"] / "fitted").exists(), out.stdout
        assert "a_run:" not in out.stdout, out.stdout  # the line each run's scores print
    if case == "eval_reference_unknown":
        assert "'foo' is none of the runs given (a_run)" in last, last
    if case == "pattern_expanded_by_the_shell":  # says why, and what to do
        assert "given 2 times in a row" in last and "quote it" in last, last
    if case == "train_data_missing":  # says how to get data without a download
        assert "DATA=demo" in last, last
    if case == "checkpoint_pickled_payload":
        assert not files["marker"].exists(), "the pickled payload ran"
        assert "posix.system" in last  # says what it found


# ---- the CLI explains itself ------------------------------------------------------------------------------


def test_fit_help_lists_recipes_and_every_key_with_type_default_and_meaning():
    out = run_cli("fit", "--help")
    assert out.returncode == 0, out.stderr
    assert "recipes and overlays (experiments/fit/): coarse, demo, demo_test, demo_test_quantized, gaussianimage, log_scale, paper" in out.stdout
    line = next(l for l in out.stdout.splitlines() if l.split()[:1] == ["fit.num_splats"])
    assert line.split()[1:3] == ["int", "400"] and "Gaussians per image (>= 1)" in line
    line = next(l for l in out.stdout.splitlines() if l.split()[:1] == ["fit.lr.xy"])
    assert line.endswith("(> 0)"), line  # each bound in the words the check applies
    for key, bounds in (("fit.lr.beta2", "(> 0, < 1)"), ("fit.lr.decay_to", "(> 0, <= 1)")):
        line = next(l for l in out.stdout.splitlines() if l.split()[:1] == [key])
        assert line.endswith(bounds), line
    line = next(l for l in out.stdout.splitlines() if l.split()[:1] == ["fit.init"])
    assert all(init in line for init in ("oriented", "adaptive", "structured", "random"))
    paper = run_cli("fit", "paper", "--help")  # the values the named recipe gives
    line = next(l for l in paper.stdout.splitlines() if l.split()[:1] == ["fit.iterations"])
    assert line.split()[1:3] == ["int", "3000"]


@pytest.mark.parametrize("command", ["train", "embed"])
def test_help_without_names_shows_the_defaults(command):
    """With no experiment named, the values shown are the dataclasses' defaults, which the heading says they are,
    not those of the experiment the command would pick (rgb's 8 devices and bf16-mixed)."""
    out = run_cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "keys, with their type, default and meaning:" in out.stdout
    rows = {l.split()[0]: l.split()[1:] for l in out.stdout.splitlines() if l.startswith("  trainer.")}
    assert rows["trainer.devices"][:3] == ["int", "|", "str"] and rows["trainer.devices"][3] == "auto", rows
    assert rows["trainer.precision"][:2] == ["str", "32-true"], rows
    assert rows["trainer.strategy"][:2] == ["str", "auto"], rows


def test_train_help_lists_experiments_overlays_and_keys():
    out = run_cli("train", "gs98", "--help")
    assert out.returncode == 0, out.stderr
    assert "experiments (experiments/train/): gs196, " in out.stdout and "overlays (experiments/overlays/): demo" in out.stdout
    line = next(l for l in out.stdout.splitlines() if l.split()[:1] == ["model.splat_encoder.num_queries"])
    assert line.split()[1:3] == ["int", "98"] and "resampler queries" in line
    rows = out.stdout.splitlines()  # a value too long for its column puts the meaning on the next line, blank to it
    keyed = [i for i, l in enumerate(rows) if l[:2] == "  " and l[2:3].isalpha() and "." in l.split()[0]]
    width = max(len(rows[i].split()[0]) for i in keyed)
    continued = [rows[i + 1] for i in keyed if i + 1 < len(rows) and rows[i + 1][:2 + width + 2].strip() == ""
                 and rows[i + 1].strip()]
    assert "the RGB teacher's best checkpoint" in " ".join(continued), out.stdout


def test_cfg_prints_the_composed_config_and_runs_nothing(tmp_path):
    import yaml

    out = run_cli("train", "gs98", "demo", "model.lr=0.0042", f"output_dir={tmp_path}/runs", "--cfg")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["name"] == "gs98" and cfg["model"]["lr"] == 0.0042 and cfg["model"]["splat_encoder"]["num_queries"] == 49
    assert cfg["model"]["rgb_checkpoint"] == f"{tmp_path}/runs/rgb/checkpoints/best.ckpt"  # resolved
    assert not (tmp_path / "runs").exists()
    out = run_cli("train", "gs98", "demo", "model.mode=distil", "--cfg")  # what train would refuse, --cfg refuses
    assert out.returncode == 2 and not out.stdout, out.stdout
    assert out.stderr.strip().splitlines()[-1].startswith("error: model.mode: must be one of rgb, distill"), out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU, as a login node is")
def test_cfg_of_a_gpu_run_on_a_machine_without_one_prints_it_with_a_note_and_the_run_refuses_it(capsys):
    import yaml

    from gs_lightning.build import check_trainer
    from gs_lightning.cli import train

    train(["rgb", "demo", "trainer.accelerator=gpu", "trainer.devices=8", "trainer.strategy=ddp", "--cfg"])
    out = capsys.readouterr()  # composed on a login node, for a job that runs on GPU nodes
    trainer = yaml.safe_load(out.out)["trainer"]
    assert trainer["devices"] == 8
    assert out.err.startswith("note: trainer.accelerator=gpu: this machine has none, so the trainer keys were not "
                              "checked"), out.err
    with pytest.raises(UserError, match=r"^trainer\.accelerator: Lightning cannot take 'gpu'"):  # what train runs
        check_trainer(trainer)
    with pytest.raises(UserError, match=r"^trainer\.precision"):  # a machine that has the accelerator checks it
        train(["rgb", "demo", "trainer.accelerator=cpu", "trainer.precision=foo", "--cfg"])


def test_a_value_that_is_not_yaml_is_its_text():
    """`fit.input=*.jpg` (a leading * is a YAML alias) is the glob the user typed, not a parser's traceback."""
    from gs_lightning.config import FitRun, compose

    assert compose(FitRun, [], ["fit.input=*.jpg", "fit.output=[x"]).fit.input == "*.jpg"
    assert compose(FitRun, [], ["fit.output=[x"]).fit.output == "[x"


def test_a_key_given_in_a_row_is_a_shell_expansion_and_given_again_later_an_override():
    from gs_lightning.cli import check_repeated_keys

    check_repeated_keys(["fit.iterations=5", "fit.num_splats=16", "fit.iterations=40"])  # a preset, then the user's
    with pytest.raises(UserError, match=r"^fit\.input: given 3 times in a row \(d/0\.tar, d/1\.tar, \.\.\.\)"):
        check_repeated_keys(["fit.output=o", "fit.input=d/0.tar", "fit.input=d/1.tar", "fit.input=d/2.tar", "x=1"])


def test_make_passes_patterns_to_the_command_as_written():
    """bash would expand ARGS="fit.input=d/{00000..00002}.tar" into three overrides, of which the last wins."""
    out = subprocess.run(["make", "-s", "-o", "build", "fit", "train", "PY=echo", "EXP=gs196",
                          "ARGS=fit.input=d/{00000..00002}.tar x=photos/*.jpg"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["-m gs_lightning fit fit.input=d/{00000..00002}.tar x=photos/*.jpg",
                                       "-m gs_lightning train gs196 fit.input=d/{00000..00002}.tar x=photos/*.jpg"]


def test_the_console_script_is_the_cli():
    script = Path(sys.executable).parent / "gs-lightning"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "commands:" in out.stdout and "fit " in out.stdout, out.stderr
    out = subprocess.run([str(script), "fitt"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: fitt: not a command")


@pytest.mark.parametrize("args, key", [(["model.lrr=1"], "model.lrr"), (["--with"], "--with"),
                                       (["--with", "n8", "trainer.max_epochs=0"], "trainer.max_epochs")],
                         ids=["typo", "with_no_name", "bad_value_for_an_optional_step"])
def test_demo_answers_a_bad_argument_before_it_writes_or_fits_anything(tmp_path, args, key):
    """The demo's data and fits take minutes: its arguments are checked first, every training step's config
    composed with them (the demo writes under the folder it runs in, here tmp_path)."""
    proc = subprocess.Popen([sys.executable, "-m", "gs_lightning", "demo", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=120)  # the answer takes seconds; the demo's fits, many minutes
    finally:
        if proc.poll() is None:  # a demo that did start: it and its dataloader workers go
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 2 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(f"error: {key}: "), err[-2000:]
    assert not (tmp_path / "outputs").exists()


def test_demo_refuses_test_images_that_would_reach_into_its_suite(tmp_path, monkeypatch):
    """The suite's tasks are Fashion-MNIST's test images 5,000-5,999, never validated on: experiments/demo.yaml
    may write at most the first 5,000 as the validation set, and is refused, naming the key, before any data."""
    import gs_lightning.config
    from gs_lightning.cli import demo

    plan = (gs_lightning.config.EXPERIMENTS / "demo.yaml").read_text()
    (tmp_path / "demo.yaml").write_text(plan.replace("data_root: outputs/demo/data",
                                                     f"data_root: {tmp_path}/data\ntest_images: 5001"))
    monkeypatch.setattr(gs_lightning.config, "EXPERIMENTS", tmp_path)
    with pytest.raises(UserError, match=r"^test_images: .*<= 5000"):
        demo([])
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("where", ["the demo's folder", "elsewhere"])
def test_a_rerun_of_the_demo_trains_its_own_runs_again_and_leaves_other_runs_alone(tmp_path, monkeypatch, where):
    """train refuses a folder that holds a run; the demo removes its own earlier runs (under outputs/demo) before
    training them again, and never a run outside its folder that an output_dir= override points it to. Its
    teacher is trained again, so its embeddings are made again. The overrides reach every train and embed step,
    and stage 2 starts from stage 1 wherever output_dir puts it."""
    from gs_lightning.config import compose_train, split_args

    import gs_lightning.cli as cli
    import gs_lightning.compare
    import gs_lightning.data.demo
    import gs_lightning.zeroshot.demo

    monkeypatch.chdir(tmp_path)
    args = [] if where == "the demo's folder" else [f"output_dir={tmp_path}/elsewhere"]
    earlier = (tmp_path / ("outputs/demo/runs" if not args else "elsewhere") / "rgb")
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "best.ckpt").write_text("an earlier run")
    embeddings = tmp_path / "outputs/demo/embeddings/rgb"  # the demo overlay's data.embeddings
    embeddings.mkdir(parents=True)
    (embeddings / "embed.yaml").write_text("an earlier teacher's")
    seen, calls = {}, []
    monkeypatch.setattr(cli, "train", lambda a: (calls.append(a), seen.setdefault(a[0], earlier.exists())))
    monkeypatch.setattr(cli, "embed", lambda a: (calls.append(a), seen.setdefault("embed", embeddings.exists())))
    for name in ("fit", "evaluate_suite"):
        monkeypatch.setattr(cli, name, lambda a: None)
    monkeypatch.setattr(gs_lightning.data.demo, "write_fashion_mnist", lambda *a, **k: None)
    monkeypatch.setattr(gs_lightning.compare, "compare", lambda *a, **k: "")
    monkeypatch.setattr(gs_lightning.zeroshot.demo, "write_demo_suite", lambda *a, **k: None)
    cli.demo(args)
    assert seen["rgb"] is (where == "elsewhere") and "gs196" in seen and seen["embed"] is False
    assert len(calls) == 9 and all(a[len(a) - len(args):] == args for a in calls)
    (stage2,) = [compose_train(*split_args(a)) for a in calls if "name=gs196_distill_transfer_n32" in a]
    runs = f"{tmp_path}/elsewhere" if args else "outputs/demo/runs"
    assert stage2.model.init_checkpoint == f"{runs}/gs196_distill_n32/checkpoints/best.ckpt"


def test_the_monitor_choices_are_the_names_validation_logs():
    """checkpoint.monitor's choices are what ModelCheckpoint can find: zero_shot_metrics' logged names."""
    from gs_lightning.build import CheckpointConfig
    from gs_lightning.zeroshot.classifier import zero_shot_metrics

    choices = CheckpointConfig.__dataclass_fields__["monitor"].metadata["choices"]
    assert sorted(choices) == sorted(zero_shot_metrics(10).keys(keep_base=False))
