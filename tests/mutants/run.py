"""make mutants: apply each listed bug, one at a time, to a scratch copy of the tree, and run the tests meant to catch it.

    python tests/mutants/run.py [--only NAME,...] [--topic fit,data,...] [--list]

The bugs are data: tests/mutants/<topic>.py each hold MUTANTS, a list of dicts
    name   short id            path   file, relative to the repository
    old    exact text (must occur exactly once in the file; several edits: lists of equal length)
    new    its replacement     tests  pytest ids or files that must fail   why  the behaviour it breaks
A mutant is *caught* when those tests fail on it (the first failing test is printed), *survived* when they
pass, and *timed out* when they run past --timeout: a verdict of its own, since a slow machine could otherwise
pass a survivor off as a catch. Before any mutant, the listed tests must pass on the unmutated copy, or a catch
would mean nothing; the union of their ids runs once, as one pytest session. A change to a C++ source or header
rebuilds the extension in the scratch copy with build_ext --force (setuptools would skip a header change) and
checks that the library changed. Slow tests run too; GPU tests do not. Exit status: the number of survivors and timeouts (0 when every mutant is caught).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HARNESS = ("run", "sample", "__init__")  # this folder's scripts, not lists of mutants
CPP = (".h", ".cpp")  # sources of the CPU build: a mutant there rebuilds it (.cu/.cuh: the emulator compiles them)


def load(topics: list[str] | None) -> list[dict]:
    mutants = []
    for f in sorted(HERE.glob("*.py")):
        if f.stem in HARNESS or (topics and f.stem not in topics):
            continue
        spec = importlib.util.spec_from_file_location(f"mutants_{f.stem}", f)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        mutants += [{**m, "topic": f.stem} for m in module.MUTANTS]
    return mutants


def is_cpp(m: dict) -> bool:
    """A mutant of the CPU build's sources (.cu/.cuh: the emulator's tests compile them themselves)."""
    return Path(m["path"]).suffix in CPP and not m["path"].startswith("tests/")


def edits(m: dict) -> list[tuple[str, str]]:
    olds, news = m["old"], m["new"]
    return list(zip(olds, news)) if isinstance(olds, list) else [(olds, news)]


def mutated(m: dict, text: str) -> str:
    for old, new in edits(m):
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"mutant {m['name']}: its text occurs {count} times in {m['path']} (must be once): "
                             f"{old!r}. The code changed: update tests/mutants/{m['topic']}.py")
        text = text.replace(old, new)
    return text


def apply(m: dict, tree: Path) -> None:
    path = tree / m["path"]
    path.write_text(mutated(m, path.read_text()))


def scratch_tree(dest: Path) -> None:
    """The tracked and unignored files of the working tree (as they are now), plus the built extension."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for so in (ROOT / "gs_lightning").glob("_C*.so"):
        shutil.copy2(so, dest / "gs_lightning" / so.name)


NO_EFFECT = "the mutated sources built the same library"


def build(tree: Path) -> dict[str, bytes]:
    """Rebuild the extension in the tree from its sources, every file recompiled (setuptools skips a header
    change otherwise); returns the libraries built, by name."""
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force"], cwd=tree, check=True,
                   capture_output=True, env=_env(tree))
    return {so.name: so.read_bytes() for so in (tree / "gs_lightning").glob("_C*.so")}


def restore(tree: Path, libraries: dict[str, bytes]) -> None:
    for name, data in libraries.items():
        (tree / "gs_lightning" / name).write_bytes(data)


def _env(tree: Path) -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(tree)}


TIMED_OUT = "timed out"


def run_tests(tree: Path, tests: list[str], timeout: int) -> tuple[bool, str]:
    """(passed, first failing test, or the reason: TIMED_OUT ...)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "not gpu",
           *tests]
    try:
        out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout, env=_env(tree))
    except subprocess.TimeoutExpired:
        return False, f"{TIMED_OUT} after {timeout} s"
    if out.returncode == 0:
        return True, ""
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", out.stdout, re.M)
    return False, failed.group(1) if failed else (out.stdout + out.stderr).strip().splitlines()[-1][:200]


def covering(ids: set[str]) -> list[str]:
    """The test ids without those another one already runs (a file, or a test of which this is a parameter
    case): the baseline runs them once, in one pytest session."""
    return sorted(t for t in ids if not any(t != o and t.startswith((o + "::", o + "[")) for o in ids))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated mutant names")
    p.add_argument("--topic", help="comma-separated topics (file stems in tests/mutants/)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--timeout", type=int, default=900, help="seconds per test run")
    a = p.parse_args(argv)
    mutants = load(a.topic.split(",") if a.topic else None)
    if a.only:
        wanted = set(a.only.split(","))
        mutants = [m for m in mutants if m["name"] in wanted]
        if missing := wanted - {m["name"] for m in mutants}:
            raise SystemExit(f"no mutant named {', '.join(sorted(missing))}")
    if a.list:
        for m in mutants:
            print(f"{m['topic']:>8}  {m['name']:<34} {m['why']}")
        return 0
    with tempfile.TemporaryDirectory(prefix="gs-mutants-") as tmp:
        tree = Path(tmp)
        scratch_tree(tree)
        print(f"{len(mutants)} mutants; scratch copy of the working tree in {tree}", flush=True)
        for m in mutants:  # every text still where it was, before the first minutes of testing
            mutated(m, (tree / m["path"]).read_text())
        # The unmutated sources built here, the way each C++ mutant is: a mutant whose library is the same bits
        # never reached the code (no test could tell it apart), and its verdict says so.
        reference = build(tree) if any(is_cpp(m) for m in mutants) else {}
        baseline = covering({t for m in mutants for t in m["tests"]})
        t0 = time.perf_counter()
        ok, why = run_tests(tree, baseline, a.timeout * len(baseline))
        if not ok:
            raise SystemExit(f"the unmutated tree fails {why}: fix that first")
        print(f"the unmutated tree passes the {len(baseline)} test ids ({time.perf_counter() - t0:.0f} s)", flush=True)
        survivors, timeouts = [], []
        for m in mutants:
            t0 = time.perf_counter()
            path = tree / m["path"]
            original = path.read_text()
            try:
                apply(m, tree)
                if is_cpp(m) and build(tree) == reference:
                    ok, why = True, NO_EFFECT
                else:
                    ok, why = run_tests(tree, m["tests"], a.timeout)
            finally:
                path.write_text(original)
                if is_cpp(m):
                    restore(tree, reference)
            timed_out = not ok and why.startswith(TIMED_OUT)
            verdict = "SURVIVED" if ok else "TIMEOUT " if timed_out else "caught  "
            detail = (why if why == NO_EFFECT else f"(ran {' '.join(m['tests'])})") if ok else \
                why if timed_out else f"by {why}"
            print(f"{verdict}  {m['topic']}/{m['name']:<34} {detail}  [{time.perf_counter() - t0:.0f} s]", flush=True)
            if ok:
                survivors.append(m["name"])
            if timed_out:
                timeouts.append(m["name"])
        caught = len(mutants) - len(survivors) - len(timeouts)
        print(f"\n{caught} of {len(mutants)} mutants caught"
              + (f"; survived: {', '.join(survivors)}" if survivors else "")
              + (f"; timed out (no verdict): {', '.join(timeouts)}" if timeouts else ""))
        return len(survivors) + len(timeouts)


if __name__ == "__main__":
    sys.exit(main())
