"""The zero-shot suite: clip_benchmark's task layout read as clip_benchmark reads it, each task's main metric and
the suite's mean against a known answer, the tasks' images fitted once per fit setting, and clear errors."""
import io
import os
import json
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from conftest import shipped_model_kwargs
from helpers import image_bytes, smooth_photo

from gs_lightning.compare import SuiteRow, suite_csv, suite_table
from gs_lightning.models.clip_module import ClipModule
from gs_lightning.errors import UserError
from gs_lightning.zeroshot.tasks import Task, read_suite, read_task, write_task

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "bird", "fish"]
TEMPLATES = ["a photo of a {c}.", "a drawing of the {c}."]


def task_samples(count: int, size: int = 16, labels=None) -> list[dict]:
    return [{"key": f"k{i:04d}", "png": image_bytes(smooth_photo(size, size, seed=i), "PNG"),
             "cls": int(labels[i] if labels is not None else i % len(CLASSES))} for i in range(count)]


# ---- the layout, as clip_benchmark reads it ------------------------------------------------------------------


def test_a_task_reads_as_clip_benchmark_reads_it(tmp_path):
    """Written in clip_benchmark's layout, in two shards: its own reader (build_wds_dataset) and ours give the
    same images, labels, class names and templates."""
    from clip_benchmark.datasets.builder import build_wds_dataset
    from PIL import Image

    from gs_lightning.data.shards import list_sources

    task = write_task(tmp_path / "pets", task_samples(7), CLASSES, TEMPLATES, shard_size=4)
    theirs = build_wds_dataset("wds/pets", transform=lambda im: np.asarray(im.convert("RGB")), split="test",
                               data_dir=str(tmp_path / "pets"))
    assert theirs.classes == task.classnames == CLASSES and theirs.templates == task.templates == TEMPLATES
    ours = [(np.asarray(Image.open(io.BytesIO(raw.image)).convert("RGB")), raw.cls)
            for source in list_sources(task.shards) for raw in source.samples([])]
    got = list(theirs)
    assert len(got) == len(ours) == 7
    for (a, la), (b, lb) in zip(ours, got):
        assert np.array_equal(a, b) and la == lb


def test_a_suite_root_whose_name_reads_as_a_glob_or_a_list_is_read_as_itself(tmp_path):
    """A folder named `tasks [v2], {a}` holds the tasks, and the fitted sets of them: its brackets, comma and
    braces are characters of the path, not a glob, a list or an alternation, from the task's shards to the fit
    summary beside the fitted ones."""
    from gs_lightning.cli import _fitted
    from gs_lightning.compare import splat_set
    from gs_lightning.data.shards import expand_urls, list_sources

    root = tmp_path / "tasks [v2], {a}"
    write_task(root / "pets", task_samples(7), CLASSES, TEMPLATES, shard_size=4)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "pets"}]}))
    (task,) = read_suite(tmp_path / "suite.yaml", root)
    assert expand_urls(task.shards) == [str(root / "pets" / "test" / f"{i}.tar") for i in range(2)]
    assert sum(1 for source in list_sources(task.shards) for _ in source.samples([])) == 7
    shards, unfitted = _fitted(task, FIT, root / "fitted")
    assert unfitted == 0 and [Path(u).name for u in expand_urls(shards)] == ["0.tar", "1.tar"]
    assert splat_set(shards)["images_fitted"] == 7


