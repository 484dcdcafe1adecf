"""Splat records (gs_lightning/codec.py) and pixel codecs (data/pixel_codecs.py) against independent oracles:
the quantized round trip within its stated bounds (computed here from the data's own ranges), the straight-
through function equal to what is stored, corrupt bytes refused, old float16 shards still read, quality
matching against a brute force over every quality, and JPEG/WebP bytes equal to Pillow's own encode."""
import io
import zlib

import numpy as np
import pytest
import torch
import webdataset as wds
from helpers import image_bytes, random_splats, smooth_photo

from gs_lightning.codec import MAGIC, RECORDS, RecordError, round_trip
from gs_lightning.zeroshot.datamodule import ZeroShotDataModule
from gs_lightning.data.pixel_codecs import MATCH_TOLERANCE, QUALITIES, encode, fit_pixels, match_budget
from gs_lightning.data.shards import FittedShard, decode_image, decode_splats, splat_bytes, update_sizes

Q = RECORDS["quantized"]
BITS = {"pos": 12, "cov": 6, "colour": 7}  # the record's stated widths (codec.py's docstring)


def rows_of(n: int, seed: int = 0, *, spread: float = 1.0) -> np.ndarray:
    """Unit-square rows whose y are spaced far apart (so sorting by y orders them as the record does), with
    scales over two decades, shears of either sign and unclamped colours."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) + 0.5 + 0.3 * rng.uniform(-1, 1, n)) / n * spread
    x = rng.uniform(-0.1, 1.1, n)
    l11, l22 = np.exp(rng.uniform(np.log(0.002), np.log(0.2), (2, n)))
    l21 = rng.normal(0, 1.5, n) * l22
    rgb = rng.normal(0.4, 0.4, (n, 3))
    return np.stack([x, y, l11, l21, l22, *rgb.T], 1).astype(np.float32)


def by_y(a: np.ndarray) -> np.ndarray:
    return a[np.argsort(a[:, 1], kind="stable")]


def half_step(col: np.ndarray, bits: int) -> float:
    """Half a quantization step over the column's range, widened by a float16 ulp at each end."""
    lo, hi = np.float16(col.min()), np.float16(col.max())
    with np.errstate(over="ignore"):  # float16's largest, 65504, has no next one: its spacing overflows
        ulps = np.nan_to_num(np.spacing(np.array([lo, hi])), posinf=np.spacing(np.float16(32768)))
    span = float(col.max() - col.min()) + float(ulps.astype(np.float64).sum())
    return 0.5 * span / (2**bits - 1) * (1 + 1e-5) + 1e-7


def round_trip_errors(rows: np.ndarray, back: np.ndarray) -> dict:  # name -> (|error| per row, stated bound)
    rows, back = by_y(rows), by_y(back)
    errors = {}
    for j, name in ((0, "x"), (1, "y")):
        errors[name] = (np.abs(back[:, j] - rows[:, j]), half_step(rows[:, j], BITS["pos"]))
    for j, name in ((2, "log l11"), (4, "log l22")):
        truth = np.log(rows[:, j])
        errors[name] = (np.abs(np.log(back[:, j]) - truth), half_step(truth, BITS["cov"]))
    shear = rows[:, 3] / rows[:, 4]
    errors["t"] = (np.abs(back[:, 3] / back[:, 4] - shear), half_step(shear, BITS["cov"]))
    for j in (5, 6, 7):
        errors["rgb"[j - 5]] = (np.abs(back[:, j] - rows[:, j]), half_step(rows[:, j], BITS["colour"]))
    return errors


@pytest.mark.parametrize("n", [2, 37, 400, 1000])  # y codes stay distinct up to ~1600 (12 bits)
def test_quantized_round_trip_within_the_stated_bounds(n):
    rows = rows_of(n, seed=n)
    back = Q.decode(Q.encode(rows))
    assert back.dtype == np.float32 and back.shape == rows.shape
    for name, (err, bound) in round_trip_errors(rows, back).items():
        assert err.max() <= bound, (name, err.max(), bound)
        if n >= 400:  # rounding, not a finer grid than stated: errors reach most of the bound
            assert err.max() > 0.8 * bound, (name, err.max(), bound)


