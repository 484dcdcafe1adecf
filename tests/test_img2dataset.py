"""The pipeline on a real img2dataset download: a local web server serves photos (the embedded ones and generated
ones, with captions) and broken URLs (404s, truncated files, pages that are not images); the real img2dataset
(its own venv: make img2dataset) downloads them into webdataset shards; `fit` on 2 DDP ranks, `train` on 2 ranks
and `eval` run on what it wrote. The oracles: img2dataset's own report (its parquet and _stats.json) and which
URLs this test broke.

    make e2e    # this test, printing each stage's counts
"""
import csv
import functools
import http.server
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import yaml
from conftest import TINY_MODEL
from helpers import image_bytes, smooth_photo

from gs_lightning.data.demo import PHOTOS, photo_array
from gs_lightning.zeroshot.tasks import write_task

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
IMG2DATASET = Path(os.environ.get("IMG2DATASET", ROOT / ".venv-img2dataset" / "bin" / "img2dataset"))
GOOD, MISSING, TRUNCATED, NOT_IMAGES = 192, 10, 10, 8  # generated images; and the broken URLs of each kind
PER_SHARD = 64


def tars(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


def samples_of(tar: Path) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} (webdataset's rule: the key is the name up to the first dot)."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar) as t:
        for m in t.getmembers():
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = t.extractfile(m).read()
    return out


def served_folder(root: Path) -> list[dict]:
    """Files under root/www and the URL list's rows (path, caption, what this test made of it)."""
    www = root / "www"
    www.mkdir(parents=True)
    rows = []
    for i, (name, caption) in enumerate(PHOTOS):
        (www / f"photo{i}.jpg").write_bytes(image_bytes(photo_array(name), "JPEG"))
        rows.append({"path": f"photo{i}.jpg", "caption": caption, "kind": "good"})
    for i in range(GOOD):
        fmt = ("JPEG", "PNG", "WEBP")[i % 3]
        (www / f"gen{i}.{fmt.lower()}").write_bytes(image_bytes(smooth_photo(48 + i % 40, 64, seed=i), fmt))
        rows.append({"path": f"gen{i}.{fmt.lower()}", "caption": f"generated picture number {i}", "kind": "good"})
    for i in range(MISSING):
        rows.append({"path": f"gone{i}.jpg", "caption": f"a 404 {i}", "kind": "broken"})
    for i in range(TRUNCATED):
        whole = image_bytes(smooth_photo(64, 64, seed=1000 + i), ("JPEG", "PNG")[i % 2])
        (www / f"cut{i}.img").write_bytes(whole[: len(whole) // 8])
        rows.append({"path": f"cut{i}.img", "caption": f"cut short {i}", "kind": "broken"})
    for i in range(NOT_IMAGES):
        (www / f"page{i}.jpg").write_text(f"<html><body>not an image {i}</body></html>")
        rows.append({"path": f"page{i}.jpg", "caption": f"a web page {i}", "kind": "broken"})
    return rows


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    rows = served_folder(root)
    handler = functools.partial(Quiet, directory=str(root / "www"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    for r in rows:
        r["url"] = f"{base}/{r['path']}"
    yield root, rows
    httpd.shutdown()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, f"{' '.join(args[:4])} ...: {out.stderr[-4000:]}"
    return out


def img2dataset_report(folder: Path) -> list[dict]:
    """Every URL's row of img2dataset's parquet files (key, url, caption, status), read by its own pandas."""
    code = ("import glob, json, sys, pandas as pd; "
            "df = pd.concat([pd.read_parquet(p) for p in sorted(glob.glob(sys.argv[1] + '/*.parquet'))]); "
            "print(df[['key', 'url', 'caption', 'status']].to_json(orient='records'))")
    return json.loads(run([str(IMG2DATASET.parent / "python"), "-c", code, str(folder)]).stdout)


def test_an_img2dataset_download_is_fitted_trained_and_evaluated_on_2_ranks(server):
    root, rows = server
    if not IMG2DATASET.exists():
        pytest.fail(f"{IMG2DATASET} is missing: `make img2dataset` installs it (its own venv: it pins webdataset<0.3)")
    with open(root / "urls.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["url", "caption"])
        w.writeheader()
        w.writerows({"url": r["url"], "caption": r["caption"]} for r in rows)

    # 1. img2dataset, with the options of the README's recipe
    shards = root / "shards"
    run([str(IMG2DATASET), "--url_list", str(root / "urls.csv"), "--input_format", "csv", "--url_col", "url",
         "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", str(shards),
         "--processes_count", "2", "--thread_count", "8", "--image_size", "64", "--resize_mode", "keep_ratio",
         "--number_sample_per_shard", str(PER_SHARD), "--retries", "0", "--timeout", "5", "--enable_wandb", "False",
         "--distributor", "multiprocessing"])
    report = img2dataset_report(shards)
    stats = [json.loads(p.read_text()) for p in sorted(shards.glob("*_stats.json"))]
    downloaded = {k: s for t in tars(shards) for k, s in samples_of(t).items()}
    ok = {r["key"]: r for r in report if r["status"] == "success"}
    kinds = {r["url"]: r["kind"] for r in rows}
    assert len(report) == len(rows) and {r["url"] for r in report} == set(kinds)
    assert {r["url"] for r in ok.values()} == {u for u, k in kinds.items() if k == "good"}  # every broken URL failed
    assert set(downloaded) == set(ok) and sum(s["successes"] for s in stats) == len(ok)
    print(f"\nimg2dataset: {len(rows)} URLs in {len(stats)} shards: {len(ok)} written, {len(rows) - len(ok)} failed "
          f"({MISSING} missing, {TRUNCATED} truncated, {NOT_IMAGES} not images)")

    # 2. fit on 2 DDP ranks (gloo)
    pattern = f"{shards}/{{00000..{len(stats) - 1:05d}}}.tar"
    fitted = root / "fitted"
    run([sys.executable, "-m", "gs_lightning", "fit", f"fit.input={pattern}", f"fit.output={fitted}",
         "fit.num_splats=16", "fit.iterations=20", "fit.image_size=32", "fit.batch_size=16", "fit.num_workers=0",
         "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"])
    fitted_samples = [(k, s) for t in tars(fitted) for k, s in samples_of(t).items()]
    keys = [k for k, _ in fitted_samples]
    assert sorted(keys) == sorted(ok)  # every image img2dataset wrote, fitted exactly once; no failed URL
    for key, s in fitted_samples:  # the caption stays with its image
        assert s["txt"].decode() == ok[key]["caption"] == downloaded[key]["txt"].decode(), key
        assert "splats.npy" in s
    summary = json.loads((fitted / "summary.json").read_text())
    assert summary["images_fitted"] == sum(s["successes"] for s in stats) and summary["images_skipped"] == 0
    assert set(summary["shards_per_rank"]) == {"0", "1"}
    print(f"fit: {summary['images_fitted']} images in {summary['shards_written']} shards on 2 ranks "
          f"({summary['shards_per_rank']}), PSNR {summary['psnr_mean']:.2f} dB")

    # 3. train a splat encoder on 2 ranks
    splats = f"{fitted}/{{00000..{len(stats) - 1:05d}}}.tar"
    run([sys.executable, "-m", "gs_lightning", "train", "gs196_scratch", "demo", f"output_dir={root / 'runs'}",
         f"data.splats.train={splats}", f"data.splats.val={splats}", "data.batch_size=8", "trainer.max_epochs=1",
         "trainer.limit_val_batches=2", "trainer.devices=2", "trainer.strategy=ddp", *TINY_MODEL,
         "data.num_workers=0", "logger.wandb=false", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    run_dir = root / "runs" / "gs196_scratch"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    logged = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("train/samples")]
    samples, lost = float(logged[-1]["train/samples"]), float(logged[-1]["train/lost"])
    assert lost == 0 and samples >= len(ok) - 2 * 8  # an epoch of the splats, in whole batches per rank
    print(f"train: 1 epoch on 2 ranks, {samples:.0f} samples, {lost:.0f} lost")

    # 4. eval on a task in clip_benchmark's layout, its images fitted with the run's own fit settings
    classes = ["photograph", "generated picture"]
    task = [{"key": f"t{i:03d}", "jpg": downloaded[k]["jpg"], "cls": int(ok[k]["caption"].startswith("generated"))}
            for i, k in enumerate(sorted(ok)[:40])]
    write_task(root / "tasks" / "kinds", task, classes, ["a {c}."])
    (root / "suite.yaml").write_text(yaml.safe_dump({"tasks": [{"name": "kinds"}]}))
    out = run([sys.executable, "-m", "gs_lightning", "eval", str(run_dir), f"suite={root / 'suite.yaml'}",
               f"suite.root={root / 'tasks'}", f"out={root / 'eval'}", f"fitted={root / 'eval_fitted'}"])
    table = list(csv.DictReader(open(root / "eval" / "suite.csv")))
    assert [(r["model"], r["task"]) for r in table] == [("gs196_scratch", "kinds")]
    assert 0 <= float(table[0]["value"]) <= 1
    task_fit = json.loads(next((root / "eval_fitted" / "kinds").glob("*/summary.json")).read_text())
    assert task_fit["images_fitted"] == len(task)
    print(f"eval: task 'kinds', {task_fit['images_fitted']} images fitted, {table[0]['metric']} "
          f"{float(table[0]['value']):.3f}\n{out.stdout.strip().splitlines()[-1]}")