def test_class_names_are_utf8_whatever_the_locale_and_a_bom_is_no_part_of_the_first(tmp_path):
    """clip_benchmark's files are UTF-8 (Country211's names, ...): read as such in an ASCII locale too, and a byte
    order mark (an editor's) is not read into the first class's name."""
    names = ["Zürich", "São Paulo", "Kraków", "東京"]
    write_task(tmp_path / "cities", task_samples(4), names, TEMPLATES)
    f = tmp_path / "cities" / "classnames.txt"
    assert f.read_bytes() == ("\n".join(names) + "\n").encode("utf-8")
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    ascii_locale = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    out = subprocess.run([sys.executable, "-c", "import locale, sys; from gs_lightning.zeroshot.tasks import read_task; "
                          "print(locale.getpreferredencoding(False)); "
                          "print(ascii(read_task(sys.argv[1]).classnames))", str(tmp_path / "cities")],
                         cwd=ROOT, capture_output=True, text=True, env=ascii_locale, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    encoding, read = out.stdout.splitlines()
    assert encoding.lower() in ("ansi_x3.4-1968", "ascii") and read == ascii(names)


# ---- metrics against a known answer ------------------------------------------------------------------------------

# (label, rank of the true class among the scores): class 0 three times (recall 2/3), class 1 once (1), class 2
# twice (1/2), class 3 never. top-1 4/6; mean per-class recall over the classes present (clip_benchmark's
# balanced accuracy) (2/3 + 1 + 1/2) / 3.
KNOWN = [(0, 0), (0, 0), (0, 2), (1, 0), (2, 1), (2, 0)]


def known_splats(root: Path) -> str:
    from gs_lightning.data.shards import FittedShard

    w = FittedShard(root / "00000.tar", "fp16")
    for i, (label, rank) in enumerate(KNOWN):
        rec = np.full((2, 8), 0.1, np.float16)
        rec[0, 5], rec[0, 6] = label / 10, rank / 10
        w.write(f"s{i}", rec, {}, None, label)
    w.commit()
    return str(root / "00000.tar")


def stub(module: ClipModule) -> None:
    """encode_image gives features whose scores against the classifier rank the true class at the set's rank."""
    def encode_image(splats, normalize=False):
        C = module.classifier
        labels, ranks = ((splats.rgb[:, 0, k] * 10).round().long().tolist() for k in (0, 1))
        scores = torch.zeros(len(labels), len(CLASSES))
        for b, (label, rank) in enumerate(zip(labels, ranks)):
            order = [c for c in range(len(CLASSES)) if c != label]
            order.insert(rank, label)
            scores[b, order] = torch.arange(len(CLASSES), 0, -1, dtype=torch.float32)
        return scores @ torch.linalg.pinv(C)  # features @ C = scores

    module.model.encode_image = encode_image


def test_a_tasks_metrics_have_the_known_answer(tmp_path):
    from gs_lightning.zeroshot.datamodule import ZeroShotDataModule

    torch.manual_seed(0)
    module = ClipModule(**shipped_model_kwargs(mode="scratch", splat_encoder={"num_queries": 5, "resampler_heads": 2,
                                                                              "stem_hidden": 16, "num_freqs": 3}))
    module.use_classes(CLASSES, [lambda c, t=t: t.replace("{c}", c) for t in TEMPLATES])
    stub(module)
    val = ZeroShotDataModule(kind="splats", path=known_splats(tmp_path), batch_size=4, num_workers=0)
    (m,) = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        module, dataloaders=val.val_dataloader(), verbose=False)
    assert m["val/top1"] == pytest.approx(4 / 6)
    assert m["val/mean_per_class_recall"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)


