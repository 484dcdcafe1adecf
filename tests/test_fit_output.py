"""What `fit` writes, checked against independent oracles: records that re-render to the PSNR they report, each
shard fitted once across workers, no torn shard at the moment a final name appears, and the README's inputs
(the embedded photos, an image folder with fit.shard_size, GaussianImage's overlay)."""
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_FIT
from helpers import image_bytes, smooth_photo

from gs_lightning.config import compose_fit, load_fit_config
from gs_lightning.data.shards import Source, decode_image, resize_center_crop, write_image_shard
from gs_lightning.fit.fitter import psnr_per_image
from gs_lightning.render import rasterize
from gs_lightning.splats import Splats

ROOT = Path(__file__).resolve().parents[1]


def members(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} of a tar, keys split at the first dot of a member's base name (webdataset's rule)."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            folder, _, base = m.name.rpartition("/")
            stem, _, ext = base.partition(".")
            out.setdefault(f"{folder}/{stem}" if folder else stem, {})[ext] = tar.extractfile(m).read()
    return out


def shards(root: Path, counts: list[int], size: int = 24) -> str:
    for i, n in enumerate(counts):
        write_image_shard(root / f"{i:05d}.tar", [
            {"key": f"{i}_{k}", "png": image_bytes(smooth_photo(size, size + 8, seed=10 * i + k), "PNG"),
             "txt": f"photo {i}_{k}"} for k in range(n)])
    return str(root / f"{{00000..{len(counts) - 1:05d}}}.tar")


