"""`compare` at equal bytes, end to end on tiny runs: the teacher's eval images re-encoded at each image's own
splat bytes (Pillow's bytes at the recorded quality, within 5% where the codec can get there), the teacher's
accuracy on them against a hand-computed zero-shot top-1, a splat run evaluated on its quantized set, and the
table, Fig. 6 and the edge-cloud report that carry them."""
import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import yaml
from conftest import shipped_model_kwargs
from helpers import datacomp_shards, fitted_shards
from PIL import Image

from gs_lightning.compare import compare
from gs_lightning.data.pixel_codecs import MATCH_TOLERANCE, encode, fit_pixels
from gs_lightning.data.shards import decode_image, list_sources, splat_bytes
from gs_lightning.zeroshot.tasks import eval_set
from gs_lightning.build import BANNER_LOGGERS, RANDOM_INIT_WARNING
from gs_lightning.evaluate import evaluate
from gs_lightning.models.clip_module import ClipModule
from gs_lightning.zeroshot.classifier import zero_shot_classifier

SIZE = 16  # ViT-Tiny-16's input; the eval images are written at it, so they are used as given


def fake_finished_run(run_dir: Path, mode: str, data: dict, seed: int) -> ClipModule:
    """A run as `train` leaves it: config.yaml, csv logs and a best.ckpt of a (randomly initialised) model."""
    torch.manual_seed(seed)
    kwargs = shipped_model_kwargs(mode="rgb" if mode == "rgb" else "scratch")
    module = ClipModule(**kwargs, eval_set="fashion-mnist")
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}},
               run_dir / "checkpoints" / "best.ckpt")
    cfg = {"name": run_dir.name, "model": {**kwargs, "mode": mode},
           "data": {"eval_set": "fashion-mnist", "val_batch_size": 4, "max_splats": None, **data}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / "csv").mkdir()
    (run_dir / "csv" / "metrics.csv").write_text("epoch,step,val/top1,val/top5\n0,9,0.5,0.9\n")
    (run_dir / "csv" / "hparams.yaml").write_text("trainable_share: 1.0\nqueries: 5\n")
    return module


def equal_bytes_folder(root: Path, what: str, pattern: str, results: str = "results") -> Path:
    """compare's folder of `what` (rgb-webp-at, rgb-rendered) for the splat set `pattern`: named by its folders
    and its pattern's hash."""
    import hashlib

    parent = Path(pattern).parent
    slug = f"{parent.parent.name}-{parent.name}-{hashlib.sha256(pattern.encode()).hexdigest()[:8]}"
    return root / results / "equal_bytes" / f"{what}-{slug}"


def top1_by_hand(module: ClipModule, pattern: str) -> float:
    classnames, templates = eval_set("fashion-mnist")
    model = module.model.eval()
    classifier = zero_shot_classifier(model, module.tokenizer, classnames, templates, torch.device("cpu"))
    preprocess = open_clip.image_transform(SIZE, is_train=False)
    right = total = 0
    for source in list_sources(pattern):
        for raw in source.samples([]):
            image = preprocess(Image.open(io.BytesIO(raw.image)).convert("RGB"))[None]
            with torch.no_grad():
                scores = model.encode_image(image, normalize=True) @ classifier
            right += int(scores.argmax().item() == raw.cls)
            total += 1
    return right / total


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eb")
    images = datacomp_shards(root / "images", [6, 5], size=SIZE, labelled=True)
    fp16 = fitted_shards(root / "fit", [6, 5], n_splats=(30, 60))
    quantized = fitted_shards(root / "fit-q", [6, 5], n_splats=(30, 60), record="quantized")
    for folder, record in (("fit", "fp16"), ("fit-q", "quantized")):
        b = splat_bytes(str(root / folder / "{00000..00001}.tar"))
        (root / folder / "summary.json").write_text(json.dumps({
            "splats_mean": 45, "record": record, "image_size": SIZE, "bytes_per_image": sum(b.values()) / len(b),
            "compression_ratio": 3 * SIZE * SIZE / (sum(b.values()) / len(b)), "seconds": 1.1, "images_fitted": 11}))
    teacher = fake_finished_run(root / "runs" / "rgb", "rgb", {"rgb": {"val": images}}, seed=1)
    student = fake_finished_run(root / "runs" / "gs", "transfer",
                                {"splats": {"val": fp16, "val_quantized": quantized}}, seed=2)
    text = compare([str(root / "runs" / "rgb"), str(root / "runs" / "gs")], root / "results")
    return {"root": root, "images": images, "fp16": fp16, "quantized": quantized, "teacher": teacher,
            "student": student, "text": text}