def test_each_metric_name_reads_its_own_metric():
    """clip_benchmark's metric names (a suite's) to our metrics' keys, on KNOWN's predictions: acc1 is 4/6, the
    mean per-class recall (2/3 + 1 + 1/2) / 3, the macro F1 over the classes present 2/3."""
    from gs_lightning.zeroshot.classifier import zero_shot_metrics
    from gs_lightning.zeroshot.tasks import METRICS

    labels = torch.tensor([label for label, _ in KNOWN])
    predicted = torch.tensor([0, 0, 1, 1, 0, 2])  # the top class of each KNOWN ranking (see stub)
    metrics = zero_shot_metrics(len(CLASSES), prefix="")
    metrics.update(torch.nn.functional.one_hot(predicted, len(CLASSES)).float(), labels)
    got = {name: float(metrics.compute()[key]) for name, key in METRICS.items()}
    assert got["acc1"] == pytest.approx(4 / 6) and got["mean_per_class_recall"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert got["acc5"] == pytest.approx(1.0)  # every class is in the top 5 of 4
    assert got["F1-macro_all"] == pytest.approx(2 / 3)  # each class present: 2 tp, or 1 tp, of F1 2/3


def test_mean_per_class_recall_leaves_out_a_class_with_no_images_as_clip_benchmark_does():
    """clip_benchmark scores mean_per_class_recall with sklearn's balanced_accuracy_score: recall over the classes
    present in the labels. Class 3 has no image but is predicted once: (1/2 + 1) / 2, not (1/2 + 1 + 0) / 3."""
    from gs_lightning.zeroshot.classifier import zero_shot_metrics

    metrics = zero_shot_metrics(len(CLASSES), prefix="")
    metrics.update(torch.nn.functional.one_hot(torch.tensor([0, 3, 1, 1]), len(CLASSES)).float(),
                   torch.tensor([0, 0, 1, 1]))
    assert float(metrics.compute()["mean_per_class_recall"]) == pytest.approx(0.75)


def test_macro_f1_leaves_out_a_class_with_no_images_as_datacomp_does():
    """DataComp scores iWildCam's F1-macro_all with WILDS' F1, sklearn's f1_score over the labels present. Class 3
    has no image but is predicted once: class 0 has F1 2 tp / (2 tp + fp + fn) = 2 / 3, class 1 has 1, so
    (2/3 + 1) / 2, not (2/3 + 1 + 0) / 3."""
    from gs_lightning.zeroshot.classifier import zero_shot_metrics

    metrics = zero_shot_metrics(len(CLASSES), prefix="")
    metrics.update(torch.nn.functional.one_hot(torch.tensor([0, 3, 1, 1]), len(CLASSES)).float(),
                   torch.tensor([0, 0, 1, 1]))
    assert float(metrics.compute()["f1_macro"]) == pytest.approx(5 / 6)


@pytest.mark.parametrize("num_classes", [2, 10, 1000])
def test_each_epochs_metrics_are_their_own_after_a_first_batch_right_at_top1(num_classes):
    """The sanity check's batch, all right at top-1, then an epoch of other logits: every metric reads that epoch
    alone, top-5 included (the share of labels among the 5 highest logits, counted here by hand)."""
    from gs_lightning.zeroshot.classifier import zero_shot_metrics

    metrics = zero_shot_metrics(num_classes, prefix="")
    first = torch.arange(8) % num_classes
    metrics.update(torch.nn.functional.one_hot(first, num_classes).float(), first)
    assert {k: float(v) for k, v in metrics.compute().items()} == {
        "top1": 1.0, "top5": 1.0, "mean_per_class_recall": 1.0, "f1_macro": 1.0}
    metrics.reset()
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, num_classes, generator=generator), torch.randint(0, num_classes, (64,), generator=generator)
    metrics.update(logits, labels)
    got = metrics.compute()
    top = logits.topk(min(5, num_classes), dim=1).indices
    assert float(got["top1"]) == pytest.approx(float((top[:, 0] == labels).float().mean()))
    assert float(got["top5"]) == pytest.approx(float((top == labels[:, None]).any(1).float().mean()))


def test_a_template_line_takes_the_class_name_where_c_is():
    from gs_lightning.zeroshot.tasks import template

    assert template("a photo of a {c}, a kind of {c}.")("cat") == "a photo of a cat, a kind of cat."


