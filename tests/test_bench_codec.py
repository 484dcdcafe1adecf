"""The codec benchmark (gs_lightning/benchmarks/codec.py) on a folder of photos, checked against an independent
Pillow encode: its JPEG and WebP rows are Pillow's bytes at each quality, and their PSNR is that of Pillow's
decode against the image as a fit of that size sees it (resized and centre-cropped when not already square at
the fit's size)."""
import csv
import io

import numpy as np
import pytest
from helpers import image_bytes, smooth_photo
from PIL import Image

from gs_lightning.benchmarks import codec as bench
from gs_lightning.config import load_fit_config
from gs_lightning.data.shards import decode_image, resize_center_crop


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The benchmark on two photos (one to resize and crop, one at the fit's size) with 8 Gaussians, briefly
    fitted: about 10 s, most of it the 100 straight-through steps at 224x224."""
    d = tmp_path_factory.mktemp("bench_codec")
    size = load_fit_config().image_size
    photos = {"wide": smooth_photo(size + 40, size + 90, seed=5), "square": smooth_photo(size, size, seed=6)}
    for name, p in photos.items():
        (d / "photos").mkdir(exist_ok=True)
        (d / "photos" / f"{name}.png").write_bytes(image_bytes(p, "PNG"))
    bench.main(["--input", str(d / "photos"), "--counts", "8", "--iterations", "4", "--csv", str(d / "rd.csv"),
                "--out", str(d)])
    with open(d / "rd.csv") as f:
        rows = list(csv.DictReader(f))
    return d, size, rows


def test_pixel_rows_are_an_independent_pillow_encode(run):
    d, size, rows = run
    assert rows and set(rows[0]) == {"image", "method", "setting", "bytes", "psnr", "ssim"}
    for name in ("wide", "square"):
        original = decode_image((d / "photos" / f"{name}.png").read_bytes())
        seen = original if original.shape[-2:] == (size, size) else resize_center_crop(original, size)
        assert name == "wide" or seen is original  # the square photo is used as given
        ref = seen.permute(1, 2, 0).numpy().astype(np.float64)
        pixels = np.clip(np.rint(ref * 255), 0, 255).astype(np.uint8)
        for codec in ("jpeg", "webp"):
            mine = {int(r["setting"]): r for r in rows if r["image"] == name and r["method"] == codec}
            assert sorted(mine) == list(range(5, 96, 5))
            for q, r in mine.items():
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format=codec.upper(), quality=q)
                assert int(r["bytes"]) == len(buf.getvalue()), (name, codec, q)
                back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64) / 255
                psnr = 10 * np.log10(1 / np.mean((back - ref) ** 2))
                assert float(r["psnr"]) == pytest.approx(psnr, abs=1e-3), (name, codec, q)


def test_splat_rows_count_the_records_bytes(run):
    _, _, rows = run
    fp16 = {r["image"]: r for r in rows if r["method"] == "splats_fp16"}
    q = {r["image"]: r for r in rows if r["method"] == "splats_q"}
    assert set(fp16) == set(q) == {"wide", "square"}
    for name in fp16:
        assert fp16[name]["setting"] == q[name]["setting"] == "8"
        assert int(fp16[name]["bytes"]) % 16 == 0 and 16 <= int(fp16[name]["bytes"]) <= 8 * 16
        assert 0 < int(q[name]["bytes"]) < int(fp16[name]["bytes"]) + 64  # a header, at 8 splats


def test_psnr_at_a_budget_interpolates_in_log_bytes():
    rows = [dict(image=i, method="m", setting=q, bytes=b, psnr=p)
            for i, pts in (("a", ((100, 20.0), (400, 30.0))), ("b", ((50, 10.0), (150, 12.0))))
            for q, (b, p) in enumerate(pts)]
    value, over, under = bench.psnr_at(rows, "m", 200)  # a: half way in log(bytes) from 100 to 400; b: tops out
    assert (over, under) == (0, 1) and value == pytest.approx((25.0 + 12.0) / 2)
    a, b = 20 + 10 * np.log(1.2) / np.log(4), 10 + 2 * np.log(2.4) / np.log(3)  # both inside their ranges
    assert bench.psnr_at(rows, "m", 120) == (pytest.approx((a + b) / 2), 0, 0)
    assert bench.psnr_at(rows, "m", 60) == (None, 1, 0)  # a cannot get down to 60 bytes