def test_reencoded_images_are_pillows_at_each_images_own_budget(runs):
    root = runs["root"]
    for codec in ("jpeg", "webp"):
        for pattern in ("fp16", "quantized"):
            folder = equal_bytes_folder(root, f"rgb-{codec}-at", runs[pattern]) / "shards"
            account = json.loads((folder / "reencoded.json").read_text())
            budgets = splat_bytes(runs[pattern])
            assert sorted(r["key"] for r in account["per_image"]) == sorted(budgets)
            originals = {f"{s.name}/{r.key}": r.image for s in list_sources(runs["images"]) for r in s.samples([])}
            stored = {f"{s.name}/{r.key}": r.image for s in list_sources(str(folder / "*.tar")) for r in s.samples([])}
            for row in account["per_image"]:
                assert row["budget"] == budgets[row["key"]]
                again = encode(fit_pixels(decode_image(originals[row["key"]]), SIZE), codec, row["quality"])
                assert stored[row["key"]] == again and row["bytes"] == len(again)
                if row["status"] == "on":
                    assert abs(row["bytes"] - row["budget"]) <= MATCH_TOLERANCE * row["budget"]
            assert account["bytes_mean"] == pytest.approx(np.mean([r["bytes"] for r in account["per_image"]]))
            counted = Counter(r["status"] for r in account["per_image"])  # each image's, by status
            assert account["status"] == {s: counted[s] for s in ("on", "near", "over", "under")}
            assert set(counted) <= {"on", "near", "over", "under"}


def test_teacher_and_student_accuracies_are_their_checkpoints(runs):
    root = runs["root"]
    webp = equal_bytes_folder(root, "rgb-webp-at", runs["fp16"])
    result = json.loads((webp / "result.json").read_text())["result"]
    shards = str(webp / "shards" / "*.tar")
    assert result["top1"] == pytest.approx(top1_by_hand(runs["teacher"], shards), abs=1e-6)
    rendered = equal_bytes_folder(root, "rgb-rendered", runs["fp16"])
    top1 = json.loads((rendered / "result.json").read_text())["result"]["top1"]
    assert top1 == pytest.approx(top1_by_hand(runs["teacher"], str(rendered / "shards" / "*.tar")), abs=1e-6)
    table = (root / "results" / "results.md").read_text()
    assert "| rgb on rendered 45 fp16 splats | rgb's best, evaluated | 45 fp16 splats, rendered to pixels |" in table
    assert "| rgb on jpeg | rgb's best, evaluated | jpeg at the bytes of 45 fp16 splats" in table
    assert "| gs on 45 quantized splats | gs's best, evaluated | quantized splats |" in table
    for codec in ("jpeg", "webp"):  # the note: bytes over the budget, and the images that missed it, by status
        res = json.loads((equal_bytes_folder(root, f"rgb-{codec}-at", runs["fp16"]) / "result.json")
                         .read_text())["result"]
        missed = [f"{n} of {res['images']} {status}" for status, n in res["status"].items() if status != "on" and n]
        note = f"{res['bytes_mean'] / res['budget_mean']:.2f}x the budget" + ("; " + ", ".join(missed) if missed else "")
        assert f"| {codec} at the bytes of 45 fp16 splats ({note}) |" in table, (note, table)
    assert (root / "results" / "accuracy_vs_bytes.png").exists()
    report = (root / "results" / "edge_cloud.md").read_text()
    assert "0.1-0.2 kWh/GB" in report and "uint8 pixels 16x16 | 768 |" in report
    # the quantized set's fit took 1.1 s for 11 images (its summary.json): 100 ms an image
    (row,) = [line for line in report.splitlines() if line.startswith("| 45 quantized splats |")]
    assert row.endswith("| 100.00 (fit) |"), row