def test_the_suite_table_gives_the_mean_and_the_ratios_to_the_reference():
    tasks = [Task("a", Path("a"), "acc1", "A"), Task("b", Path("b"), "mean_per_class_recall", "B"),
             Task("c", Path("c"), "mean_recall@1", "C")]  # a retrieval task: not evaluated
    rgb = SuiteRow("rgb", "rgb", 768, 1.0, 100.0, {"a": 0.8, "b": 0.5, "c": None})
    gs = SuiteRow("gs", "splats", 128, 9.2, 700.0, {"a": 0.6, "b": 0.5, "c": None})
    text = suite_table([rgb, gs], tasks, rgb)
    row = next(l for l in text.splitlines() if l.startswith("| gs |"))
    assert row == "| gs | splats | 128 | 9.2x | 7.0x | 60.0 | 50.0 | n/a | 55.0 | 0.88 |"  # (0.75 + 1) / 2
    assert "1 of 3 tasks not evaluated" in text and "mean_recall@1" in text


def test_the_suite_table_is_the_published_shape_cell_by_cell(tmp_path):
    """The whole table against one written by hand: the header, the rule, each row (images or splats, the values
    with thousands commas, compression, the load speed-up, a task's score, n/a for none, the mean, the mean ratio),
    "-" where a row has no load rate or no task in common with the reference, and the note on the tasks not
    evaluated (their metrics in order, and how many the mean is over). The CSV holds the same values, each with
    the samples it scored and those it could not read (blank where not scored)."""
    tasks = [Task("a", Path("a"), "acc1", "A"), Task("b", Path("b"), "mean_per_class_recall", "B"),
             Task("c", Path("c"), "mean_recall@1", "C"), Task("d", Path("d"), "image_retrieval_recall@5", "D")]
    rgb = SuiteRow("rgb", "rgb", 150528, 1.0, 100.0, {"a": 0.8, "b": 0.5, "c": None, "d": None})
    gs = SuiteRow("gs", "splats", 1024, 12.0, 350.0, {"a": 0.4, "b": 0.4},  # ratios 0.5 and 0.8
                  read={"a": (1498, 2), "b": (39, 1)})  # samples scored, samples unreadable
    slow = SuiteRow("slow", "splats", 64, 48.0, None, {"a": None, "b": 0.45})  # no load rate; a not scored
    blank = SuiteRow("blank", "splats", 8, 2.0, 50.0, {})  # no score at all: no mean, no ratio
    assert suite_table([rgb, gs, slow, blank], tasks, rgb) == (
        "| model | input | values/image | compression | load speed-up | A (acc1) | B (mean_per_class_recall) "
        "| C (mean_recall@1) | D (image_retrieval_recall@5) | mean | ratio to rgb |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| rgb | images | 150,528 | 1.0x | 1.0x | 80.0 | 50.0 | n/a | n/a | 65.0 | 1.00 |\n"
        "| gs | splats | 1,024 | 12.0x | 3.5x | 40.0 | 40.0 | n/a | n/a | 40.0 | 0.65 |\n"
        "| slow | splats | 64 | 48.0x | - | n/a | 45.0 | n/a | n/a | 45.0 | 0.90 |\n"
        "| blank | splats | 8 | 2.0x | 0.5x | n/a | n/a | n/a | n/a | n/a | - |\n"
        "\n"
        "2 of 4 tasks not evaluated (their metric needs more than labelled images: image_retrieval_recall@5, "
        "mean_recall@1); the mean is over the other 2.\n"
        "\n"
        "gs is scored on the samples it could read: A 2 of 1,500 unreadable, B 1 of 40 unreadable.")
    rgb.read = {"a": (1500, 0), "b": (40, 0)}
    slow.read = {"a": (1500, 0), "b": (40, 0)}  # a not scored: no count beside no value
    suite_csv([rgb, gs, slow], tasks[:2], tmp_path / "suite.csv")
    assert (tmp_path / "suite.csv").read_text().splitlines() == [
        "model,task,metric,value,samples,unreadable,values_per_image,compression,load_rate",
        "rgb,a,acc1,0.800000,1500,0,150528,1.0000,100.0",
        "rgb,b,mean_per_class_recall,0.500000,40,0,150528,1.0000,100.0",
        "gs,a,acc1,0.400000,1498,2,1024,12.0000,350.0", "gs,b,mean_per_class_recall,0.400000,39,1,1024,12.0000,350.0",
        "slow,a,acc1,,,,64,48.0000,", "slow,b,mean_per_class_recall,0.450000,40,0,64,48.0000,"]


