"""Shard formats: DataComp / img2dataset image shards in, fitted splat shards out.

Input shard (webdataset tar): {key}.jpg|jpeg|png|webp, {key}.txt (caption),
{key}.json (uid, url, ...), and {key}.cls for labelled eval shards. An image
folder (ImageNet val as val/<wnid>/*.JPEG; any of FOLDER_EXTS, in any case) reads as shards of `shard_size`
files, labelled by sorted folder name; a file's key is its path in the folder without the suffix, with `__`
for `/` and `_` for `.`, and made distinct (a.b.jpg and a_b.jpg are a_b and a_b_2). Image files named by a pattern
or glob (photos/*.jpg) read as an unlabelled folder.
A compressed input tar (x.tar.gz, x.tgz; gzip of one member or many, bz2, xz) is read as a stream (TarStream),
and its shard is named x.tar.

Fitted shard (mirrors its input shard one to one, same name and keys): the splat set as rows [N, 8] =
(x/W, y/H, l11/W, l21/H, l22/H, r, g, b) in one of gs_lightning/codec.py's records, whose member name says
which: {key}.splats.npy (float16, the paper's) or {key}.splats.gsq (quantized); {key}.txt and {key}.cls
passed through, {key}.json with what the fit reports of the image (its PSNR, splat counts, iterations).
It is written to `<name>.tmp` and renamed when complete, so a shard under its
final name is always whole.

Sample keys come from strangers' tars: a key that could escape a folder when
written (absolute, `..`, backslash, control characters) is skipped, and so is
any later sample whose key an earlier one of the shard had (the first is kept;
in a folder too, where photo.jpg and photo.tif share a key).
Every skip is warned naming shard and key, and counted by the caller. An input tar that
cannot be read to its end (cut short, anywhere before its end-of-archive block; no tar) is not
written by a fit or an embed (UnreadableShard): under its final name, a shard would be skipped
as done by the rerun.
"""
from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import braceexpand
import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from gs_lightning.atomic import AtomicFile, no_space_named, write_text_atomic
from gs_lightning.codec import MEMBERS, RECORDS, RecordError
from gs_lightning.errors import UserError
from gs_lightning.splats import RECORD_DIM, Splats, invalid_rows

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
FOLDER_EXTS = IMG_EXTENSIONS  # torchvision ImageFolder's: a folder it reads is read here
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")  # the shards webdataset's tarfile reader opens


class BadSample(ValueError):
    """A sample that cannot be used; the message says why."""


class UnreadableShard(Exception):
    """An input shard that cannot be read to its end (a truncated tar, a broken download, a file that is no tar);
    the message says why. What was read of it must not be written as a finished shard."""

    def __str__(self) -> str:
        return str(self.args[0])  # webdataset appends its stream and url to the args of what passes through


# ---- images -----------------------------------------------------------------