def test_an_evaluation_prints_neither_lightnings_banner_nor_open_clips_random_init_warning(runs):
    """compare runs one evaluation per budget and codec: Lightning's "GPU available" banner must not repeat for
    each, nor open_clip's "No pretrained weights loaded" (the weights come from the checkpoint). The controls,
    a plain Trainer and a plain create_model, show that the handlers do see both when they are printed."""
    import lightning as L

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    loggers = [logging.getLogger(name) for name in (*BANNER_LOGGERS, "")]
    saved = [(log.level, log.disabled) for log in loggers]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.disabled = False
    try:
        result = evaluate(runs["root"] / "runs" / "rgb", runs["images"])
        assert 0 <= result["top1"] <= result["top5"] <= 1
        assert not [m for m in messages if "GPU available" in m or RANDOM_INIT_WARNING in m]
        assert all(log.level == logging.INFO for log in loggers) and not logging.getLogger().filters  # put back
        L.Trainer(accelerator="cpu", devices=1, logger=False)
        open_clip.create_model("ViT-Tiny-16")
        assert [m for m in messages if "GPU available" in m] and [m for m in messages if RANDOM_INIT_WARNING in m]
    finally:
        for log, (level, disabled) in zip(loggers, saved):
            log.removeHandler(handler)
            log.setLevel(level)
            log.disabled = disabled


def test_the_edge_cloud_reports_energy_computed_by_hand():
    """1M uploads at 0.1-0.2 kWh/GB (mobile) and 0.03 kWh/GB (fixed), 1 GB = 1e9 B, for bytes chosen here:
    6,400 B an image is 6.4 GB, so 0.64-1.28 kWh and 0.192 kWh; 224x224 pixels are 150,528 B, 150.528 GB."""
    from gs_lightning.compare import Point, Run, edge_cloud

    splats = Run("gs", "transfer", 196, 400, 23.52, 0.07, record="fp16", bytes=6400, image_size=224, encode_ms=12.5)
    jpeg = Point("rgb on jpeg", "rgb", "jpeg", 3000, 0.5, 0.9, 1.25, "400 fp16 splats")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in
            edge_cloud([splats], [jpeg]).splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["400 splats, fp16"] == ["6,400", "0.64-1.28", "0.192", "12.50 (fit) |"]
    assert rows["uint8 pixels 224x224"] == ["150,528", "15.1-30.1", "4.52", "- |"]
    assert rows["jpeg at 400 fp16 splats' bytes"] == ["3,000", "0.3-0.6", "0.09", "1.25 (one encode) |"]


def test_each_splat_set_is_reencoded_apart_and_a_smaller_one_leaves_no_shard_of_the_larger(runs, tmp_path):
    """Two splat sets in one folder (all of its shards, the first one) are two sets, each re-encoded and rendered
    from its own images only; and a set whose files change is computed again with nothing left of before."""
    import shutil

    root = runs["root"]
    shutil.copytree(root / "fit-q", tmp_path / "fit-q")
    first, every = str(tmp_path / "fit-q" / "00000.tar"), str(tmp_path / "fit-q" / "*.tar")

    def compare_on(pattern: str) -> None:
        shutil.rmtree(tmp_path / "runs" / "gs", ignore_errors=True)
        fake_finished_run(tmp_path / "runs" / "gs", "transfer", {"splats": {"val": pattern}}, seed=2)
        compare([str(root / "runs" / "rgb"), str(tmp_path / "runs" / "gs")], tmp_path / "results")

    def keys(what: str, pattern: str) -> list[str]:
        shards = equal_bytes_folder(tmp_path, what, pattern) / "shards" / "*.tar"
        return sorted(f"{s.name}/{r.key}" for s in list_sources(str(shards)) for r in s.samples([]))

    compare_on(every)
    compare_on(first)
    for what in ("rgb-jpeg-at", "rgb-webp-at", "rgb-rendered"):
        assert keys(what, first) == sorted(splat_bytes(first)), what
        assert keys(what, every) == sorted(splat_bytes(every)) and len(splat_bytes(every)) == 11, what
    (tmp_path / "fit-q" / "00000.tar").unlink()  # the set of `every` shrinks to its second shard
    compare_on(every)
    for what in ("rgb-jpeg-at", "rgb-webp-at", "rgb-rendered"):
        assert keys(what, every) == sorted(splat_bytes(every)) and len(splat_bytes(every)) == 5, what