def test_the_suite_table_without_a_reference_has_no_speed_up_and_no_ratio():
    """With no reference run there is nothing to divide by: the last column is plain "ratio", and the speed-up
    and ratio cells are "-"."""
    tasks = [Task("a", Path("a"), "acc1", "A")]
    gs = SuiteRow("gs", "splats", 1024, 12.0, 350.0, {"a": 0.4})
    assert suite_table([gs], tasks, None) == (
        "| model | input | values/image | compression | load speed-up | A (acc1) | mean | ratio |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| gs | splats | 1,024 | 12.0x | - | 40.0 | 40.0 | - |")


# ---- eval, end to end ---------------------------------------------------------------------------------------------


def finished_run(run_dir: Path, mode: str, data: dict) -> None:
    """A run as `train` leaves it (config.yaml, best.ckpt), of the tiny model."""
    torch.manual_seed(1)
    kwargs = shipped_model_kwargs(mode="rgb" if mode == "rgb" else "scratch")
    module = ClipModule(**kwargs)
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}},
               run_dir / "checkpoints" / "best.ckpt")
    cfg = {"name": run_dir.name, "model": {**kwargs, "mode": mode},
           "data": {"eval_set": "fashion-mnist", "val_batch_size": 8, **data}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))


FIT = {"num_splats": 6, "iterations": 3, "image_size": 16, "init": "structured", "solve_colours": False}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    write_task(root / "tasks" / "pets", task_samples(6), CLASSES, TEMPLATES)
    write_task(root / "tasks" / "pets_flipped", task_samples(5), CLASSES, TEMPLATES)
    (root / "suite.yaml").write_text(yaml.safe_dump({"tasks": [
        {"name": "pets", "title": "Pets"}, {"name": "pets_flipped", "metric": "mean_per_class_recall"},
        {"name": "coco", "metric": "mean_recall@1"}]}))
    fit_dir = root / "fit"
    fit_dir.mkdir()
    (fit_dir / "fit.yaml").write_text(yaml.safe_dump(FIT))
    finished_run(root / "runs" / "rgb", "rgb", {})
    finished_run(root / "runs" / "gs", "transfer", {"splats": {"val": str(fit_dir / "00000.tar")}})
    return root