def decode_array(data: bytes) -> np.ndarray:  # -> [H, W, 3] float32 in [0, 1]
    """Decode any common image to RGB: greyscale, palette, RGBA (over white), CMYK and 16-bit included, turned
    upright as its EXIF orientation says (a phone's photo is stored sideways and shown upright)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # truncated or corrupt files fail here, not later
            # 16 bits by its format: Pillow scales a PGM/PPM of any maxval to 0..65535 in mode I, which a dark
            # image leaves below 256; a 32-bit TIFF's I has no stated range, so its values tell
            wide = im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PPM")
            if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float32)
                a = a / (65535.0 if wide or a.max() > 255 else 255.0)
                a = np.repeat(a[..., None], 3, axis=-1)
            elif im.mode == "F":
                a = np.repeat(np.clip(np.asarray(im, dtype=np.float32), 0, 1)[..., None], 3, axis=-1)
            else:
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except UnidentifiedImageError:  # its message names only the in-memory buffer
        raise BadSample("cannot decode image: Pillow finds no image in it (corrupt, or a format it does not "
                        "read)") from None
    except Exception as e:  # PIL raises many types for bad bytes
        raise BadSample(f"cannot decode image: {type(e).__name__}: {e}") from None
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise BadSample(f"image has an empty shape {a.shape}")
    if not np.isfinite(a).all():  # a float TIFF's no-data pixels: a fit would stop on them, the whole shard with it
        raise BadSample(f"{int((~np.isfinite(a[..., 0])).sum())} of its pixels are not numbers (NaN or inf)")
    return a


def decode_image(data: bytes) -> torch.Tensor:  # -> [3, H, W] float32 in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(decode_array(data))).permute(2, 0, 1)


def to_uint8(a: np.ndarray) -> np.ndarray:  # [H, W, 3] float in [0, 1] -> uint8
    return (a * 255).round().astype(np.uint8)


def decode_pil(data: bytes) -> Image.Image:
    """8-bit RGB PIL image, for open_clip's (PIL) preprocessing, which shows the image's centre: a strip keeps
    only its central_box."""
    a = decode_array(data)
    y0, x0, h, w = central_box(*a.shape[:2])
    return Image.fromarray(to_uint8(a[y0 : y0 + h, x0 : x0 + w]))


def decode_splats(data: bytes, record: str, max_splats: int | None = None, rng=None) -> np.ndarray:
    """A fitted splat record (codec.RECORDS[record]) as rows [n, 8] (float16 or float32); a wrong shape or rows
    that Splats.check_values refuses raise BadSample.

    With max_splats, larger sets are subsampled (rng given: a random subset, kept in order) or truncated.
    """
    try:
        a = RECORDS[record].decode(data)
    except RecordError as e:
        raise BadSample(str(e)) from None
    if invalid_rows(a).any():  # Splats' own check names the field, the row and the value
        rows = torch.from_numpy(a.astype(np.float32))[None]  # [1, n, 8]
        try:
            Splats(rows[..., 0:2], rows[..., 2:5], rows[..., 5:8], torch.ones(rows.shape[:2], dtype=torch.bool),
                   units="unit").check_values("splat record")
        except ValueError as e:
            raise BadSample(str(e)) from None
    if max_splats is not None and len(a) > max_splats:
        keep = np.sort(rng.choice(len(a), max_splats, replace=False)) if rng is not None else slice(0, max_splats)
        a = a[keep]
    return a


MAX_ASPECT = 8  # the longest span of an image that is resized, in shorter sides


def central_box(H: int, W: int) -> tuple[int, int, int, int]:
    """(y0, x0, h, w): the image's centred span of at most MAX_ASPECT shorter sides. A strip (1 x 30000 pixels)
    would resize to gigabytes before a centre crop; that crop shows the central square, far inside this span."""
    h, w = min(H, MAX_ASPECT * W), min(W, MAX_ASPECT * H)
    return (H - h) // 2, (W - w) // 2, h, w


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:  # [3, H, W] -> [3, size, size]
    """Resize the shorter side to `size` (bicubic, antialiased) and crop the centre."""
    y0, x0, H, W = central_box(*image.shape[1:])
    image = image[:, y0 : y0 + H, x0 : x0 + W]
    scale = size / min(H, W)
    h, w = max(size, round(H * scale)), max(size, round(W * scale))
    out = F.interpolate(image[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)[0]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return out[:, y0 : y0 + size, x0 : x0 + size].clamp(0, 1).contiguous()


# ---- input shards -------------------------------------------------------------


def worker_slot() -> tuple[int, int]:
    """(slot, slots): this (DDP rank, dataloader worker) among all of them, for splitting shards."""
    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    return rank * workers + worker, world * workers


def shard_sizes(urls: list[str]) -> dict[str, int]:
    """{shard name: samples} of `urls` from the sizes.json beside them; shards it does not list are left out."""
    out, cache = {}, {}
    for u in urls:
        d = Path(u).parent
        if d not in cache:
            f = d / "sizes.json"
            cache[d] = json.loads(f.read_text()) if f.exists() else {}
        if Path(u).name in cache[d]:
            out[shard_name(u)] = int(cache[d][Path(u).name])
    return out


def read_sizes(urls: list[str]) -> int | None:
    """Total samples of `urls` from the sizes.json beside them ({shard name: count}); None if any is unknown."""
    sizes = shard_sizes(urls)
    return sum(sizes.values()) if len(sizes) == len({shard_name(u) for u in urls}) else None


def update_sizes(directory: str | os.PathLike, counts: dict[str, int]) -> None:
    f = Path(directory) / "sizes.json"
    sizes = json.loads(f.read_text()) if f.exists() else {}
    sizes.update(counts)
    write_text_atomic(f, json.dumps(dict(sorted(sizes.items())), indent=1))


def expand_urls(pattern: str) -> list[str]:
    """`dir/{00000..00003}.tar`, globs, or comma-separated lists of either; a comma inside braces is the
    braces' own (`photos/*.{jpg,png}`), and a backslashed brace or comma is a character of the path (literal)."""
    parts, depth, start, escaped = [], 0, 0, False
    for i, c in enumerate(pattern):
        if escaped or c == "\\":
            escaped = not escaped
            continue
        depth += (c == "{") - (c == "}")
        if c == "," and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    urls: list[str] = []
    for part in parts + [pattern[start:]]:
        for p in braceexpand.braceexpand(part.strip()):
            urls.extend(sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p])
    return urls


