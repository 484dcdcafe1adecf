"""Image decoding and shard plumbing against values computed by hand."""
import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_bytes

from gs_lightning.codec import RECORDS
from gs_lightning.data.shards import (
    BadSample, DataPathError, FittedShard, UnreadableShard, decode_image, decode_pil, existing_sources, expand_urls,
    list_sources, read_sizes, resize_center_crop, shard_sizes, write_image_shard,
)
from gs_lightning.splats import Splats, compression_ratio


def test_a_float_tiff_with_no_data_pixels_is_a_bad_sample_naming_them():
    """GIS and scientific float TIFFs mark no-data as NaN: skipped and named, not a fit stopped on them."""
    from PIL import Image

    a = np.full((4, 5), 0.5, np.float32)
    a[1, 2] = a[3, 0] = np.nan
    buf = io.BytesIO()
    Image.fromarray(a, mode="F").save(buf, format="TIFF")
    with pytest.raises(BadSample, match=r"^2 of its pixels are not numbers \(NaN or inf\)$"):
        decode_image(buf.getvalue())
    a[1, 2] = a[3, 0] = 0.25
    buf = io.BytesIO()
    Image.fromarray(a, mode="F").save(buf, format="TIFF")
    assert torch.equal(decode_image(buf.getvalue())[:, 1, 2], torch.full((3,), 0.25))


def test_16_bit_grey_png_keeps_its_range():
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = decode_image(image_bytes(a, "PNG", mode="I;16"))
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 32768 / 65535, 1.0]).expand(3, 3))


@pytest.mark.parametrize("maxval", [65535, 4095])
def test_a_dark_16_bit_pgm_keeps_the_range_its_header_states(maxval):
    """A deep scan that is mostly shadow: its values all sit below 256 of its maxval, and stay that dark."""
    values = np.array([0, 200, maxval], dtype=">u2")
    out = decode_image(f"P5\n3 1\n{maxval}\n".encode() + values.tobytes())
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 200 / maxval, 1.0]).expand(3, 3), atol=2e-5, rtol=0)
    dark = np.array([0, 100, 200], dtype=">u2")  # no pixel as bright as 256
    out = decode_image(b"P5\n3 1\n65535\n" + dark.tobytes())
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 100 / 65535, 200 / 65535]).expand(3, 3))