def test_a_second_compare_reads_its_results_and_a_new_checkpoint_is_evaluated_anew(runs, monkeypatch):
    """Each evaluation is kept beside the results with what it depends on: a rerun evaluates nothing, and a
    checkpoint written since is evaluated again, on its own sets only. (Last here: it rewrites gs's checkpoint.)"""
    import gs_lightning.evaluate

    root, evaluated = runs["root"], []
    real = gs_lightning.evaluate.evaluate

    def counted(run_dir, pattern):
        evaluated.append(Path(run_dir).name)
        return real(run_dir, pattern)

    monkeypatch.setattr(gs_lightning.evaluate, "evaluate", counted)
    dirs = [str(root / "runs" / "rgb"), str(root / "runs" / "gs")]
    assert compare(dirs, root / "results") == runs["text"] and evaluated == []
    def rewrite(path: Path) -> None:  # the same bytes, written again: a new file to the cache
        path.write_bytes(path.read_bytes())

    rewrite(root / "runs" / "gs" / "checkpoints" / "best.ckpt")
    compare(dirs, root / "results")
    assert evaluated == ["gs"]
    evaluated.clear()
    rewrite(Path(runs["quantized"].replace("{00000..00001}", "00000")))  # the quantized set, fitted again
    compare(dirs, root / "results")
    assert evaluated == ["gs"]  # the teacher's inputs at its bytes are made again, the same: not evaluated again
    evaluated.clear()
    rewrite(root / "runs" / "rgb" / "checkpoints" / "best.ckpt")
    compare(dirs, root / "results")
    assert "gs" not in evaluated and len(evaluated) >= 2  # the teacher on its rendered and re-encoded inputs


def test_a_run_logged_without_top5_or_queries_is_a_row_of_what_it_has():
    from gs_lightning.compare import Run, table

    rgb = Run("rgb", "rgb", None, None, 1.0, None, epochs={"val/top1": {0: 0.2, 1: 0.5, 2: 0.4}})
    gs = Run("gs", "transfer", 49, 16.0, 9.2, 0.5, epochs={"val/top1": {0: 0.3}, "val/top5": {0: 0.7}})
    assert rgb.best()[0] == 0.5 and np.isnan(rgb.best()[1])
    rows = table([rgb, gs]).splitlines()
    assert rows[2] == "| rgb | rgb | images | - | - | 1.0x | - | 50.0% | n/a |"
    assert rows[3] == "| gs | transfer (49 queries) | splats | 16 | - | 9.2x | 50.0% | 30.0% | 70.0% |"


def test_a_torn_cached_result_is_computed_again(tmp_path):
    """A result.json cut short by a kill (or not compare's) is a miss, computed again and written whole."""
    from gs_lightning.compare import cached

    (tmp_path / "result.json").write_text('{"signature": "s", "res')
    assert cached(tmp_path, "s", lambda: {"top1": 0.5}) == {"top1": 0.5}
    assert cached(tmp_path, "s", lambda: pytest.fail("a whole cached result is computed again")) == {"top1": 0.5}
    assert cached(tmp_path, "t", lambda: {"top1": 0.25}) == {"top1": 0.25}  # another signature: computed


def test_an_image_folder_takes_each_images_budget_by_its_key_whatever_its_shards(tmp_path):
    """An image folder's shards are cut by the fit's fit.shard_size, which compare does not know: an image whose
    shard and key find no budget takes its key's. Images matching none are a UserError naming the images."""
    from gs_lightning.data.pixel_codecs import reencode_eval_set
    from gs_lightning.errors import UserError

    for i, label in enumerate(["cat", "dog", "cat"]):
        (tmp_path / "val" / label).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / "val" / label / f"{i}.png")
    keys = [raw.key for source in list_sources(str(tmp_path / "val"), shard_size=1) for raw in source.samples([])]
    budgets = {f"{k:05d}.tar/{key}": 300 + 100 * k for k, key in enumerate(keys)}  # fitted one image a shard
    account = reencode_eval_set(str(tmp_path / "val"), budgets, SIZE, "webp", tmp_path / "out")
    assert sorted((r["key"].split("/")[1], r["budget"]) for r in account["per_image"]) == sorted(
        (key, 300 + 100 * k) for k, key in enumerate(keys))
    with pytest.raises(UserError, match=r"val: none of its labelled images has a splat set to match"):
        reencode_eval_set(str(tmp_path / "val"), {"00000.tar/other": 300}, SIZE, "webp", tmp_path / "out2")


def test_an_image_folders_signature_follows_the_images_inside_it(tmp_path):
    """The teacher's eval set may be an image folder (ImageNet's val/<wnid>/...): an image replaced inside it
    leaves the folder's own size and time as they were, and must still make the cached evaluations stale."""
    from gs_lightning.compare import files_signature

    image = tmp_path / "val" / "n01440764" / "a.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"x" * 10)
    before = files_signature(tmp_path / "val")
    assert files_signature(tmp_path / "val") == before
    image.write_bytes(b"y" * 11)  # resized again
    assert files_signature(tmp_path / "val") != before
