"""The hand list of `make mutants` stays applicable: every listed mutant's text occurs once in the file it
names, its tests exist, and its name is its own. Checked here in seconds, so that moved code or a renamed test
shows in `make test`, not after the minutes of a mutation run's baseline."""
import importlib.util
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def harness(script: str):
    """One of tests/mutants/'s scripts, as a module: the folder is not a package pytest imports."""
    spec = importlib.util.spec_from_file_location(f"mutants_{script}", ROOT / "tests" / "mutants" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = harness("run")


def test_every_listed_mutant_applies_once_and_changes_its_file():
    mutants = run.load(None)
    assert len(mutants) >= 100  # every topic's list loads; the harness's own scripts are not lists
    for m in mutants:
        text = (ROOT / m["path"]).read_text()
        assert run.mutated(m, text) != text, m["name"]


def test_every_listed_mutant_names_tests_that_exist_and_a_name_of_its_own():
    mutants = run.load(None)
    assert not [name for name, n in Counter(m["name"] for m in mutants).items() if n > 1]
    for m in mutants:
        assert m["tests"] and m["why"], m["name"]
        for test in m["tests"]:
            path, _, name = test.partition("::")
            assert (ROOT / path).is_file(), (m["name"], test)
            if name:
                function = re.sub(r"\[.*\]$", "", name.split("::")[-1])
                assert re.search(rf"^\s*def {re.escape(function)}\(", (ROOT / path).read_text(), re.M), \
                    (m["name"], test)


def test_every_equivalent_mutant_still_writes_the_line_its_entry_names(monkeypatch):
    """equivalent.txt names mutmut's mutants by their number within a function, which an edit above them
    shifts: each must still be the mutation its reason is about."""
    sample = harness("sample")
    monkeypatch.chdir(ROOT)  # mutmut reads setup.cfg, whose do_not_mutate_patterns take part in the numbering
    listed = sample.equivalent()
    assert len(listed) >= 10
    for name, (piece, _) in listed.items():
        lines = sample.mutated_lines(name)
        assert any(piece in line for line in lines), (name, piece, lines)