def test_values_beyond_float16_are_stored_as_its_nearest_and_every_other_row_within_its_bound():
    """A shear, a colour and a centre past float16's 65504, and a scale below its 2^-24: both records hold float16
    values, so each stores them as the nearest it holds, and the other rows keep their stated bounds."""
    rows = rows_of(40, seed=5)
    rows[3, 3] = 1e5 * rows[3, 4]  # t = l21 / l22 = 1e5 (a needle), while l21 itself fits float16
    rows[5, 6], rows[7, 0], rows[9, 2] = -7e4, 2e5, 1e-9
    quantized, fp16 = rows.copy(), rows.copy()  # what each must store
    quantized[3, 3], quantized[5, 6], quantized[7, 0] = 65504 * rows[3, 4], -65504, 65504  # its log l11 holds 1e-9
    fp16[5, 6], fp16[7, 0], fp16[9, 2] = -65504, 65504, 2.0**-24

    back = Q.decode(Q.encode(rows))
    assert np.isfinite(back).all()
    for name, (err, bound) in round_trip_errors(quantized, back).items():
        assert err.max() <= bound, (name, err.max(), bound)
    stored = round_trip(torch.from_numpy(rows)[None], torch.ones(1, 40, dtype=torch.bool))[0].numpy()
    np.testing.assert_allclose(by_y(stored), by_y(back), rtol=1e-6, atol=1e-7)  # what a fit refines through
    np.testing.assert_array_equal(decode_splats(RECORDS["fp16"].encode(rows), "fp16"), fp16.astype(np.float16))


def test_quantize_is_what_the_record_stores_with_a_straight_through_gradient():
    rows = torch.from_numpy(rows_of(50)).requires_grad_(True)
    mask = torch.ones(1, 50, dtype=torch.bool)
    fake = round_trip(rows[None], mask)[0]
    stored = by_y(Q.decode(Q.encode(rows.detach().numpy())))
    np.testing.assert_allclose(by_y(fake.detach().numpy()), stored, rtol=1e-6, atol=1e-7)
    (fake * torch.arange(8.0)).sum().backward()
    torch.testing.assert_close(rows.grad, torch.arange(8.0).expand(50, 8))
    # padding rows are neither quantized nor counted in the ranges
    padded = torch.cat([rows.detach(), torch.full((3, 8), 9.0)])[None]
    out = round_trip(padded, torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], 1))[0]
    torch.testing.assert_close(out[:50], fake.detach())
    assert (out[50:] == 9.0).all()


def test_record_layout_header_count_and_both_codings():
    assert Q.decode(Q.encode(rows_of(0)[:0])).shape == (0, 8)
    noisy = rows_of(400, seed=1)
    width = 2 * BITS["pos"] + 3 * BITS["cov"] + 3 * BITS["colour"]
    header = len(MAGIC) + 2 + 2 + 3 + 8 * 2 * 2  # magic, version, coding, N=400 as LEB128, bits, bounds
    data = Q.encode(noisy)
    assert data[:3] == MAGIC and data[3] == 1
    assert len(data) <= header + (400 * width + 7) // 8  # never longer than the bit-packed payload
    assert Q.nbytes(data) == len(data)
    flat = noisy.copy()
    flat[:, 2:] = flat[0, 2:]  # every splat alike but for its position: the byte planes deflate well
    data = Q.encode(flat)
    assert data[4] == 1 and len(data) < header + (400 * width + 7) // 8 - 1000
    by, flat = by_y(Q.decode(data)), by_y(flat)
    for j in (0, 1):  # 12-bit codes: two byte planes each
        assert np.abs(by[:, j] - flat[:, j]).max() <= half_step(flat[:, j], BITS["pos"])
    for j in (5, 6, 7):  # a constant column: within its bound (two float16 ulps wide) of the value
        assert np.abs(by[:, j] - flat[0, j]).max() <= half_step(flat[:, j], BITS["colour"])


@pytest.mark.parametrize("mangle, why", [
    (lambda d: b"XYZ" + d[3:], "no GSQ magic"),
    (lambda d: d[:3] + b"\x09" + d[4:], "of version 9; this code reads version"),
    (lambda d: d[:4] + b"\x07" + d[5:], "coding"),
    (lambda d: d[:20], "truncated header"),
    (lambda d: d[:4], "truncated header"),  # cut after its version: the version is right, the rest missing
    (lambda d: d[:3], "truncated header"),
    (lambda d: d[:-5], "payload"),
    (lambda d: d[:5] + b"\xff\xff\xff\xff\x0f" + d[7:], "payload length"),  # a count its payload does not hold
    (lambda d: d[:5] + b"\xff" * 6, "truncated or oversized splat count"),
])
def test_corrupt_records_raise_record_error(mangle, why):
    """Each corruption is named for what it is: a skipped sample's warning says why."""
    data = Q.encode(rows_of(300))
    with pytest.raises(RecordError, match=why):
        Q.decode(mangle(data))


def test_a_float16_record_quantizes_as_its_values_in_float32():
    """Old fp16 shards re-quantized: the record is that of the same values, computed in float32 (float16
    arithmetic would round the logs and the ranges)."""
    rows = rows_of(60).astype(np.float16)
    assert Q.encode(rows) == Q.encode(rows.astype(np.float32))