def literal(folder: str | os.PathLike) -> str:
    """`folder` as the head of a pattern that expand_urls reads as this folder, whatever its name holds: a folder
    named `photos [2019]` or `a,b` is no glob and no list. Join with "/" and a pattern of file names."""
    return re.sub(r"([{},])", r"\\\1", glob.escape(str(folder)))


def pattern_folder(pattern: str) -> Path:
    """The folder a shard pattern's shards lie in (where fit writes summary.json and sizes.json beside them)."""
    urls = expand_urls(pattern)
    return Path(urls[0]).parent if urls else Path(pattern).parent


@dataclass
class RawSample:
    key: str
    image: bytes | None  # None when the sample has no image member
    caption: str | None = None
    splats: bytes | None = None  # the splat record of a fitted shard ({key}.splats.npy or .gsq)
    cls: int | None = None
    meta: dict = field(default_factory=dict)
    record: str | None = None  # which codec record `splats` is, from its member name
    path: str | None = None  # the image file it was read from (an image folder's), for messages


@dataclass
class Source:
    """One input shard: a tar, or a chunk of an image folder. `name` is the output shard's name."""

    name: str
    url: str | None = None
    files: list[tuple[str, str, int | None]] | None = None  # (key, path, cls) for image folders

    def samples(self, errors: list[tuple[str, str]], *, whole: bool = False) -> Iterator[RawSample]:
        """Yield the samples; unreadable members are appended to `errors` as (key, reason), and so is a tar that
        cannot be read to its end, unless `whole`: then that raises UnreadableShard."""
        if self.files is not None:  # photo.jpg beside photo.tif: one key, as a tar's repeated key
            for key, path, cls in first_of_each_key(self.files, errors, name=lambda f: f[1]):
                try:
                    yield RawSample(key, Path(path).read_bytes(), cls=cls, path=path)
                except OSError as e:
                    errors.append((key, f"cannot read {path}: {e}"))
            return
        yield from _tar_samples(self.url, errors, whole)

    def origin(self) -> str:
        """What this shard is made of, in a line that stays the same when its files move and changes with their
        content: a rerun resumes by shard name, and this tells an output shard fitted from other images."""
        digest = hashlib.sha1()
        if self.files is None:
            if not Path(self.url).is_file():
                return self.url
            with open(self.url, "rb") as f:  # its first MiB holds the first members' names: enough, and cheap
                digest.update(f.read(1 << 20))
            return (f"{Path(self.url).name}, {Path(self.url).stat().st_size:,} bytes "
                    f"(sha1 of its first MiB {digest.hexdigest()[:12]})")
        for key, path, _ in self.files:
            digest.update(f"{key}\t{Path(path).stat().st_size if Path(path).is_file() else -1}\n".encode())
        return (f"{len(self.files)} image files, {self.files[0][0]} .. {self.files[-1][0]} "
                f"(sha1 of keys and sizes {digest.hexdigest()[:12]})")