def run_eval(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gs_lightning", "eval", str(root / "runs" / "rgb"),
                           str(root / "runs" / "gs"), f"suite={root / 'suite.yaml'}", f"suite.root={root / 'tasks'}",
                           f"out={root / 'out'}", f"fitted={root / 'fitted'}", *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_eval_reports_each_task_and_fits_a_tasks_images_once_per_setting(suite):
    out = run_eval(suite)
    assert out.returncode == 0, out.stderr[-3000:]
    for run in ("rgb", "gs"):  # every sample read: no count of unreadable ones, in the log or under the table
        assert f"{run} on pets: 6 samples scored\n" in out.stdout, out.stdout[-3000:]
    table = (suite / "out" / "suite.md").read_text()
    assert "could read" not in table
    assert "| model | input | values/image | compression | load speed-up | Pets (acc1) | pets_flipped " \
           "(mean_per_class_recall) | coco (mean_recall@1) | mean | ratio to rgb |" in table
    rows = list(__import__("csv").DictReader(open(suite / "out" / "suite.csv")))
    assert {(r["model"], r["task"]) for r in rows} == {(m, t) for m in ("rgb", "gs") for t in ("pets", "pets_flipped",
                                                                                                "coco")}
    assert {(r["task"], r["samples"], r["unreadable"]) for r in rows} == {("pets", "6", "0"), ("pets_flipped", "5", "0"),
                                                                         ("coco", "", "")}
    # the splat run read the tasks' images fitted with its own fit settings, with 6 splats each
    fitted = sorted((suite / "fitted" / "pets").iterdir())
    assert len(fitted) == 1 and yaml.safe_load((fitted[0] / "fit.yaml").read_text())["num_splats"] == 6
    summary = json.loads((fitted[0] / "summary.json").read_text())
    assert summary["images_fitted"] == 6 and summary["splats_mean"] == 6
    shard = fitted[0] / "0.tar"
    stamp = shard.stat().st_mtime_ns
    again = run_eval(suite)  # the same settings: reused, nothing fitted again
    assert again.returncode == 0 and shard.stat().st_mtime_ns == stamp
    assert "fit: all 1 shards of " in again.stdout and "were done before; nothing to fit" in again.stdout
    (suite / "fit" / "fit.yaml").write_text(yaml.safe_dump({**FIT, "num_splats": 5}))  # other settings: fitted anew
    third = run_eval(suite)
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(list((suite / "fitted" / "pets").iterdir())) == 2
    (suite / "fit" / "fit.yaml").write_text(yaml.safe_dump(FIT))


def test_a_task_with_unreadable_images_is_scored_on_the_rest_and_counts_them(suite, tmp_path):
    """evaluate counts what it scored and what it could not read; eval prints both, suite.md's footnote and
    suite.csv give them."""
    from gs_lightning.evaluate import evaluate

    samples = task_samples(7)
    for i in (2, 6):  # one of them the last
        samples[i]["png"] = b"not an image"
    write_task(tmp_path / "pets", samples, CLASSES, TEMPLATES)
    task = read_task(tmp_path / "pets")
    with pytest.warns(UserWarning, match="k0002"):
        result = evaluate(suite / "runs" / "rgb", task.shards, task)
    assert (result["samples"], result["skipped"]) == (5, 2)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "pets", "title": "Pets"}]}))
    out = subprocess.run([sys.executable, "-m", "gs_lightning", "eval", str(suite / "runs" / "rgb"),
                          f"suite={tmp_path / 'suite.yaml'}", f"suite.root={tmp_path}", f"out={tmp_path / 'out'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rgb on pets: 5 samples scored, 2 unreadable (the warnings above name them)" in out.stdout
    assert "rgb is scored on the samples it could read: Pets 2 of 7 unreadable." in (tmp_path / "out" / "suite.md").read_text()
    row, = __import__("csv").DictReader(open(tmp_path / "out" / "suite.csv"))
    assert (row["samples"], row["unreadable"]) == ("5", "2")


def test_a_suite_task_does_not_read_the_runs_own_eval_set(suite, tmp_path):
    """A run trained with a task folder as data.eval_set, since moved: the suite scores it on its tasks, and only
    its own eval set (which a task replaces) names the missing folder, as data.eval_set."""
    import shutil

    from gs_lightning.evaluate import evaluate

    run = tmp_path / "rgb"
    shutil.copytree(suite / "runs" / "rgb", run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["eval_set"] = str(tmp_path / "moved" / "cars")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    write_task(tmp_path / "pets", task_samples(4), CLASSES, TEMPLATES)
    task = read_task(tmp_path / "pets")
    assert evaluate(run, task.shards, task)["samples"] == 4
    with pytest.raises(UserError, match=r"^data\.eval_set: '.*/moved/cars' is neither a built-in eval set"):
        evaluate(run, task.shards)


def test_a_torn_task_shard_counts_every_sample_it_could_not_read(suite, tmp_path):
    """A task shard cut short (a broken copy) is scored on what was read before the tear; its sizes.json says
    how many samples it held, so every unread one counts as unreadable, not the rest as one."""
    import tarfile

    from gs_lightning.evaluate import evaluate

    write_task(tmp_path / "pets", task_samples(7), CLASSES, TEMPLATES)
    shard = tmp_path / "pets" / "test" / "0.tar"
    with tarfile.open(shard) as t:
        cut = next(m.offset for m in t.getmembers() if m.name.startswith("k0003"))
    shard.write_bytes(shard.read_bytes()[:cut])
    task = read_task(tmp_path / "pets")
    with pytest.warns(UserWarning, match="4 of its 7 samples unread"):
        result = evaluate(suite / "runs" / "rgb", task.shards, task)
    assert (result["samples"], result["skipped"]) == (3, 4)


def test_a_torn_task_shard_under_eval_scores_both_runs_on_the_rest_and_a_rerun_scores_only_what_was_not_kept(
        suite, tmp_path):
    """A task of two shards, the second torn: the RGB run is scored on what was read, the splat run on the images
    of the whole shard (fit writes no shard it cannot read to its end), and the torn shard's samples count as
    unreadable for both, from sizes.json. Each run's score on each task is kept once done: a rerun after a task
    failed scores only that task."""
    import tarfile

    write_task(tmp_path / "tasks" / "pets", task_samples(7), CLASSES, TEMPLATES, shard_size=4)
    shard = tmp_path / "tasks" / "pets" / "test" / "1.tar"  # k0004..k0006, torn inside k0005
    with tarfile.open(shard) as t:
        cut = next(m.offset for m in t.getmembers() if m.name.startswith("k0005"))
    shard.write_bytes(shard.read_bytes()[:cut])
    write_task(tmp_path / "tasks" / "birds", task_samples(5), CLASSES, TEMPLATES)
    (tmp_path / "tasks" / "birds" / "test" / "0.tar").write_bytes(b"")  # nothing readable: the suite stops
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "pets"}, {"name": "birds"}]}))

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gs_lightning", "eval", str(suite / "runs" / "rgb"),
                               str(suite / "runs" / "gs"), f"suite={tmp_path / 'suite.yaml'}",
                               f"suite.root={tmp_path / 'tasks'}", f"out={tmp_path / 'out'}",
                               f"fitted={tmp_path / 'fitted'}"], cwd=ROOT, capture_output=True, text=True, timeout=600)

    out = run()
    assert out.returncode == 2 and "error: task birds: " in out.stderr, out.stderr[-3000:]
    assert "rgb on pets: 5 samples scored, 2 unreadable" in out.stdout, out.stdout[-3000:]
    kept = sorted((tmp_path / "out" / "scores").glob("*/result.json"))
    assert [p.parent.name.split("-")[0] for p in kept] == ["rgb"]  # the splat run's pets comes after birds of rgb
    stamp = kept[0].stat().st_mtime_ns
    write_task(tmp_path / "tasks" / "birds", task_samples(5), CLASSES, TEMPLATES)  # mended
    out = run()
    assert out.returncode == 0, out.stderr[-3000:]
    assert kept[0].stat().st_mtime_ns == stamp  # rgb on pets: kept, not scored again
    assert "rgb on pets: 5 samples scored, 2 unreadable" in out.stdout, out.stdout[-3000:]
    assert "gs on pets: 4 samples scored, 3 unreadable" in out.stdout, out.stdout[-3000:]
    assert "gs on birds: 5 samples scored\n" in out.stdout
    rows = {(r["model"], r["task"]): (r["samples"], r["unreadable"])
            for r in __import__("csv").DictReader(open(tmp_path / "out" / "suite.csv"))}
    assert rows == {("rgb", "pets"): ("5", "2"), ("gs", "pets"): ("4", "3"), ("rgb", "birds"): ("5", "0"),
                    ("gs", "birds"): ("5", "0")}