@pytest.mark.parametrize("widths", [(1, 1, 1), (16, 16, 16)])
def test_every_bit_width_from_one_to_sixteen_is_read(monkeypatch, widths):
    """The format's widths run 1-16 bits (pos, cov, colour); a record at either end decodes to that many levels."""
    import gs_lightning.codec as codec

    stated = codec.column_bits
    monkeypatch.setattr(codec, "column_bits", lambda *given: stated(*(given or widths)))
    rows = rows_of(60, seed=3)
    data = Q.encode(rows)
    assert list(data[6:9]) == list(widths)  # after magic, version, coding and N = 60 (one LEB128 byte)
    back = Q.decode(data)
    assert back.shape == rows.shape
    for j, w in ((0, widths[0]), (1, widths[0]), (2, widths[1]), (4, widths[1]), (5, widths[2])):
        assert len(np.unique(back[:, j])) <= min(2**w, 60)
    if widths[0] == 16:  # finer than the stated widths: within the 16-bit half step
        rows, back = by_y(rows), by_y(back)
        assert np.abs(back[:, 0] - rows[:, 0]).max() <= half_step(rows[:, 0], 16)


@pytest.mark.parametrize("widths", [(0, 6, 7), (12, 17, 7), (12, 6, 255)])
def test_bit_widths_outside_one_to_sixteen_are_refused(widths):
    data = Q.encode(rows_of(60))
    with pytest.raises(RecordError, match="bit widths"):
        Q.decode(data[:6] + bytes(widths) + data[9:])