def unsafe_key(key: str) -> str | None:
    """Why a sample key must not be written into a tar (None if it is safe). webdataset keys may hold
    `/` between folder names, as tar members do; nothing may climb out of the folder they are written to."""
    if not key or not key.isprintable():
        return "the key is empty or holds control characters"
    if key.startswith("/") or "\\" in key:
        return "the key is an absolute path or holds a backslash"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "the key has an empty, '.' or '..' path component"
    return None


def first_of_each_key(items: Iterable[tuple], errors: list[tuple[str, str]], *,
                      name: Callable[[tuple], str] = lambda item: "this sample") -> Iterator[tuple]:
    """The items (key, ...) whose key no earlier item had: a later sample of a key would write the same member
    names into the output shard, so the first is kept and each later one goes to `errors`, named by `name`."""
    seen: set[str] = set()
    for item in items:
        if item[0] in seen:
            errors.append((item[0], f"duplicate key: {name(item)} has the key of an earlier sample of this shard, "
                                    "which is the one kept"))
            continue
        seen.add(item[0])
        yield item


def group_members(members: Iterable[dict], errors: list[tuple[str, str]]) -> Iterator[tuple[str, dict]]:
    """(key, {ext: bytes}) per sample: consecutive tar members of one key, as webdataset groups them. A member
    whose extension the group already has starts a new group of the same key. An unsafe key is skipped and
    reported in `errors`."""
    key, group = None, None  # group None: the current key's members are being dropped
    for m in members:
        k, ext = wds.tariterators.base_plus_ext(m["fname"])
        if k is None:
            continue
        ext = ext.lower()
        if k == key and (group is None or ext not in group):
            if group is not None:
                group[ext] = m["data"]
            continue
        if group is not None:
            yield key, group
        key, group = k, {ext: m["data"]}
        if (why := unsafe_key(k)) is not None:
            errors.append((k, why))
            group = None
    if group is not None:
        yield key, group


def tar_groups(url: str, errors: list[tuple[str, str]], whole: bool = False) -> Iterator[tuple[str, dict]]:
    """(key, {ext: bytes}) of a tar's samples (group_members), the first of each key; a tar that cannot be read to
    its end goes to `errors` after what was read, or with `whole` raises UnreadableShard. The sample the tear cut
    (fewer members than the shard's first sample) goes to `errors` too, as cut, not yielded as if whole."""
    broke: list[Exception] = []
    first = last = None
    for group in first_of_each_key(group_members(until_broken(tar_members(url), broke), errors), errors):
        if last is not None:
            yield last
        first, last = first or set(group[1]), group
    if last is not None:
        if broke and last[1].keys() < first:
            errors.append((last[0], f"cut short with its shard: it has .{', .'.join(sorted(last[1]))} of "
                                    f".{', .'.join(sorted(first))}"))
        else:
            yield last
    if broke:  # after the sample it was reading, as far as it got
        why = f"{type(broke[0]).__name__}: {broke[0]}"
        if whole:
            raise UnreadableShard(f"cannot read {url} to its end ({why})") from None
        errors.append((shard_name(url), why))


def until_broken(items: Iterator, broke: list[Exception]) -> Iterator:
    """`items` until one cannot be read; what broke them (tarfile, zlib, a pipe's command) goes to `broke`."""
    try:
        yield from items
    except Exception as exn:
        broke.append(exn)


META = re.compile(r"__[^/]*__($|/)")  # webdataset's own members (__key__, ...), not a sample's