@pytest.mark.parametrize("problem, want", [
    ("one class", "classnames.txt names 1 class; a zero-shot task chooses between two or more"),
    ("a blank class line", "classnames.txt line 2 is blank"),  # clip_benchmark would label dog 2, not 1
    ("a shard count that is no number", "nshards.txt must hold one number, the count of test/N.tar shards (1 or "
                                        "more); it holds 'two'"),
    ("no shards", "nshards.txt must hold one number, the count of test/N.tar shards (1 or more); it holds '0'"),
    ("no tasks key", "a suite file holds `tasks:`"),
    ("a task without a name", "task 2 has no name"),
    ("a mistyped metric", "task pets: metric 'acc_1' is none of clip_benchmark's"),
    ("two tasks of one name", "tasks 1 and 2 are both named 'pets'"),
])
def test_a_suite_or_task_file_of_the_wrong_shape_is_named(tmp_path, problem, want):
    root = tmp_path / "tasks"
    write_task(root / "pets", task_samples(4), CLASSES, TEMPLATES)
    names = root / "pets" / "classnames.txt"
    names.write_text({"one class": "cat\n", "a blank class line": "cat\n\ndog\nbird\n"}.get(problem, names.read_text()))
    if problem in ("a shard count that is no number", "no shards"):
        (root / "pets" / "test" / "nshards.txt").write_text("two\n" if problem != "no shards" else "0\n")
    tasks = [{"name": "pets", "metric": "acc_1" if problem == "a mistyped metric" else "acc1"},
             {"name": "coco", "metric": "mean_recall@1"}]  # listed, reported as not evaluated
    if problem == "a task without a name":
        tasks[1] = {"folder": "pets"}
    if problem == "two tasks of one name":  # one score and one fitted folder would serve both
        tasks[1] = {"name": "pets", "folder": "pets", "metric": "mean_per_class_recall"}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"task" if problem == "no tasks key" else "tasks": tasks}))
    with pytest.raises(UserError, match=re.escape(want)):
        read_suite(tmp_path / "suite.yaml", root)
    write_task(root / "pets", task_samples(4), CLASSES, TEMPLATES)  # the same suite, mended, reads
    if problem in ("one class", "a blank class line", "a shard count that is no number", "no shards"):
        assert [t.name for t in read_suite(tmp_path / "suite.yaml", root)] == ["pets", "coco"]


