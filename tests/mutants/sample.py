"""A seeded random sample of mutmut's mutants, for `make mutmut SAMPLE=N`: every mutant of the core modules
(setup.cfg) takes hours on 2 cores, a uniform sample of a few hundred gives the kill rate within a few points.
The sample is the N mutants whose names hash lowest with the seed, so an edit elsewhere leaves it as it is.

  python tests/mutants/sample.py draw N [--seed S]     generate the mutants (mutmut's own step), print those of
                                                       the N not killed yet (mutmut keeps a result until the
                                                       function it mutates changes)
  python tests/mutants/sample.py report N [--seed S]   the sample's outcomes from mutmut's results, the kill
                                                       rate among the non-equivalent ones and its 95% interval

Equivalent mutants (no input tells them from the source) are listed in equivalent.txt, one per line with its
reason after a '#'.
"""
import argparse
import contextlib
import hashlib
import json
import math
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).parent
EQUIVALENT = HERE / "equivalent.txt"


def generate() -> None:
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(2)


def outcomes() -> dict[str, int | None]:
    """Every mutant's exit code from mutmut's meta files (None: not run)."""
    codes = {}
    for meta in Path("mutants").rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def draw(codes: dict[str, int | None], n: int, seed: int) -> list[str]:
    """The n of `codes`' mutants whose names hash lowest with the seed, in name order."""
    if n > len(codes):
        sys.exit(f"sample.py: a sample of {n} asked for, but mutmut made only {len(codes)} mutants")
    return sorted(sorted(codes, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).digest())[:n])


def equivalent() -> dict[str, str]:
    lines = (line.split("#", 1) for line in EQUIVALENT.read_text().splitlines() if line.strip())
    return {name.strip(): reason.strip() for name, reason in lines}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def report(n: int, seed: int) -> None:
    from mutmut.stats import status_by_exit_code

    codes, same = outcomes(), equivalent()
    sample = draw(codes, n, seed)
    status = {name: status_by_exit_code[codes[name]] for name in sample}
    for name in sample:
        if status[name] != "killed":
            print(f"{status[name]:>12}  {name}" + (f"  (equivalent: {same[name]})" if name in same else ""))
    counts = Counter(status.values())
    judged = [name for name in sample if name not in same and status[name] != "not checked"]
    killed = sum(status[name] == "killed" for name in judged)
    low, high = wilson(killed, len(judged))
    print(f"\n{n} of {len(codes)} mutants drawn (seed {seed}): "
          + ", ".join(f"{v} {k}" for k, v in counts.most_common()))
    print(f"killed {killed} of {len(judged)} non-equivalent ({sum(name in same for name in sample)} equivalent): "
          f"{100 * killed / max(len(judged), 1):.1f}% (95% interval {100 * low:.1f}-{100 * high:.1f}%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["draw", "report"])
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.action == "draw":
        from mutmut.stats import status_by_exit_code

        with contextlib.redirect_stdout(sys.stderr):  # mutmut names each file it mutates
            generate()
        codes = outcomes()
        print(" ".join(name for name in draw(codes, args.n, args.seed) if status_by_exit_code[codes[name]] != "killed"))
    else:
        report(args.n, args.seed)