def tar_members(url: str) -> Iterator[dict]:
    """{"fname", "data"} of each file in the tar at `url` (a path, or a URL webdataset's gopen opens: pipe:,
    http(s) through curl), compressed or not; raises when it cannot be read to its end."""
    with contextlib.closing(wds.gopen(url)) as stream:  # a pipe's close checks its command's exit status
        source = TarStream(stream)
        # Buffered: "r|*" tells bz2 and xz from one read, which a raw stream may answer with a few bytes.
        with tarfile.open(fileobj=io.BufferedReader(source, 1 << 16), mode="r|*", tarinfo=WholeTarInfo) as tar:
            for info in tar:
                if info.isreg() and not META.match(info.name):
                    yield {"fname": info.name, "data": tar.extractfile(info).read()}
                tar.members = []  # a stream's TarFile keeps every member's header otherwise
        # The rest (the end block's padding, up to a record or a large blocking factor's) is read too: a pipe's
        # command closed on while it still writes dies of SIGPIPE, and its status would call a whole tar torn.
        while source.read(1 << 20):
            pass
        if source.cut:
            raise EOFError("the gzip stream ends before its end-of-stream marker (cut short?)")


class TarStream(io.RawIOBase):
    """A tar shard's bytes as tarfile's stream reader ("r|*") should see them: a gzip stream (told by its magic
    bytes, whatever the URL's name: pipe:curl ..., a gzipped .tar) decompressed member after member, anything
    else as it comes. tarfile's own gzip reader stops after the first member, and pigz -i, bgzip and
    `cat a.gz b.gz` write many; GzipFile reads them, but drops what it had decompressed of a read when the stream
    turns out cut. Here a cut stream reads up to the cut and ends, and `cut` says so (the tar's reader names a
    tear in the tar, tar_members one after it). zlib checks each member's CRC and length."""

    def __init__(self, raw):
        self.raw, self.input = raw, b""
        while len(self.input) < 2 and (more := raw.read(2 - len(self.input))):
            self.input += more
        self.gzip = self.input == b"\x1f\x8b"
        self.inflate = zlib.decompressobj(wbits=31)
        self.out, self.at, self.cut = b"", 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self.at == len(self.out):
            if not self.input:
                self.input = self.raw.read(1 << 16)
                if not self.input:
                    self.cut = self.gzip and not self.inflate.eof
                    return 0
            if not self.gzip:
                self.out, self.at, self.input = self.input, 0, b""
                continue
            if self.inflate.eof:  # a member ended: another follows, or zeros (padding, which gzip skips too)
                self.input = self.input.lstrip(b"\0")
                if not self.input:
                    continue
                self.inflate = zlib.decompressobj(wbits=31)
            try:  # at most 1 MiB at a time: a member of zeros inflates 1000-fold
                self.out, self.at = self.inflate.decompress(self.input, 1 << 20), 0
            except zlib.error as e:
                raise gzip.BadGzipFile(f"not a whole gzip stream: {e}") from None
            self.input = self.inflate.unused_data if self.inflate.eof else self.inflate.unconsumed_tail
        n = min(len(b), len(self.out) - self.at)
        b[:n] = memoryview(self.out)[self.at : self.at + n]
        self.at += n
        return n


