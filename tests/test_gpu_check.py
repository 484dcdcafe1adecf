"""The GPU check (gs_lightning/benchmarks/gpu_check.py), without a GPU: what it carries covers what the package
imports, a step stopped at its limit keeps what it measured, and the report puts the figures beside the paper's."""
import ast
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

from gs_lightning.benchmarks import gpu_check
from gs_lightning.benchmarks.gpu_check import DEVICE_IMAGE, Step, assemble, carried_wheels, check

ROOT = Path(__file__).resolve().parents[1]
# Imported by the package or its tests, but not by anything the check runs: each for its reason.
NOT_ON_THE_DEVICE = {
    "wandb": "the W&B logger only (build.loggers, cli sweep); the check trains with logger.wandb=false",
    "nbformat": "test_notebooks.py, which skips without it",
    "nbclient": "test_notebooks.py, which skips without it",
    "clip-benchmark": "test_suite.py's reading of the task layout by clip_benchmark's own reader, imported inside "
                      "that one test, which pytest -m gpu deselects",
    "mutmut": "make mutmut only: tests/conftest.py imports it while mutmut maps tests to functions, and "
              "tests/mutants/ to draw and report a sample",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports() -> set[str]:
    """Top-level modules imported anywhere in gs_lightning/ and tests/ (at any depth) that are neither the
    standard library nor the project's own."""
    own = {"gs_lightning"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
    found = set()
    for path in [*(ROOT / "gs_lightning").rglob("*.py"), *(ROOT / "tests").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - own - set(sys.stdlib_module_names)


def test_the_image_and_the_carried_wheels_cover_every_import():
    carried = {norm(n) for n in carried_wheels()}
    dists = md.packages_distributions()
    missing = {}
    for module in sorted(third_party_imports()):
        names = {norm(d) for d in dists.get(module, [module])}
        if not names & (DEVICE_IMAGE | carried | set(NOT_ON_THE_DEVICE)):
            missing[module] = sorted(names)
    assert not missing, f"imported, but neither in the device's image nor in requirements-gpu.txt: {missing}"


def test_every_carried_wheel_finds_its_needs_there():
    carried = {norm(n) for n in carried_wheels()}
    for name in carried_wheels():
        needs = [r for r in md.requires(name) or [] if "extra ==" not in r]
        for need in needs:
            dist = norm(re.split(r"[ ;<>=!~\[(]", need, maxsplit=1)[0])
            assert dist in DEVICE_IMAGE | carried, f"{name} needs {dist}: carry it in requirements-gpu.txt"


def test_the_carried_wheels_are_what_the_image_lacks_at_the_projects_versions():
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    for name, version in carried_wheels().items():
        assert norm(name) not in DEVICE_IMAGE, f"{name} is in the device's image: carrying it makes two versions"
        assert version == pins.get(name, md.version(name)), f"{name}: requirements-gpu.txt pins {version}"


def fake(name: str, body: str, **kw) -> Step:
    """A step whose command runs `body` with `results` (its figures' path) and `json` in scope."""
    code = f"import json, sys, time; results = sys.argv[1]\n{body}"
    return Step(name, 1, lambda ctx: [[sys.executable, "-c", code, str(ctx.results)]], limit=kw.pop("limit", 30), **kw)


def test_a_step_stopped_at_its_limit_keeps_what_it_measured_and_the_report_goes_on(tmp_path, capsys):
    write = "open(results, 'w').write(json.dumps({{'measured': {}}}))"
    steps = [
        fake("first", write.format(1)),
        fake("slow", write.format(2) + "\ntime.sleep(60)", limit=2),
        fake("needs_slow", write.format(3), after=("slow",)),
        fake("on_gpu", write.format(4), gpu=True),
        fake("broken", "raise SystemExit('the reason, last')"),
        fake("last", write.format(5)),
    ]
    status = check(tmp_path, dry=True, deadline=120, steps=steps, site=tmp_path / "site")
    report = json.loads((tmp_path / "report.json").read_text())["steps"]
    assert status == 1  # a step timed out
    assert report["first"] == {**report["first"], "status": "ok", "results": {"measured": 1}}
    assert report["slow"]["status"] == "timeout" and report["slow"]["results"] == {"measured": 2}
    assert report["slow"]["seconds"] < 10
    assert report["needs_slow"]["status"] == "skipped" and report["needs_slow"]["reason"] == "needs slow (timeout)"
    assert report["on_gpu"] == {**report["on_gpu"], "status": "skipped", "reason": "no CUDA device"}
    assert "results" not in report["on_gpu"]  # never started
    assert report["broken"]["status"] == "failed" and report["broken"]["reason"].endswith("exit 1: the reason, last")
    assert report["last"]["status"] == "ok"
    md_text = (tmp_path / "report.md").read_text()
    assert "| slow | timeout |" in md_text and md_text in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.log", "report.json", "report.md"]


def test_a_step_is_given_what_the_steps_after_it_need_and_skipped_below_the_minimum(tmp_path):
    steps = [fake("a", "print(1)", limit=None), fake("b", "print(2)")]
    steps[1].need = 100
    check(tmp_path, dry=True, deadline=105, steps=steps, site=tmp_path / "site")
    report = json.loads((tmp_path / "report.json").read_text())["steps"]
    assert report["a"]["status"] == "skipped" and report["a"]["reason"].startswith("out of time")
    assert report["b"]["status"] == "ok" and report["b"]["limit"] <= 30


def test_the_report_puts_each_figure_beside_the_papers():
    samples = [(t, u, 1000.0) for t, u in ((9.0, 10), (10.5, 90), (11.0, 100), (12.5, 5))]
    fit_run = {"recipe": "default", "splats": 400, "iterations": 300, "batch": 4096, "t0": 10.0, "t1": 12.0,
               "seconds": 2.0, "images_per_s": 2048.0, "psnr_mean": 29.9}
    records = [
        {"name": "env", "status": "ok", "seconds": 1.0, "results": {"device": "NVIDIA H200", "torch": "2.11.0"}},
        {"name": "render", "status": "ok", "seconds": 40.0, "results": {
            "fig2": {"400": {"batch": 4096, "speedup": 88.0}, "3136": {"batch": 4096, "speedup": 60.0}},
            "batches": [{"splats": 400, "batch": 1, "ms_per_image": 1.0, "images_per_s": 1000.0,
                         "gpairs_per_s": 1.0, "vs_batch1": 1.0}], "footprint": []}},
        {"name": "fit", "status": "timeout", "seconds": 100.0, "reason": "stopped", "results": {
            "runs": [fit_run, {**fit_run, "batch": 64, "images_per_s": 300.0, "t0": 0.0, "t1": 1.0}],
            "cpu_checks": [{"recipe": "default", "splats": 400, "photos": 8, "batch": 64, "cpu_psnr": 29.95,
                            "gpu_psnr": 29.9, "delta_mean": -0.05, "delta_max": 0.1, "verdict": "ok"}]}},
        {"name": "train", "status": "skipped", "seconds": 0.0, "reason": "out of time (3 s left)"},
    ]
    report, text = assemble({"deadline": 480, "elapsed": 470}, records, samples)
    a = report["anchors"]
    assert a["fig2_400"] == 88.0 and a["fit_images_per_s_400"] == 2048.0 and a["fit_batch_400"] == 4096
    assert a["fit_util"] == 95.0  # the samples inside the batch-4096 run only
    assert a["psnr_gpu_vs_cpu_400"] == -0.05
    assert "| Fig. 2: batch 4096 over batch 1, 400 splats | 88.0x | 90.3x |" in text
    assert "| fit images/s, default recipe (300 it.), 400 Gaussians | 2048 (batch 4096) |" in text
    assert "| train | skipped | 0.0 | - | out of time (3 s left) |" in text
    assert "NVIDIA H200" in text and "-0.05" in text
    empty, _ = assemble({}, [], [])
    assert set(empty["anchors"].values()) == {None}
