"""The photo sets behind the fitting benchmark's held-out figures, rebuilt from Debian's wallpaper packages.

    python -m gs_lightning.benchmarks.photos OUT [--root /usr/share/backgrounds]

Writes OUT/test and OUT/third, each a folder of links to 13 photos, for
`python -m gs_lightning.benchmarks.fit --input OUT/test --photos 13` (the README's fitting section):
test    the held-out test photos, used for no choice: every second of 26 photos sorted by name
        (mate-backgrounds, ukui-wallpapers, lomiri-wallpapers, and matplotlib's grace_hopper.jpg);
third   photographs picked after every coarse-to-fine route was fixed (lomiri-wallpapers-16.04).
`make photos` installs the packages first.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

PACKAGES = ("mate-backgrounds", "ukui-wallpapers", "lomiri-wallpapers", "lomiri-wallpapers-16.04")

# A photo is a file whose name is "<name>.<ext>" or, as lomiri-wallpapers-16.04 names them, "<name>_by_<author>.<ext>".
SETS = {
    "test": ("Aqua", "calla", "desert", "Elephants", "focal-ubuntukylin", "Garden", "grace_hopper",
             "GreenTraditional", "lomiri-default-background", "rhythm", "string", "TwoWings", "YellowFlower"),
    "third": ("Bridge", "Dragonfly", "Picture_1A", "Wine", "aitzgorri", "free", "friends", "greentock", "life",
              "picosdeeuropa", "seeding", "sunset", "umang"),
}
EXTS = (".jpg", ".jpeg", ".png")
NAME = re.compile(r"(?P<name>.+?)(_by_[^/]*)?$")  # of a file's stem


def grace_hopper() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def find(names: tuple[str, ...], root: Path, extra: dict[str, Path]) -> dict[str, Path]:
    """name -> its file under `root` (or in `extra`); exits naming every photo not found, and any found twice."""
    found: dict[str, list[Path]] = {n: [extra[n]] if n in extra else [] for n in names}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in EXTS and path.is_file():
            name = NAME.match(path.stem)["name"]
            if name in found and name not in extra:
                found[name].append(path)
    missing = [n for n, paths in found.items() if not paths]
    if missing:
        raise SystemExit(f"{root}: no photo named {', '.join(missing)}. Install the packages: "
                         f"sudo apt-get install {' '.join(PACKAGES)} (make photos does).")
    twice = {n: paths for n, paths in found.items() if len(paths) > 1}
    if twice:
        raise SystemExit(f"{root}: more than one photo named " + "; ".join(
            f"{n} ({', '.join(map(str, paths))})" for n, paths in twice.items()))
    return {n: paths[0] for n, paths in found.items()}


def write_sets(out: Path, root: Path, extra: dict[str, Path]) -> dict[str, list[Path]]:
    """OUT/<set>/<file name> -> the photo, for each set, once every photo of every set is found. A set's folder
    holds its links and nothing else: links left from other photos go; a file that is no link stops it."""
    found = {name: find(names, root, extra) for name, names in SETS.items()}
    written = {}
    for name, photos in found.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        others = [p for p in folder.iterdir() if not p.is_symlink()]
        if others:
            raise SystemExit(f"{folder} holds {', '.join(p.name for p in others)}, which no link of this set "
                             f"replaces: move it, or give another OUT.")
        for link in folder.iterdir():
            link.unlink()
        written[name] = []
        for photo in photos.values():
            link = folder / photo.name
            link.symlink_to(photo.resolve())
            written[name].append(link)
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="where the sets' folders go")
    p.add_argument("--root", type=Path, default=Path("/usr/share/backgrounds"), help="where the packages put them")
    a = p.parse_args(argv)
    for name, links in write_sets(a.out, a.root, {"grace_hopper": grace_hopper()}).items():
        print(f"{a.out / name}: {len(links)} photos")


if __name__ == "__main__":
    main()