class WholeTarInfo(tarfile.TarInfo):
    """A tar ends at its end-of-archive block of zeros. Past its first member, tarfile also ends, silently, at a
    header that is cut short, missing or corrupt: a download that died between two members, or a .tar.gz cut
    anywhere (its decompressed stream just stops), would pass for a whole, shorter shard."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as e:
            raise tarfile.ReadError(f"no end-of-archive block: {e} at byte {tar.offset:,} (cut short?)") from None


def _tar_samples(url: str, errors: list[tuple[str, str]], whole: bool) -> Iterator[RawSample]:
    for key, s in tar_groups(url, errors, whole):
        image = next((s[e] for e in IMAGE_EXTS if e in s), None)
        meta = {}
        if "json" in s:
            try:
                meta = json.loads(s["json"])
            except (ValueError, UnicodeDecodeError):
                meta = {}
        cls = None
        if "cls" in s:
            try:
                cls = int(s["cls"])
            except ValueError:
                cls = None
        caption = s["txt"].decode("utf-8", errors="replace") if "txt" in s else None
        member = next((m for m in MEMBERS if m in s), None)
        yield RawSample(key, image, caption, s.get(member), cls, meta, MEMBERS[member].name if member else None)


def shard_name(url: str) -> str:
    """The name of an input tar's shard, which its fitted shard and its teacher embeddings take: the file name
    as a plain tar (x.tar.gz and x.tgz -> x.tar), since the shards the project writes are plain tars."""
    name = Path(url).name
    suffix = tar_suffix(name)
    return f"{name[: -len(suffix)] if suffix else name}.tar"


def tar_suffix(name: str) -> str | None:
    """Which of TAR_SUFFIXES `name` ends with, in any case (None: none)."""
    return next((s for s in TAR_SUFFIXES if name.lower().endswith(s)), None)


def image_sources(files: list[tuple[str, str, int | None]], shard_size: int) -> list[Source]:
    """Image files (key, path, cls), in order, as shards of `shard_size` named 00000.tar, 00001.tar, ..."""
    return [Source(name=f"{i // shard_size:05d}.tar", files=files[i : i + shard_size])
            for i in range(0, len(files), shard_size)]


def image_key(relative: str | Path) -> str:
    """A file's key: its path without the suffix, `__` for `/`; webdataset splits a member's name at its first
    dot into key and extension, so a key holds none (`_` for `.`)."""
    return str(Path(relative).with_suffix("")).replace(os.sep, "__").replace(".", "_")


def image_keys(relatives: list[str | Path]) -> list[str]:
    """image_key of each file, made distinct where two names map to one: a.b.jpg and a_b.jpg both give a_b, so
    the later one is a_b_2. The same name in another format (photo.jpg beside photo.tif) is the same photo and
    keeps the shared key, of which the first is fitted (first_of_each_key)."""
    stems: dict[str, Path] = {}  # key -> the file name, without its suffix, that holds it
    out = []
    for rel in relatives:
        stem, key = Path(rel).with_suffix(""), image_key(rel)
        base, n = key, 1
        while stems.setdefault(key, stem) != stem:
            n += 1
            key = f"{base}_{n}"
        out.append(key)
    return out


def warn_left_out(folder: Path, others: list[Path]) -> None:
    """Name a folder's files of other formats (GIF, HEIC, ...), which a fit or embed would otherwise leave out
    unsaid; hidden files (.DS_Store) are no one's photos."""
    others = [p for p in others if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if others:
        counts = Counter(p.suffix.lower() or "no suffix" for p in others)
        warnings.warn(f"{folder}: leaving out {len(others)} file(s) of formats not read as images "
                      f"({', '.join(f'{s}: {n}' for s, n in counts.most_common())}; e.g. {others[0]}); convert "
                      f"them to one of {', '.join(FOLDER_EXTS)} to use them", stacklevel=3)


def list_sources(pattern: str, shard_size: int = 1000) -> list[Source]:
    """The input shards of `pattern`: an image folder's, by file name; or shards (a pattern, glob or list, see
    expand_urls) in its order, the image files among them read as an unlabelled folder, after them."""
    path = Path(pattern)
    if path.is_dir():
        classes = sorted(p.name for p in path.iterdir() if p.is_dir())
        every = [p for p in sorted(path.rglob("*")) if p.is_file()]
        found = [p for p in every if p.suffix.lower() in FOLDER_EXTS]
        if found:  # a folder with no image at all is no photo folder (fit's output): the caller says what it is
            warn_left_out(path, [p for p in every if p.suffix.lower() not in FOLDER_EXTS])
        rels = [p.relative_to(path) for p in found]
        files = [(key, str(p), classes.index(rel.parts[0]) if len(rel.parts) > 1 and rel.parts[0] in classes else None)
                 for key, p, rel in zip(image_keys(rels), found, rels)]
        return image_sources(files, shard_size)
    urls = expand_urls(pattern)
    images = {u for u in urls if Path(u).suffix.lower() in FOLDER_EXTS and Path(u).is_file()}
    sources = [Source(name=shard_name(u), url=u) for u in urls if u not in images]
    listed = [u for u in urls if u in images]  # keyed by their path below the folder they share: day1/IMG_1
    base = os.path.commonpath([os.path.dirname(os.path.abspath(u)) for u in listed]) if listed else ""
    keys = image_keys([os.path.relpath(os.path.abspath(u), base) for u in listed])
    sources += image_sources([(key, u, None) for key, u in zip(keys, listed)], shard_size)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"input shards must have distinct names, as plain tars (x.tar.gz is x.tar; image files "
                         f"are 00000.tar, ...), since their outputs take them: {pattern}")
    return sources


