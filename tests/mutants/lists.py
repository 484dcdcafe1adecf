"""Mutants of the checks that keep the mutant lists themselves right."""
T = "tests/test_mutant_lists.py::test_every_equivalent_mutant_still_writes_the_line_its_entry_names"
MUTANTS = [
    {"name": "equivalent-mutant-numbered-from-zero", "path": "tests/mutants/sample.py",
     "old": "mutation = group_by_top_level_node(mutations)[node][index - 1]",
     "new": "mutation = group_by_top_level_node(mutations)[node][index]",
     "tests": [T], "why": "mutmut numbers a function's mutants from 1: every entry would name its neighbour"},
    {"name": "equivalent-mutant-lines-of-the-source", "path": "tests/mutants/sample.py",
     "old": 'if line.startswith("+") and not line.startswith("+++")]',
     "new": 'if line.startswith("-") and not line.startswith("---")]',
     "tests": [T], "why": "the lines the source has, not those the mutant writes: no entry's piece is among them"},
]