def test_rgba_is_composited_over_white():
    a = np.array([[[255, 0, 0, 0], [255, 0, 0, 255]]], dtype=np.uint8)  # transparent red, opaque red
    out = decode_image(image_bytes(a, "PNG"))
    torch.testing.assert_close(out[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(out[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_cmyk_and_grey_become_rgb():
    cmyk = np.zeros((8, 8, 4), np.uint8)  # no ink: white
    assert torch.allclose(decode_image(image_bytes(cmyk, "JPEG", mode="CMYK")), torch.ones(3, 8, 8), atol=0.02)
    grey = np.full((4, 6), 51, np.uint8)
    out = decode_image(image_bytes(grey, "PNG"))
    assert out.shape == (3, 4, 6) and torch.allclose(out, torch.full_like(out, 0.2))


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_undecodable_bytes_raise_badsample(data):
    with pytest.raises(BadSample, match="cannot decode image") as e:
        decode_image(data)
    assert "BytesIO" not in str(e.value)  # the buffer's address tells a user nothing


def test_a_photo_is_turned_upright_as_its_exif_orientation_says():
    """A phone stores a portrait photo sideways with orientation 6 (turn 90 degrees clockwise to show): the stored
    left side is the shown top."""
    import io

    from PIL import Image

    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :16, 0] = 255  # stored: red left half, blue right half
    a[:, 16:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95, exif=exif)
    out = decode_image(buf.getvalue())
    assert out.shape == (3, 32, 16)
    red, blue = torch.tensor([1.0, 0, 0])[:, None, None], torch.tensor([0, 0, 1.0])[:, None, None]
    assert (out[:, 2:14] - red).abs().max() < 0.1 and (out[:, 18:30] - blue).abs().max() < 0.1


def test_a_strip_is_cut_to_its_central_span_before_it_is_resized(monkeypatch):
    """A 2 x 40000 strip would resize to 224 x 4.5M pixels (12 GB) before the crop. Only its central span of
    MAX_ASPECT shorter sides is resized, and the crop, the centre, is the same as the whole strip's."""
    import gs_lightning.data.shards as shards

    resized, interpolate = [], shards.F.interpolate
    monkeypatch.setattr(shards.F, "interpolate", lambda x, **kw: resized.append(x.shape[-2:]) or interpolate(x, **kw))
    x = torch.linspace(0, 1, 40000)
    strip = torch.stack([x.expand(2, -1), 1 - x.expand(2, -1), torch.full((2, 40000), 0.5)])  # [3, 2, 40000]
    out = resize_center_crop(strip, 8)
    assert resized == [(2, 16)]  # MAX_ASPECT (8) x 2 columns
    # The centre 2 x 2 pixels of a ramp, each widened to 4 x 4: the ramp's value at the centre, everywhere
    torch.testing.assert_close(out, torch.tensor([0.5, 0.5, 0.5])[:, None, None].expand(3, 8, 8), atol=1e-4, rtol=0)
    resized.clear()
    photo = torch.rand(3, 30, 200)  # aspect 6.7: resized whole, as before
    resize_center_crop(photo, 8)
    assert resized == [(30, 200)]
    # open_clip's transforms take decode_pil's image: a strip's central span, which holds what they show
    a = np.repeat(np.arange(200, dtype=np.uint8)[None, :, None], 3, -1).repeat(2, 0)  # [2, 200, 3] ramp
    assert np.array_equal(np.asarray(decode_pil(image_bytes(a, "PNG"))), a[:, 92:108])


def test_resize_center_crop_keeps_the_centre():
    img = torch.zeros(3, 20, 40)
    img[:, :, 10:30] = 1.0  # the central square is white, the sides black
    out = resize_center_crop(img, 10)
    assert out.shape == (3, 10, 10)
    assert (out[..., 1:-1] == 1).all() and out.min() > 0.9  # only the antialias kernel sees the black sides


def test_expand_urls_and_missing_folder(tmp_path):
    assert expand_urls("d/{00000..00002}.tar") == ["d/00000.tar", "d/00001.tar", "d/00002.tar"]
    (tmp_path / "a" / "n01").mkdir(parents=True)
    (tmp_path / "a" / "n02").mkdir()
    for c in ("n01", "n02"):
        (tmp_path / "a" / c / "x.JPEG").write_bytes(image_bytes(np.zeros((4, 4, 3), np.uint8), "JPEG"))
    sources = list_sources(str(tmp_path / "a"), shard_size=1)
    assert [s.name for s in sources] == ["00000.tar", "00001.tar"]
    assert [f[2] for s in sources for f in s.files] == [0, 1]  # class = sorted folder index


def test_image_files_and_compressed_tars_in_a_pattern_read_as_shards(tmp_path):
    """photos/*.{jpg,png} reads the image files as an unlabelled folder, and a .tar.gz or .tgz shard as webdataset
    reads it, named as the plain tar its outputs are; two inputs of one such name are refused."""
    import io
    import tarfile

    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    (tmp_path / "one.jpg").write_bytes(image_bytes(a, "JPEG"))
    (tmp_path / "two.v2.png").write_bytes(image_bytes(a, "PNG"))
    for name, mode in (("in.tar.gz", "w:gz"), ("old.tgz", "w:gz")):
        with tarfile.open(tmp_path / name, mode) as tar:
            for member, data in (("k1.png", image_bytes(a, "PNG")), ("k1.txt", name.encode())):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert expand_urls("d/{0..1}.tar, e/{x,y}.png") == ["d/0.tar", "d/1.tar", "e/x.png", "e/y.png"]
    sources = list_sources(f"{tmp_path}/*.{{jpg,png}},{tmp_path}/in.tar.gz,{tmp_path}/old.tgz")
    assert [s.name for s in sources] == ["in.tar", "old.tar", "00000.tar"]
    assert sources[2].files == [("one", str(tmp_path / "one.jpg"), None),
                                ("two_v2", str(tmp_path / "two.v2.png"), None)]
    for source, caption in zip(sources[:2], ("in.tar.gz", "old.tgz")):
        errors = []
        (sample,) = list(source.samples(errors))
        assert not errors and sample.key == "k1" and sample.caption == caption
        torch.testing.assert_close(decode_image(sample.image), torch.from_numpy(a).permute(2, 0, 1) / 255)
    assert [r.key for r in list_sources(str(tmp_path / "one.jpg"))[0].samples([])] == ["one"]
    (tmp_path / "sizes.json").write_text('{"in.tar.gz": 3, "old.tgz": 4}')  # beside the inputs, by file name
    urls = [str(tmp_path / "in.tar.gz"), str(tmp_path / "old.tgz")]
    assert shard_sizes(urls) == {"in.tar": 3, "old.tar": 4} and read_sizes(urls) == 7
    (tmp_path / "in.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="distinct names"):
        list_sources(f"{tmp_path}/in.tar,{tmp_path}/in.tar.gz")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "photo.jpg").write_bytes(image_bytes(a, "JPEG"))
    (tmp_path / "mixed" / "notes.txt").write_text("not an image")
    with pytest.raises(DataPathError, match=r"notes\.txt is neither a shard .* nor an image"):
        existing_sources(f"{tmp_path}/mixed/*", "fit.input")  # it would be opened as a tar, an empty shard written
    assert [s.name for s in list_sources(f"{tmp_path}/OLD.TGZ,{tmp_path}/X.TAR")] == ["OLD.tar", "X.tar"]



def test_a_gap_in_a_shard_range_is_named_with_the_glob_that_reads_the_rest(tmp_path):
    """img2dataset leaves no shard where a download failed: {00000..00003}.tar with 00001 and 00002 gone is no
    'nothing found', and the glob it gives reads the two that are there."""
    for k in (0, 3):
        write_image_shard(tmp_path / f"{k:05d}.tar", [{"key": "k", "jpg": image_bytes(np.zeros((4, 4, 3), np.uint8),
                                                                                         "JPEG"), "txt": "a"}])
    with pytest.raises(DataPathError, match=r"^fit\.input: 2 of the 4 shards '.*' names are missing \(00001\.tar, "
                                            r"00002\.tar in .*\); img2dataset .* give '(.*)' to read") as e:
        existing_sources(f"{tmp_path}/{{00000..00003}}.tar", "fit.input")
    given = re.search(r"give '(.*)' to read", str(e.value)).group(1)
    assert [s.name for s in existing_sources(given, "fit.input")] == ["00000.tar", "00003.tar"]


def test_image_files_of_several_folders_are_keyed_below_the_folder_they_share(tmp_path):
    """A camera's day folders repeat file names: day1/IMG_1.jpg and day2/IMG_1.jpg are two samples."""
    for day in ("day1", "day2"):
        (tmp_path / "cam" / day).mkdir(parents=True)
        (tmp_path / "cam" / day / "IMG_1.jpg").write_bytes(image_bytes(np.zeros((4, 4, 3), np.uint8), "JPEG"))
    (source,) = list_sources(f"{tmp_path}/cam/*/IMG_1.jpg")
    errors = []
    assert [r.key for r in source.samples(errors)] == ["day1__IMG_1", "day2__IMG_1"] and not errors, errors


def test_a_shards_origin_follows_its_content_not_its_place(tmp_path):
    """A rerun resumes by shard name; origin tells an output shard fitted from other images. The same tar or
    photos moved elsewhere keep it; another tar of that name, or another photo among them, change it."""
    def origin(pattern):
        return [s.origin() for s in list_sources(pattern)]

    photo = image_bytes(np.zeros((4, 4, 3), np.uint8), "PNG")
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        write_image_shard(tmp_path / where / "00000.tar", [{"key": "k", "png": photo, "txt": "x" * 600}])
        (tmp_path / where / "1.png").write_bytes(photo)
    write_image_shard(tmp_path / "c.tar", [{"key": "k", "png": photo, "txt": "y"}])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "00000.tar").write_bytes((tmp_path / "c.tar").read_bytes())
    assert origin(f"{tmp_path}/a/00000.tar") == origin(f"{tmp_path}/b/00000.tar") != origin(f"{tmp_path}/c/00000.tar")
    assert origin(f"{tmp_path}/a/*.png") == origin(f"{tmp_path}/b/*.png")
    (tmp_path / "b" / "2.png").write_bytes(photo)
    assert origin(f"{tmp_path}/a/*.png") != origin(f"{tmp_path}/b/*.png")


def test_an_image_folder_reads_every_format_imagefolder_does(tmp_path):
    """A folder of scans and camera files (TIFF, PPM, PGM, upper-case suffixes) is read, pixel for pixel; other
    files in it are left out, named in one warning (hidden ones unsaid)."""
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    files = {"scan.TIFF": image_bytes(a, "TIFF"), "frame.ppm": image_bytes(a, "PPM"),
             "page.tif": image_bytes(a, "TIFF"), "grey.pgm": image_bytes(a[..., 0], "PPM"),
             "notes.txt": b"not an image", "anim.GIF": image_bytes(a, "GIF"), ".DS_Store": b"finder"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.warns(UserWarning, match=r"leaving out 2 file\(s\) .*\.gif: 1, \.txt: 1; e\.g\. .*anim\.GIF") as seen:
        (source,) = list_sources(str(tmp_path))
    assert len(seen) == 1 and "DS_Store" not in str(seen[0].message)
    samples = {r.key: decode_image(r.image) for r in source.samples([])}
    assert sorted(samples) == ["frame", "grey", "page", "scan"]
    expect = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    for key in ("frame", "page", "scan"):
        torch.testing.assert_close(samples[key], expect, rtol=0, atol=1e-6)
    torch.testing.assert_close(samples["grey"], expect[:1].expand(3, -1, -1), rtol=0, atol=1e-6)


def test_folder_keys_survive_webdataset_and_a_repeated_key_is_skipped_named(tmp_path):
    """A photo's name may hold dots (2020.05.01.jpg), and photo.jpg may sit beside photo.tif: each key reads back
    through webdataset's member names as itself, and a key the shard already has is skipped as in a tar, the
    first file kept."""
    import webdataset as wds

    a = np.zeros((4, 4, 3), np.uint8)
    (tmp_path / "trip.v2").mkdir()
    for name, fmt in (("2020.05.01.jpg", "JPEG"), ("photo.jpg", "JPEG"), ("photo.tif", "TIFF"),
                      ("trip.v2/IMG.0001.png", "PNG")):
        (tmp_path / name).write_bytes(image_bytes(a + len(name), fmt))
    (source,) = list_sources(str(tmp_path))
    errors = []
    samples = list(source.samples(errors))
    keys = [r.key for r in samples]
    assert keys == ["2020_05_01", "photo", "trip_v2__IMG_0001"]
    for key in keys:
        assert wds.tariterators.base_plus_ext(f"{key}.splats.npy") == (key, "splats.npy")
    assert samples[1].image == (tmp_path / "photo.jpg").read_bytes()
    assert len(errors) == 1 and errors[0][0] == "photo" and "photo.tif" in errors[0][1], errors


@pytest.mark.parametrize("listed", ["folder", "pattern"])
def test_two_photos_whose_names_make_one_key_are_both_kept(tmp_path, listed):
    """a.b.jpg and a_b.jpg are two photos whose keys would both be a_b (a key holds no dot); so would a_b_2.png
    after them take the second's a_b_2. Each keeps one key of its own, the first file of a name its plain one."""
    a = np.zeros((4, 4, 3), np.uint8)
    names = ["a.b.jpg", "a_b.jpg", "a_b_2.png", "a_b.tif"]  # a_b.tif: a_b.jpg's photo in another format
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(image_bytes(a + i, "TIFF" if name.endswith("tif") else "PNG"))
    (source,) = list_sources(str(tmp_path) if listed == "folder" else f"{tmp_path}/*")
    errors = []
    got = {r.key: r.image for r in source.samples(errors)}
    assert got == {"a_b": (tmp_path / "a.b.jpg").read_bytes(), "a_b_2": (tmp_path / "a_b.jpg").read_bytes(),
                   "a_b_2_2": (tmp_path / "a_b_2.png").read_bytes()}
    assert len(errors) == 1 and "a_b.tif" in errors[0][1], errors


def test_records_round_trip_in_the_unit_square():
    s = Splats(torch.tensor([[[10.0, 5.0], [1.0, 2.0]]]), torch.tensor([[[2.0, 0.5, 1.0], [1.0, 0.0, 1.0]]]),
               torch.tensor([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]), torch.tensor([[True, False]]))
    (rows,) = s.to_rows(height=20, width=40)
    assert rows.shape == (1, 8)
    np.testing.assert_allclose(rows[0], [0.25, 0.25, 0.05, 0.025, 0.05, 0.1, 0.2, 0.3], rtol=1e-6)
    rec = RECORDS["fp16"].decode(RECORDS["fp16"].encode(rows))  # what a fitted shard stores by default
    assert rec.dtype == np.float16
    back = Splats.from_rows([rec, rec[:0]], height=20, width=40)
    torch.testing.assert_close(back.xy[0, 0], s.xy[0, 0], rtol=1e-3, atol=1e-3)
    assert back.mask.tolist() == [[True], [False]]
    assert compression_ratio(224, 224, 400) == pytest.approx(23.52, abs=0.01)


@pytest.mark.parametrize("record", sorted(RECORDS))
def test_rows_of_another_width_are_refused_by_both_records(record):
    for shape in ((3, 7), (8,)):  # a [n, 7] row set would otherwise store as fp16, reading back as [n, 7]
        with pytest.raises(ValueError, match=rf"holds \[n, 8\] rows .*got shape {re.escape(str(shape))}"):
            RECORDS[record].encode(np.zeros(shape, np.float32))


def test_rows_are_placed_in_pixels_given_both_sides_or_neither():
    rows = [np.tile(np.float32([0.5, 0.5, 0.1, 0.0, 0.1, 1, 1, 1]), (2, 1))]
    assert Splats.from_rows(rows).units == "unit"
    assert Splats.from_rows(rows, 20, 40).xy[0, 0].tolist() == [20.0, 10.0]
    with pytest.raises(ValueError, match="give both height and width"):
        Splats.from_rows(rows, 20)


def test_the_same_samples_make_the_same_shard_bytes(tmp_path):
    """compare keeps evaluations by a shard's content: writing the same samples again, a while later, must not
    change a byte."""
    import time

    samples = [{"key": f"k{i}", "png": image_bytes(np.full((4, 4, 3), 40 * i, np.uint8), "PNG"), "txt": "x"}
               for i in range(3)]
    write_image_shard(tmp_path / "a.tar", samples)
    time.sleep(1.1)  # tar stores whole seconds
    write_image_shard(tmp_path / "b.tar", samples)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert [r.key for s in list_sources(str(tmp_path / "a.tar")) for r in s.samples([])] == ["k0", "k1", "k2"]


@pytest.mark.parametrize("compress", [None, "gz"])
@pytest.mark.parametrize("cut", ["at_a_header", "inside_a_header", "before_the_end_block"])
def test_a_tar_cut_between_members_is_torn_not_a_shorter_whole(tmp_path, cut, compress):
    """tarfile reads a tar cut at or inside a member's header, or before its end block, as a whole, shorter one
    (and a cut .tar.gz decompresses to such a prefix): a tar is whole only up to its end-of-archive block. The
    samples before the cut are read, then the tear is named (reader) or raised (a fit's whole read); the whole
    tar reads whole."""
    import gzip
    import tarfile
    import zlib

    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "00000.tar"
    write_image_shard(path, [{"key": f"{k:09d}", "jpg": image_bytes(a, "PNG"), "txt": "a caption"} for k in range(3)])
    whole = path.read_bytes()
    with tarfile.open(path) as t:
        members = t.getmembers()
    header = next(m for m in members if m.name == "000000001.jpg").offset  # sample 1's first member
    last = members[-1]
    at = {"at_a_header": header, "inside_a_header": header + 100,
          "before_the_end_block": last.offset_data + -(-last.size // 512) * 512}[cut]
    torn = whole[:at]
    if compress:
        path.unlink()
        path = tmp_path / "00000.tar.gz"
        deflate = zlib.compressobj(wbits=31)  # a gzip stream flushed at the cut, then cut: no end-of-stream
        torn = deflate.compress(torn) + deflate.flush(zlib.Z_FULL_FLUSH)
    path.write_bytes(gzip.compress(whole) if compress else whole)
    (source,) = list_sources(str(path))
    assert [r.key for r in source.samples([], whole=True)] == [f"{k:09d}" for k in range(3)]
    path.write_bytes(torn)
    read = ["000000000"] if cut != "before_the_end_block" else [f"{k:09d}" for k in range(3)]
    errors = []
    assert [r.key for r in source.samples(errors)] == read
    assert [e[0] for e in errors] == ["00000.tar"] and errors[0][1].startswith(("ReadError", "EOFError")), errors
    with pytest.raises(UnreadableShard, match=r"cannot read \S*00000\.tar(\.gz)? to its end \((ReadError|EOFError)"):
        list(source.samples([], whole=True))


def test_the_sample_a_tear_cuts_is_named_cut_not_read(tmp_path):
    """Cut between a sample's members, a tar's last group lacks members the first sample has: it is reported as
    cut, not read as a sample without a caption. Cut at a sample's first header, the samples before are whole."""
    write_image_shard(tmp_path / "whole.tar", [{"key": f"{k:09d}", "jpg": b"j" * 600, "txt": f"caption {k}"}
                                               for k in range(3)])
    whole = (tmp_path / "whole.tar").read_bytes()
    with tarfile.open(tmp_path / "whole.tar") as t:
        offsets = {m.name: m.offset for m in t.getmembers()}
    for cut, read, cut_keys in ((offsets["000000001.txt"], ["000000000"], ["000000001"]),
                                (offsets["000000001.jpg"], ["000000000"], [])):
        torn = tmp_path / "00000.tar"
        torn.write_bytes(whole[:cut])
        (source,) = list_sources(str(torn))
        errors = []
        assert [r.key for r in source.samples(errors)] == read
        assert [k for k, why in errors if why == "cut short with its shard: it has .jpg of .jpg, .txt"] == cut_keys
        assert errors[-1][0] == "00000.tar", errors  # and the tear itself


@pytest.mark.parametrize("suffix", [".tar.bz2", ".tar.xz"])
def test_bz2_and_xz_shards_read_whole_from_a_file_and_a_pipe(tmp_path, suffix):
    import bz2
    import lzma

    samples = [{"key": f"{k:09d}", "txt": f"caption {k}", "cls": k} for k in range(3)]
    write_image_shard(tmp_path / "00000.tar", samples)
    path = tmp_path / f"00000{suffix}"
    path.write_bytes((bz2 if suffix == ".tar.bz2" else lzma).compress((tmp_path / "00000.tar").read_bytes()))
    for url in (str(path), f"pipe:cat {path}"):
        (source,) = list_sources(url)
        errors = []
        assert [r.caption for r in source.samples(errors)] == [s["txt"] for s in samples] and errors == [], url


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz"])
def test_a_gzip_of_many_members_reads_whole(tmp_path, suffix):
    """pigz -i, bgzip and concatenated .gz files write a gzip stream of many members, cut anywhere in the tar:
    every sample is read, and a member whose bytes changed is named."""
    import gzip

    samples = [{"key": f"{k:09d}", "txt": f"caption {k}", "cls": k} for k in range(5)]
    write_image_shard(tmp_path / "00000.tar", samples)
    whole = (tmp_path / "00000.tar").read_bytes()
    path = tmp_path / f"00000{suffix}"
    members = [gzip.compress(whole[i : i + 700]) for i in range(0, len(whole), 700)]
    path.write_bytes(b"".join(members))
    padded = tmp_path / "padded.tar"  # and misnamed: a gzip stream is told by its bytes
    padded.write_bytes(members[0] + b"\0" * 100 + b"".join(members[1:]) + b"\0" * 512)  # zeros, as gzip skips
    # a pipe's command may decompress, or fetch a stream the URL does not name
    for url in (str(path), str(padded), f"pipe:cat '{path}'", f"pipe:zcat {path}"):
        (source,) = list_sources(url)
        errors = []
        assert [(r.key, r.caption) for r in source.samples(errors)] == [(s["key"], s["txt"]) for s in samples], url
        assert errors == [], url
    (source,) = list_sources(str(path))
    data = path.read_bytes()
    for broken, why in ((data[:-6] + bytes([data[-6] ^ 0xFF]) + data[-5:], "BadGzipFile"),  # the last CRC
                        (data[:-3], "EOFError: the gzip stream ends before")):  # cut in the last trailer
        path.write_bytes(broken)
        with pytest.raises(UnreadableShard, match=rf"cannot read \S*00000{re.escape(suffix)} to its end \({why}"):
            list(source.samples([], whole=True))


def test_a_tar_through_a_pipe_is_read_to_the_end_of_its_stream_and_its_commands_failure_is_named(tmp_path):
    """A pipe: URL's command is read to its end, padding after the end block included (a large blocking factor,
    appended zeros): closed on while writing, it dies of SIGPIPE and its exit status calls a whole tar torn. A
    command that fails after writing a whole tar is a tear all the same: what it wrote cannot be trusted."""
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "00000.tar"
    write_image_shard(path, [{"key": f"{k:09d}", "png": image_bytes(a, "PNG")} for k in range(3)])
    path.write_bytes(path.read_bytes() + bytes(4 << 20))  # zeros past the end block, more than a pipe holds
    keys = [f"{k:09d}" for k in range(3)]
    (source,) = list_sources(f"pipe:exec cat {path}")  # exec: the status is cat's own, -13 on SIGPIPE
    assert [r.key for r in source.samples([], whole=True)] == keys
    (source,) = list_sources(f"pipe:cat {path}; exit 3")
    errors = []
    assert [r.key for r in source.samples(errors)] == keys
    assert len(errors) == 1 and errors[0][1].startswith("OSError") and "exit 3" in errors[0][1], errors


def test_a_fitted_shard_is_whole_on_disk_when_its_final_name_appears(tmp_path, monkeypatch):
    """The rename is the commit: what another process reads of the temporary file at that moment is the whole
    tar, none of it left in a write buffer (a network filesystem's is megabytes) to follow after the rename."""
    import builtins

    import gs_lightning.atomic as atomic
    import gs_lightning.data.shards as shards

    from gs_lightning.data.embeddings import EmbeddingShard, read_embeddings

    seen, rename = {}, os.replace

    def replace(src, dst):
        seen[str(Path(dst).relative_to(tmp_path))] = Path(src).read_bytes()
        rename(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    # Python buffers a file by its filesystem's block size: Lustre and NFS report 1 MiB and more, this disk 4 KiB
    monkeypatch.setattr(shards, "open", lambda path, mode: builtins.open(path, mode, buffering=1 << 20),
                        raising=False)
    (tmp_path / "emb").mkdir()
    for n in range(1, 9):  # tars of several lengths: the last write is the end block's padding, of any size
        name = f"{n:05d}.tar"
        shard, teacher = FittedShard(tmp_path / name, "fp16"), EmbeddingShard(tmp_path / "emb" / name)
        for k in range(n):
            shard.write(f"k{k}", np.full((5 + 7 * k, 8), 0.25, np.float32), {"psnr": 30.0}, "a caption", None)
            teacher.write(f"k{k}", np.full((2, 3 + 5 * k), 0.5, np.float32))
        shard.commit()
        teacher.commit()
        assert seen[name] == (tmp_path / name).read_bytes(), n
        assert seen[f"emb/{name}"] == (tmp_path / "emb" / name).read_bytes(), n
        assert len(read_embeddings(tmp_path / "emb" / name)) == n
        assert [r.key for r in list_sources(str(tmp_path / name))[0].samples([], whole=True)] == \
            [f"k{k}" for k in range(n)]