class DataPathError(UserError):
    """A configured data path that holds no shards or images."""


def existing_sources(pattern: str, key: str, hint: str = "", shard_size: int = 1000) -> list[Source]:
    """list_sources, but nothing found or a missing shard stops the run naming the config key, with a hint."""
    try:
        sources = list_sources(pattern, shard_size) if pattern else []
    except ValueError as e:  # shards of one name, or a pattern braceexpand cannot read
        raise DataPathError(key, str(e)) from None
    stray = [s.url for s in sources if s.url is not None and Path(s.url).is_file() and tar_suffix(s.url) is None]
    if stray:  # photos/* caught a .txt or .DS_Store: it would be opened as a tar and written as an empty shard
        raise DataPathError(key, f"{stray[0]} is neither a shard ({', '.join(TAR_SUFFIXES)}) nor an image "
                                 f"({', '.join(FOLDER_EXTS)}); name only those, e.g. 'photos/*.jpg'")
    missing = [s.url for s in sources if s.url is not None and not Path(s.url).exists()]
    named = [s.url for s in sources if s.url is not None]
    if missing and len(missing) < len(named):  # img2dataset leaves a gap where a shard's download failed
        folder, suffix = Path(missing[0]).parent, tar_suffix(missing[0]) or ".tar"
        raise DataPathError(key, f"{len(missing)} of the {len(named)} shards {pattern!r} names are missing ("
                                 f"{', '.join(Path(m).name for m in missing[:3])}{', ...' if len(missing) > 3 else ''}"
                                 f" in {folder}); img2dataset leaves a gap where a shard failed: give "
                                 f"'{literal(folder)}/*{suffix}' to read those that are there"
                                 + (f". {hint}" if hint else ""))
    if not sources or missing:
        # a folder of shards (fit's output) is named by its shards' pattern: its summary.json sits beside them
        shards = sorted(p.name for p in Path(pattern).glob("*") if tar_suffix(p.name)) if pattern else []
        glob_ = f"{literal(pattern)}/*{shards[0][-len(tar_suffix(shards[0])):]}" if shards else ""
        raise DataPathError(
            key,
            f"no shards or images found at {pattern!r}"
            + (f" (missing {missing[0]}{' and others' if len(missing) > 1 else ''})" if missing else "")
            + (f"; it holds shards ({', '.join(shards[:2])}{', ...' if len(shards) > 2 else ''}): give them as "
               f"{glob_!r}" if shards else "")
            + (f". {hint}" if hint else ""),
        )
    return sources


# ---- fitted shards ----------------------------------------------------------------


def splat_bytes(pattern: str) -> dict[str, int]:
    """{shard/key: bytes of its splat record, as codec.py counts them} over fitted shards."""
    out = {}
    for source in list_sources(pattern):
        for raw in source.samples([]):
            if raw.splats is not None:
                try:
                    out[f"{source.name}/{raw.key}"] = RECORDS[raw.record].nbytes(raw.splats)
                except RecordError:
                    continue
    return out