@pytest.mark.parametrize("problem", ["no task folder", "no classnames", "no templates", "label beyond the classes",
                                     "label below the classes", "no readable image"])
def test_a_broken_task_is_one_error_naming_the_task_and_file(suite, tmp_path, problem):
    root = tmp_path / "tasks"
    labels = {"label beyond the classes": [0, 1, 2, 4, 0],  # 4: one past the last class
              "label below the classes": [0, 1, 2, -1, 0]}.get(problem)
    samples = task_samples(5, labels=labels)
    if problem == "no readable image":  # torchmetrics would score it 0.0, and the suite's mean count that
        samples = [{**s, "png": b"not an image"} for s in samples]
    write_task(root / "pets", samples, CLASSES, TEMPLATES)
    if problem == "no classnames":
        (root / "pets" / "classnames.txt").unlink()
    if problem == "no templates":
        (root / "pets" / "zeroshot_classification_templates.txt").write_text("\n  \n")
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"tasks": [
        {"name": "pets" if problem != "no task folder" else "pets2"}]}))
    out = subprocess.run([sys.executable, "-m", "gs_lightning", "eval", str(suite / "runs" / "rgb"),
                          f"suite={tmp_path / 'suite.yaml'}", f"suite.root={root}", f"out={tmp_path / 'out'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    want = {"no task folder": f"error: task pets2: {root / 'pets2'} is not a folder",
            "no classnames": f"error: task pets: {root / 'pets' / 'classnames.txt'} is missing",
            "no templates": f"error: task pets: {root / 'pets' / 'zeroshot_classification_templates.txt'} holds no "
                            "template",
            "label beyond the classes": "error: task pets: 0.tar/k0003: .cls 4 is not one of the 4 class labels of "
                                        "the eval set (0 to 3",
            "label below the classes": "error: task pets: 0.tar/k0003: .cls -1 is not one of the 4 class labels of "
                                       "the eval set (0 to 3",
            "no readable image": f"error: task pets: {root / 'pets' / 'test'}/{{0..0}}.tar: none of its samples could "
                                 "be read"}[problem]
    assert last.startswith(want), last