def test_a_zlib_bomb_is_not_inflated_past_the_header_s_count():
    """A crafted record whose payload inflates to 50 MB is refused without inflating it (peak memory)."""
    import tracemalloc

    data = Q.encode(rows_of(4))  # header: magic, version, coding, N = 4 (one byte), bits, bounds: 41 bytes
    bomb = data[:4] + b"\x01" + data[5:41] + zlib.compress(b"\0" * 50_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(RecordError, match="payload length"):
            Q.decode(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak


def test_refinement_through_the_record_improves_what_is_stored(fit_cfg):
    """Straight-through steps after the fit: the quantized record of the refined splats renders closer to the
    images than the quantized record of the fit itself (never further for any image), and what the STE
    rendered is what is stored.
    Textured crops of the embedded photos, where quantizing costs a fit something to win back."""
    from gs_lightning.benchmarks.fit import photos
    from gs_lightning.fit.fitter import fit_batch, psnr_per_image
    from gs_lightning.fit.refine import quantized_render, refine_quantized
    from gs_lightning.render import rasterize
    from gs_lightning.splats import Splats

    images = photos(2)[:, :, 88:136, 88:136].contiguous()  # [2, 3, 48, 48]
    splats, _ = fit_batch(images, fit_cfg(num_splats=64, iterations=100))
    refined = refine_quantized(images, splats, iterations=100, lr=0.1)
    with torch.no_grad():
        before = psnr_per_image(quantized_render(splats, 48, 48), images)
        after = psnr_per_image(quantized_render(refined, 48, 48), images)
        stored = Splats.from_rows([Q.decode(Q.encode(r)) for r in refined.to_rows(48, 48)], 48, 48)
        torch.testing.assert_close(rasterize(stored, 48, 48), quantized_render(refined, 48, 48), atol=1e-5, rtol=0)
    assert (after >= before - 1e-4).all(), (before, after)  # each image keeps its best step: never worse
    assert (after - before).mean() > 0.05, (before, after)
    wild = refine_quantized(images, splats, iterations=5, lr=50.0)  # steps that throw the splats about
    with torch.no_grad():  # are not kept: each image keeps its best step, here the first (the fit itself)
        torch.testing.assert_close(psnr_per_image(quantized_render(wild, 48, 48), images), before)


def test_refinement_scores_a_render_below_black_as_black():
    """Each step is scored by what is shown, the render clamped to [0, 1]. On a black image, splats whose
    colours are all negative are already exact (their render is below 0 everywhere), so no step beats the
    fit's own record, and it is what the refinement returns. Scored unclamped, the steps that lift the
    colours toward 0 would look better and be kept."""
    from gs_lightning.fit.refine import quantized_render, refine_quantized
    from gs_lightning.splats import Splats

    s = random_splats(1, 12, 16, 16, seed=3, requires_grad=False)
    splats = Splats(s.xy, s.chol, -(s.rgb.abs() + 0.2), s.mask)
    refined = refine_quantized(torch.zeros(1, 3, 16, 16), splats, iterations=5, lr=1.0)
    with torch.no_grad():
        assert quantized_render(splats, 16, 16).max() < 0
        torch.testing.assert_close(quantized_render(refined, 16, 16), quantized_render(splats, 16, 16))


def test_fp16_record_counts_sixteen_bytes_a_splat():
    rows = rows_of(10)
    data = RECORDS["fp16"].encode(rows)
    assert RECORDS["fp16"].nbytes(data) == 160 and len(data) > 160  # .npy's own header is not counted
    np.testing.assert_array_equal(RECORDS["fp16"].decode(data), rows.astype(np.float16))


def test_old_fp16_shards_and_quantized_shards_both_load(tmp_path):
    """A shard as the float16-only writer wrote it (webdataset encodes the array as .npy), and the same sets
    written as quantized records: the zero-shot DataModule reads both, each as its record decodes."""
    sets = [rows_of(n, seed=n) for n in (5, 9, 7)]
    (tmp_path / "old").mkdir()
    with wds.TarWriter(str(tmp_path / "old" / "00000.tar")) as tar:
        for i, r in enumerate(sets):
            tar.write({"__key__": f"k{i}", "splats.npy": r.astype(np.float16), "json": {"psnr": 30.0}, "cls": i})
    update_sizes(tmp_path / "old", {"00000.tar": 3})
    w = FittedShard(tmp_path / "new" / "00000.tar", "quantized")
    for i, r in enumerate(sets):
        w.write(f"k{i}", r, {"psnr": 30.0}, None, i)
    w.commit()
    for folder, expect in (("old", [r.astype(np.float16).astype(np.float32) for r in sets]),
                           ("new", [Q.decode(Q.encode(r)) for r in sets])):
        dm = ZeroShotDataModule(kind="splats", path=str(tmp_path / folder / "00000.tar"), batch_size=3, num_workers=0)
        (batch,) = list(dm.val_dataloader())
        assert batch["label"].tolist() == [0, 1, 2]
        for b, want in enumerate(expect):
            got = torch.cat([batch["splats"].xy, batch["splats"].chol, batch["splats"].rgb], -1)[b][batch["splats"].mask[b]]
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
    counted = splat_bytes(str(tmp_path / "new" / "00000.tar"))
    assert counted == {f"00000.tar/k{i}": len(Q.encode(r)) for i, r in enumerate(sets)}
    assert splat_bytes(str(tmp_path / "old" / "00000.tar")) == {f"00000.tar/k{i}": 16 * len(r) for i, r in enumerate(sets)}


# ---- pixel codecs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pixels() -> list[np.ndarray]:
    """Two 64x64 photo-like images: one resized from 80x96 as a fit of 64 would, one already 64x64."""
    a = decode_image(image_bytes(smooth_photo(80, 96, seed=3), "PNG"))
    b = decode_image(image_bytes(smooth_photo(64, 64, seed=4), "PNG"))
    return [fit_pixels(a, 64), fit_pixels(b, 64)]


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_encodes_are_pillows_own(pixels, codec):
    from PIL import Image

    for p in pixels:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format=codec.upper(), quality=55)
        assert encode(p, codec, 55) == buf.getvalue()
    src = smooth_photo(64, 64, seed=4)  # already the fit's size: used as given, to the last bit
    np.testing.assert_array_equal(pixels[1], src)


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_budget_matching_lands_within_five_percent_where_reachable(pixels, codec):
    """Against a brute force over every quality: when some quality is within 5% of the budget, the match is
    too, and no quality is closer than the match."""
    for p in pixels:
        sizes = {q: len(encode(p, codec, q)) for q in range(QUALITIES[0], QUALITIES[1] + 1)}
        monotone = all(sizes[q] <= sizes[q + 1] for q in range(QUALITIES[0], QUALITIES[1]))
        for budget in np.linspace(min(sizes.values()) * 1.02, max(sizes.values()) * 0.98, 9).astype(int):
            m = match_budget(p, codec, int(budget))
            assert len(m.data) == sizes[m.quality] and m.data == encode(p, codec, m.quality)
            best = min(abs(s - budget) for s in sizes.values())
            reachable = best <= MATCH_TOLERANCE * budget
            if reachable:
                assert abs(len(m.data) - budget) <= MATCH_TOLERANCE * budget and m.status == "on", (budget, m)
            if monotone:  # then bisection finds the closest of all
                assert abs(len(m.data) - budget) == best, (budget, m.quality, best)
        over = match_budget(p, codec, min(sizes.values()) - 1)
        assert over.status == "over" and over.quality == QUALITIES[0]
        under = match_budget(p, codec, 10 * max(sizes.values()))
        assert under.status == "under" and under.quality == QUALITIES[1]