class TarShard:
    """A shard being written: to a temporary beside its final path, renamed to it by `commit()` once all of it is on
    disk; `abort()` leaves nothing."""

    def __init__(self, final_path: str | os.PathLike):
        self.file = AtomicFile(final_path)
        # Ours to close: TarWriter closes only a stream it opened itself.
        self._stream = open(self.file.tmp, "wb")
        self._tar = wds.TarWriter(self._stream)
        self.count = 0

    def _write(self, sample: dict) -> None:
        with no_space_named(self.file.path):
            self._tar.write(sample)
        self.count += 1

    def commit(self) -> None:
        """Every byte on disk before the final name appears: a stream's buffer (up to a network filesystem's
        block, megabytes) flushed after the rename would leave a kill there a shard cut short under its name,
        and a full disk found by that late flush an error nobody sees."""
        with no_space_named(self.file.path):
            self._tar.close()
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
        self.file.commit()

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # a full disk may refuse the last flush: the temporary goes anyway
            self._tar.close()
        with contextlib.suppress(OSError):
            self._stream.close()
        self.file.abort()


class FittedShard(TarShard):
    """A fitted shard being written; splat sets are stored in the codec record `record` (codec.RECORDS)."""

    def __init__(self, final_path: str | os.PathLike, record: str):
        super().__init__(final_path)
        self.record = RECORDS[record]
        self.bytes_splats = 0

    def write(self, key: str, rows: np.ndarray, fit: dict, caption: str | None, cls: int | None) -> int:
        """Store one splat set (unit-square rows [N, 8]) and what the fit reports of it (`fit`, its json);
        returns its bytes as counted (codec's nbytes)."""
        if rows.ndim != 2 or rows.shape[1] != RECORD_DIM or not np.issubdtype(rows.dtype, np.floating):
            raise ValueError(f"{key}: splat rows must be float [N, {RECORD_DIM}], got {rows.dtype} {rows.shape}")
        data = self.record.encode(rows)
        sample = {"__key__": key, self.record.member: data,
                  "json": {**fit, "record": self.record.name, "bytes": self.record.nbytes(data)}}
        if caption is not None:
            sample["txt"] = caption
        if cls is not None:
            sample["cls"] = cls
        self._write(sample)
        self.bytes_splats += sample["json"]["bytes"]
        return sample["json"]["bytes"]


class ShardWriter(BasePredictionWriter):
    """A prediction writer whose outputs mirror the input shards, written as their batches arrive. `open` maps
    each shard still being written to (its writer, with abort(), and its account). A run that ends or stops
    with a shard still open (an exception, SIGTERM, Ctrl-C) aborts it, so no partial shard is left behind and
    a rerun writes just that shard again."""

    def __init__(self):
        super().__init__(write_interval="batch")
        self.open: dict[str, tuple] = {}
        self._t0 = time.perf_counter()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._t0 = time.perf_counter()

    def batch_seconds(self) -> float:
        """Seconds since this batch started: its load, its work and its write."""
        return time.perf_counter() - self._t0

    def on_predict_end(self, trainer, pl_module):
        self._drop_open()

    def on_exception(self, trainer, pl_module, exception):
        self._drop_open()

    def drop_unreadable(self, shard: str, why: str) -> None:
        """Abort an output shard whose input could not be read to its end: a shard under its final name is one
        whose input was read whole, and this one's absence makes a rerun read it again."""
        self.open.pop(shard)[0].abort()
        warnings.warn(f"not writing {shard}: {why}; a rerun reads it again", stacklevel=2)

    def _drop_open(self):
        for shard, _ in self.open.values():
            shard.abort()
        self.open.clear()


def write_image_shard(path: str | os.PathLike, samples: list[dict]) -> None:
    """Write a DataComp-style input shard; each sample: key, and any of jpg/png/webp bytes, txt, json, cls.
    The same samples make the same bytes (the members' time is fixed), so what is kept by a shard's content
    (compare's evaluations) is found again."""
    with AtomicFile(path, unique=True) as tmp, wds.TarWriter(str(tmp), mtime=0) as tar:  # DDP ranks: at once
        for s in samples:
            tar.write({"__key__": s["key"], **{k: v for k, v in s.items() if k != "key"}})


def warn_skipped(shard: str, key: str, reason: str) -> None:
    """The one warning for a sample (or shard) that is skipped: names shard and key."""
    shown = key if key.isprintable() else repr(key)
    warnings.warn(f"skipping {shard}/{shown}: {reason}", stacklevel=2)