def fit(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "gs_lightning", "fit", *TINY_FIT, *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "GPU available" not in out.stdout + out.stderr  # no Lightning device banner in a fit
    return out


def test_records_are_unit_square_and_render_back_to_the_psnr_they_report(tmp_path):
    """Re-render each stored record at the fit's size from the unit square; its PSNR against the same resized
    source image is the one the record's json states (up to float16 rounding of the record)."""
    pattern = shards(tmp_path / "in", [3])
    fit(f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.iterations=40")
    size = load_fit_config([], TINY_FIT).image_size
    source = members(tmp_path / "in" / "00000.tar")
    for key, m in members(tmp_path / "out" / "00000.tar").items():
        record = np.load(io.BytesIO(m["splats.npy"]))
        assert record.dtype == np.float16 and ((record[:, :2] >= -0.5) & (record[:, :2] <= 1.5)).all()
        splats = Splats.from_rows([record], height=size, width=size)
        image = resize_center_crop(decode_image(source[key]["png"]), size)[None]
        psnr = psnr_per_image(rasterize(splats, size, size), image).item()
        assert psnr == pytest.approx(json.loads(m["json"])["psnr"], abs=0.1), key


def test_the_fit_bar_counts_every_batch_and_shows_its_iterations_and_the_running_mean_psnr(tmp_path):
    """The bar (Lightning's, on stdout) moves on at each batch, shows the batch's iterations as it fits, and
    ends on the mean PSNR of every image fitted, which summary.json states: a mean over all batches, not the
    last batch's."""
    import re

    pattern = shards(tmp_path / "in", [3, 2])
    out = fit(f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.iterations=20", "fit.batch_size=2")
    fitted = out.stdout.count("iteration=0/20,")
    assert fitted == 3 and out.stdout.count("iteration=20/20,") >= 3, out.stdout[-2000:]
    assert max(int(n) for n in re.findall(r"\| (\d+)/\?", out.stdout)) >= fitted, out.stdout[-2000:]
    shown = float(re.findall(r"[ ,]psnr=([\d.]+)", out.stdout)[-1])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert shown == pytest.approx(summary["psnr_mean"], abs=0.006) and summary["images_fitted"] == 5


def test_dataloader_workers_fit_each_shard_once(tmp_path):
    pattern = shards(tmp_path / "in", [3, 2, 4])
    fit(f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.num_workers=2", "fit.batch_size=2")
    for i, n in enumerate([3, 2, 4]):
        keys = sorted(members(tmp_path / "out" / f"{i:05d}.tar"))
        assert keys == sorted(f"{i}_{k}" for k in range(n))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images_fitted"] == 9 and summary["shards_written"] == 3
    assert summary["seconds"] > 0 and summary["images_per_second"] == pytest.approx(9 / summary["seconds"])


def test_a_slot_that_starts_after_another_wrote_a_shard_still_gets_its_own_share(tmp_path, monkeypatch):
    """Slots (rank, worker) deal the shards to do from the list taken when the dataset is made: a slot that
    starts late, after another slot's first shard is written, reads its own share, so every shard is read by
    exactly one slot."""
    import gs_lightning.data.image_batches as ib
    from gs_lightning.data.shards import list_sources

    pattern = shards(tmp_path / "in", [1, 1, 1, 1, 1])
    out = tmp_path / "out"
    out.mkdir()
    dataset = ib.ImageBatches(list_sources(pattern), out, image_size=8, batch_size=2)
    read = {}
    for slot in (0, 1):  # slot 1 starts after slot 0 has written all of its shards
        monkeypatch.setattr(ib, "worker_slot", lambda: (slot, 2))
        read[slot] = [b.shard for b in dataset]
        for name in read[slot]:
            (out / name).write_bytes(b"")
    assert read == {0: ["00000.tar", "00002.tar", "00004.tar"], 1: ["00001.tar", "00003.tar"]}
    assert ib.ImageBatches(list_sources(pattern), out, image_size=8, batch_size=2).todo == []


def test_an_output_folder_holding_the_input_shards_is_refused_and_a_shard_no_fit_wrote_is_named(tmp_path):
    """fit.output = the input shards' folder: every input would be taken as its own output, and none fitted.
    A tar that no fit wrote, found in fit.output, is named by the summary, not a KeyError."""
    from gs_lightning.data.image_batches import ImageBatches
    from gs_lightning.data.shards import list_sources
    from gs_lightning.errors import UserError
    from gs_lightning.fit.summary import summarise

    pattern = shards(tmp_path / "in", [2, 1])
    dataset = ImageBatches(list_sources(pattern), tmp_path / "in", image_size=8, batch_size=2)
    with pytest.raises(UserError, match=r"^fit\.output: is the folder of fit\.input's shard 00000\.tar: "):
        dataset.check_done("fit.input", "fit.output")
    ImageBatches(list_sources(pattern), tmp_path / "out", image_size=8, batch_size=2).check_done("fit.input",
                                                                                              "fit.output")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "00007.tar").write_bytes((tmp_path / "in" / "00001.tar").read_bytes())
    with pytest.raises(UserError, match=r"^fit\.output: holds 00007\.tar, whose sample 1_0 has no psnr, n_init, "
                                        r"n_final, iterations, bytes in its json: a shard no fit wrote"):
        summarise(load_fit_config([], [f"fit.output={tmp_path / 'out'}"]))


def test_two_ddp_ranks_share_the_shards_and_the_summary_counts_both(tmp_path):
    """trainer.devices=2 on CPU (gloo): the shards are split across the ranks, every image is fitted once, and
    summary.json and sizes.json count every shard, whichever rank fitted it."""
    counts = [3, 2, 4, 1]
    pattern = shards(tmp_path / "in", counts)
    fit(f"fit.input={pattern}", f"fit.output={tmp_path}/out", "trainer.devices=2", "trainer.strategy=ddp",
        "fit.batch_size=2", "fit.num_workers=0")
    keys = [k for i in range(len(counts)) for k in members(tmp_path / "out" / f"{i:05d}.tar")]
    assert sorted(keys) == sorted(f"{i}_{k}" for i, n in enumerate(counts) for k in range(n))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images_fitted"] == 10 and summary["shards_per_rank"] == {"0": 2, "1": 2}
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sizes == {f"{i:05d}.tar": n for i, n in enumerate(counts)}


@pytest.mark.parametrize("strategy", ["ddp", "auto"])
def test_fit_and_embed_ranks_wait_for_each_other_past_ddps_half_hour(strategy):
    """Ranks dealt shards of an hour's fitting each end that far apart, and meet at the closing barrier: the
    process group fit and embed start (whichever DDP Lightning chose) waits days for a rank, not 30 minutes."""
    from datetime import timedelta

    from gs_lightning.build import RANKS_MAY_WAIT_S, trainer

    waits = trainer(ranks_may_wait=True, accelerator="cpu", devices=2, strategy=strategy, logger=False)
    assert waits.strategy._timeout == timedelta(seconds=RANKS_MAY_WAIT_S) >= timedelta(days=1)
    training = trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False)  # training's steps: DDP's own
    assert training.strategy._timeout == timedelta(minutes=30)


@pytest.mark.parametrize("init, keys", [("structured", []), ("random", ["fit.seed=7"]),
                                        ("adaptive", ["fit.adaptive_floor=0.7", "fit.adaptive_scale=0.6"]),
                                        ("oriented", ["fit.adaptive_floor=0.7", "fit.adaptive_scale=0.6",
                                                      "fit.oriented_max_aspect=1.5"])])
def test_fit_init_and_its_keys_reach_the_fit(tmp_path, init, keys):
    """With steps too small to move anything, what a fit stores is where it started: the init that fit.init
    names, with its own keys at values other than their defaults (the oracle: the init functions, called on the
    resized images)."""
    from gs_lightning.fit.init import adaptive_init, oriented_init, random_init, structured_init

    pattern = shards(tmp_path / "in", [2])
    still = [f"fit.lr.{k}=1e-12" for k in ("xy", "diagonal", "shear", "rgb")]
    fit(f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.iterations=1", "fit.solve_colours=false",
        "fit.prune.l1_weight=0", "fit.prune.threshold=0", f"fit.init={init}", *still, *keys)
    size, n = load_fit_config([], TINY_FIT).image_size, load_fit_config([], TINY_FIT).num_splats
    source, fitted = members(tmp_path / "in" / "00000.tar"), members(tmp_path / "out" / "00000.tar")
    names = sorted(source)
    images = torch.stack([resize_center_crop(decode_image(source[k]["png"]), size) for k in names])
    start = {"structured": lambda: structured_init(images, n),
             "random": lambda: random_init(images, n, generator=torch.Generator().manual_seed(7)),
             "adaptive": lambda: adaptive_init(images, n, floor=0.7, scale=0.6),
             "oriented": lambda: oriented_init(images, n, floor=0.7, scale=0.6, max_aspect=1.5)}[init]()
    for b, key in enumerate(names):
        got = np.load(io.BytesIO(fitted[key]["splats.npy"])).astype(np.float32)
        np.testing.assert_allclose(got, start.to_rows(size, size)[b], rtol=2e-3, atol=1e-3, err_msg=key)


def test_a_rerun_takes_a_key_an_older_fit_yaml_lacks_at_its_default(tmp_path):
    """fit.yaml holds the settings a folder's splat sets were made with. A key added to FitConfig since an
    older fit.yaml was written is what that fit used, its default: a rerun at the default resumes, another
    value is refused, naming the key, the default and the new value."""
    from dataclasses import replace

    from gs_lightning.errors import UserError
    from gs_lightning.fit.config import FitConfig
    from gs_lightning.fit.summary import keep_fit_settings

    cfg = FitConfig(output=str(tmp_path), num_splats=50)
    keep_fit_settings(replace(cfg, num_splats=400))  # a fit stopped before its first shard: no shard binds it
    keep_fit_settings(cfg)
    path = tmp_path / "fit.yaml"
    assert "num_splats: 50" in path.read_text().splitlines()
    (tmp_path / "00000.tar").write_bytes(b"")  # a fitted shard: the settings are now the folder's
    older = [line for line in path.read_text().splitlines() if not line.startswith("refine_lr:")]
    assert len(older) == len(path.read_text().splitlines()) - 1
    path.write_text("\n".join(older) + "\n")
    keep_fit_settings(replace(cfg, batch_size=3))  # resumes: the same settings, a free key changed
    with pytest.raises(UserError, match=r"fit\.refine_lr was 0\.1, now 0\.3\)"):
        keep_fit_settings(replace(cfg, refine_lr=0.3))
    with pytest.raises(UserError, match=r"fit\.num_splats was 50, now 400\)"):
        keep_fit_settings(replace(cfg, num_splats=400))


def test_a_summary_reads_a_shard_without_its_account_from_the_shard(tmp_path):
    """A run stopped between a shard's rename and its account's: the summary counts the shard from the figures
    its samples carry, in a folder whose name is no pattern."""
    from gs_lightning.fit.summary import summarise

    pattern, out = shards(tmp_path / "in", [3, 2]), tmp_path / "out [v2], {a}"
    fit(f"fit.input={pattern}", f"fit.output={out}")
    whole = json.loads((out / "summary.json").read_text())
    (out / "_stats" / "00001.tar.json").unlink()
    (out / "sizes.json").unlink()
    again = summarise(load_fit_config([], [*TINY_FIT, f"fit.output={out}"]))
    for k in ("images_fitted", "shards_written", "bytes_splats", "splats_mean", "iterations_mean", "images_at_cap"):
        assert again[k] == whole[k], k
    assert again["psnr_mean"] == pytest.approx(whole["psnr_mean"], abs=1e-3)  # the json's PSNR has 3 decimals
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 3, "00001.tar": 2}


def test_a_tally_counts_images_added_in_batches_as_if_added_at_once():
    """A shard's account grows a batch at a time (FitWriter), and accounts merge across shards (summarise):
    either way the figures are those of every image counted once, by hand here."""
    from gs_lightning.fit.summary import Tally

    psnr, n_init, n_final, iterations = [30.0, 20.0, 25.0], [16, 16, 9], [12, 16, 9], [300, 120, 300]
    whole, batches = Tally(), Tally()
    whole.add_images(psnr, n_init, n_final, iterations, cap=300)
    batches.add_images(psnr[:2], n_init[:2], n_final[:2], iterations[:2], cap=300)
    batches.add_images(psnr[2:], n_init[2:], n_final[2:], iterations[2:], cap=300)
    one, two = Tally(), Tally()
    one.add_images(psnr[:1], n_init[:1], n_final[:1], iterations[:1], cap=300)
    two.add_images(psnr[1:], n_init[1:], n_final[1:], iterations[1:], cap=300)
    for t in (whole, batches, one.merge(two)):
        assert (t.images, t.psnr_sum, t.psnr_min, t.n_init, t.n_final) == (3, 75.0, 20.0, 41, 37)
        assert (t.iterations, t.iterations_max, t.at_cap) == (720, 300, 2)


def test_a_summary_of_a_folder_with_nothing_fitted_says_n_a(tmp_path):
    from gs_lightning.fit.summary import format_summary, summarise

    (tmp_path / "out").mkdir()
    s = summarise(load_fit_config([], [*TINY_FIT, f"fit.output={tmp_path}/out"]))
    assert s["images_fitted"] == 0 and s["psnr_mean"] is None and s["images_per_second"] is None
    text = format_summary(s)
    assert "PSNR mean / min   n/a / n/a dB" in text and "throughput        n/a images/s" in text


def test_a_kill_as_a_shard_gets_its_final_name_never_leaves_it_torn(tmp_path):
    """SIGKILL right after the rename onto 00000.tar (tests/stop_at.py): what is under the name is whole, and its
    account is already written, naming its input (what a rerun checks it against) and its images."""
    pattern = shards(tmp_path / "in", [4, 4])
    args = [sys.executable, "tests/stop_at.py", "after-rename", "00000.tar", "--", "fit", f"fit.input={pattern}",
            f"fit.output={tmp_path}/out", *TINY_FIT]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == -9, f"the fault hook did not fire: {out.returncode} {out.stderr[-2000:]}"
    fitted = members(tmp_path / "out" / "00000.tar")
    assert sorted(fitted) == [f"0_{k}" for k in range(4)]
    for key, m in fitted.items():  # every sample whole: its record, its fit json and its caption
        assert sorted(m) == ["json", "splats.npy", "txt"], (key, sorted(m))
        assert np.load(io.BytesIO(m["splats.npy"])).shape == (16, 8) and json.loads(m["json"])["n_final"] == 16
    account = json.loads((tmp_path / "out" / "_stats" / "00000.tar.json").read_text())
    assert account["shards"] == {"00000.tar": 4} and account["images"] == 4
    assert account["inputs"] == {"00000.tar": Source("00000.tar", url=str(tmp_path / "in" / "00000.tar")).origin()}


def test_fit_on_the_embedded_photos(tmp_path):
    """`make fit` with no arguments fits the photos that ship with scikit-image, written as an input shard."""
    from gs_lightning.data.demo import PHOTOS

    fit(f"data_root={tmp_path}/data", f"fit.output={tmp_path}/out")
    fitted = members(tmp_path / "out" / "00000.tar")
    assert sorted(fitted) == [f"{i:08d}" for i in range(len(PHOTOS))]
    assert [fitted[f"{i:08d}"]["txt"].decode() for i in range(len(PHOTOS))] == [c for _, c in PHOTOS]


def test_fit_an_image_folder_in_shards_of_shard_size(tmp_path):
    """ImageNet val's layout: class folders, labelled by sorted folder name, fitted shard_size images a shard."""
    files = {"n01/a.JPEG": 0, "n01/b.JPEG": 0, "n02/c.png": 1, "n03/d.jpg": 2, "n03/e.jpg": 2}
    for i, rel in enumerate(files):
        (tmp_path / "val" / rel).parent.mkdir(parents=True, exist_ok=True)
        fmt = "PNG" if rel.endswith("png") else "JPEG"
        (tmp_path / "val" / rel).write_bytes(image_bytes(smooth_photo(20, 30, seed=i), fmt))
    fit(f"fit.input={tmp_path}/val", f"fit.output={tmp_path}/out", "fit.shard_size=2")
    written = sorted(p.name for p in (tmp_path / "out").glob("*.tar"))
    assert written == ["00000.tar", "00001.tar", "00002.tar"]
    labels = {k: int(m["cls"]) for name in written for k, m in members(tmp_path / "out" / name).items()}
    assert labels == {rel.rsplit(".", 1)[0].replace("/", "__"): c for rel, c in files.items()}


def test_gaussianimage_overlay_writes_to_its_own_default_output():
    ours = compose_fit().fit.output
    theirs = compose_fit(["gaussianimage"], ["fit.init=random"]).fit
    assert theirs.output == "outputs/fit/photos-400-gaussianimage-random" != ours
    assert theirs.parameterization == "gaussianimage" and theirs.lr.decay_to == 1.0
    assert {theirs.lr.xy, theirs.lr.diagonal, theirs.lr.shear, theirs.lr.rgb} == {0.001}


def test_the_quantized_record_is_what_fit_writes_and_reports(tmp_path):
    """fit.record=quantized: every sample is a .splats.gsq member, its json states the record and its bytes, and
    the record decodes to splats that re-render to the PSNR it states (the refinement's own, of what is stored);
    summary.json's bytes and compression are the records' bytes."""
    from gs_lightning.codec import RECORDS

    pattern = shards(tmp_path / "in", [3])
    fit(f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.iterations=40", "fit.record=quantized",
        "fit.refine_iterations=5")
    size = load_fit_config([], TINY_FIT).image_size
    source = members(tmp_path / "in" / "00000.tar")
    total = 0
    for key, m in members(tmp_path / "out" / "00000.tar").items():
        assert sorted(m) == ["json", "splats.gsq", "txt"], sorted(m)
        meta = json.loads(m["json"])
        assert meta["record"] == "quantized" and meta["bytes"] == len(m["splats.gsq"])
        splats = Splats.from_rows([RECORDS["quantized"].decode(m["splats.gsq"])], height=size, width=size)
        image = resize_center_crop(decode_image(source[key]["png"]), size)[None]
        assert psnr_per_image(rasterize(splats, size, size), image).item() == pytest.approx(meta["psnr"], abs=0.01)
        total += meta["bytes"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["record"] == "quantized" and summary["bytes_splats"] == total
    assert summary["compression_ratio"] == pytest.approx(3 * size * size / (total / 3), rel=1e-6)
