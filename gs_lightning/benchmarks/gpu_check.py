"""The GPU check: every GPU test and benchmark of the project, in one call of about 8 minutes on a lent device.

    python3 -m gs_lightning.benchmarks.gpu_check --out DIR [--dry] [--deadline 480] [--only fit,train]

A GPU is lent by chance, for 15 minutes in all, on a bare machine that reaches no package registry; so the
check is one command, prepared here, that leaves time to run it again. Its steps run in order, each in its own
process under its own time limit:

    env     the machine: GPU, driver, python, torch, CUDA, nvcc
    wheels  pip installs the carried wheels (.gpu-wheels/, `make gpu-wheels`) into a folder on PYTHONPATH;
            the package and open_clip's tokenizer import from there
    build   the extension for sm_90 only (FORCE_CUDA=1, build_ext --inplace)
    tests   pytest -m gpu (CPU against CUDA, and both against the dense reference), check_cuda_build.py
    render  bench-render's GPU section: batch 1 to 4096, the paper's Fig. 2
    fit     images/s and PSNR, default and paper recipes, 400 and 3136 Gaussians, batches from 64 up, against
            a CPU fit of the same photos; sizes itself to the time the steps after it leave
    train   a bf16-mixed Lightning training step at the paper's model and batch: samples/s, peak memory

The report (DIR/report.md and report.json) is written after every step, so a step that fails or runs out of time
keeps what the steps before it measured, and what it measured itself: its worker (gpu_steps.py) writes its
figures as it goes. DIR also gets check.log (every step's output) and gpu-util.csv (nvidia-smi's utilisation
and memory every 200 ms). The device returns at most 8 files from its $OUT: these are four.

--dry runs the CPU side (CI, and before a lease): the same wheel install and build, pytest -m gpu (which then
skips), the fit and train workers at toy size on the CPU, and the report, with the GPU steps marked skipped.

This module imports only the standard library (and the package's __init__, torch): it runs before the wheels are
installed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".gpu-wheels"
SITE = ROOT / "build" / "gpu-site"  # the wheels, installed; ignored, so a rerun on a warm machine finds them
DEADLINE = 480  # seconds: the check's own, inside a device call's 10-minute limit
DRY_DEADLINE = 1800  # a CPU may have to compile the extension from scratch
MIN_STEP = 10  # a step given less than this (or than its own limit, if lower) is skipped, not started
# The lent machine's Python packages (the device tool's KINDS.md, read 2026-11-17), by distribution name.
DEVICE_IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())


def carried_wheels(path: Path = ROOT / "requirements-gpu.txt") -> dict[str, str]:
    """requirements-gpu.txt as {distribution: version}."""
    pins = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(pin.split("==") for pin in pins if pin)


# ---- steps ---------------------------------------------------------------------------------------------------


@dataclass
class Context:
    out: Path
    dry: bool
    site: Path  # where the wheels are installed; first on the steps' PYTHONPATH
    python: str = sys.executable
    results: Path = Path()  # the running step's figures, written by its worker as it goes
    budget: float = 0.0  # seconds the running step has, less a margin for its worker to finish writing


@dataclass
class Step:
    name: str
    need: float  # seconds it takes on the device: what the steps before it leave for it
    commands: Callable[[Context], list[list[str]]]  # run in turn; a worker writes ctx.results
    limit: float | None = None  # its time limit; None: what the steps after it leave (the fit sizes itself)
    gpu: bool = False  # --dry skips it
    smoke: bool = False  # --dry runs its worker on the CPU at toy size instead, to prove the code runs
    env: dict = field(default_factory=dict)  # on the device; --dry runs without it
    after: tuple[str, ...] = ()  # steps it needs: when one of them failed, it is skipped


def worker(name: str) -> Callable[[Context], list[list[str]]]:
    def commands(ctx: Context) -> list[list[str]]:
        return [[ctx.python, "-m", "gs_lightning.benchmarks.gpu_steps", name, "--results", str(ctx.results),
                 "--budget", f"{ctx.budget:.0f}", "--site", str(ctx.site)] + (["--smoke"] if ctx.dry else [])]
    return commands


def install(ctx: Context) -> list[list[str]]:
    wheels = sorted(str(w) for w in WHEELS.glob("*.whl"))
    if not wheels:
        raise StepError(f"no wheels in {WHEELS}: run `make gpu-wheels` here and carry .gpu-wheels")
    return [[ctx.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
             "--upgrade", "--target", str(ctx.site), *wheels]] + worker("probe")(ctx)


def build(ctx: Context) -> list[list[str]]:
    return [[ctx.python, "setup.py", "-q", "build_ext", "--inplace"]]


def tests(ctx: Context) -> list[list[str]]:
    pytest = [ctx.python, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rs",
              f"--junitxml={ctx.results.with_suffix('.xml')}"]
    if ctx.dry:  # no CUDA build to load
        return [pytest]
    extension = f"gs_lightning/_C{sysconfig.get_config_var('EXT_SUFFIX')}"  # this python's, built in place
    return [pytest, [ctx.python, "tests/check_cuda_build.py", extension]]


def cuda_env() -> dict:
    """The build's: sm_90 alone, CUDA forced; and the toolkit named, where torch would take a symlinked
    /usr/local/bin/nvcc for it (the Makefile's note on CUDA_HOME)."""
    toolkit = {} if os.environ.get("CUDA_HOME") or not Path("/usr/local/cuda/bin/nvcc").exists() else \
        {"CUDA_HOME": "/usr/local/cuda"}
    return {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "9.0", **toolkit}


# Expected seconds on the H200 (need) and limits: 8 minutes in all, about half of it the fit. The sm_90 build took
# 2.5 minutes on 2 busy cores here, its four sources two at a time; there, on 16, all four at once.
STEPS = [
    Step("env", 10, worker("env"), limit=30),
    Step("wheels", 20, install, limit=90),
    Step("build", 100, build, limit=270, env=cuda_env(), after=("wheels",)),
    Step("tests", 60, tests, limit=150, after=("wheels", "build")),
    Step("render", 60, worker("render"), limit=120, gpu=True, after=("wheels", "build")),
    Step("fit", 120, worker("fit"), limit=None, gpu=True, smoke=True, after=("wheels", "build")),
    Step("train", 70, worker("train"), limit=120, gpu=True, smoke=True, after=("wheels",)),
]


class StepError(Exception):
    """A step that cannot start: its reason goes to the report."""


def run_step(step: Step, ctx: Context, timeout: float, log) -> dict:
    """Runs a step's commands under one time limit; returns its record, with whatever figures its worker wrote."""
    rec = {"name": step.name, "status": "ok", "limit": round(timeout), "seconds": 0.0}
    ctx.results = Path(tempfile.mkdtemp(prefix=f"gpu-check-{step.name}-")) / "results.json"
    ctx.budget = max(timeout - 5, 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ctx.site), str(ROOT)]), "PYTHONUNBUFFERED": "1",
           **({} if ctx.dry else step.env)}
    start = time.monotonic()
    log.write(f"\n==== {step.name}\n")
    log.flush()
    mark = log.tell()
    try:
        for cmd in step.commands(ctx):
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            # A process group of its own, so a timeout stops its children too (pytest's, the compilers).
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
            try:
                rc = proc.wait(timeout=max(timeout - (time.monotonic() - start), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rec.update(status="timeout", reason=f"stopped at its {timeout:.0f} s limit in `{short(cmd)}`")
                break
            if rc != 0:
                rec.update(status="failed", reason=f"`{short(cmd)}` exit {rc}: {last_line(log, mark)}")
                break
    except StepError as e:
        rec.update(status="failed", reason=str(e))
    rec["seconds"] = round(time.monotonic() - start, 1)
    if ctx.results.exists():
        rec["results"] = json.loads(ctx.results.read_text())
    elif ctx.results.with_suffix(".xml").exists():  # pytest's
        rec["results"] = pytest_counts(ctx.results.with_suffix(".xml"))
    shutil.rmtree(ctx.results.parent, ignore_errors=True)
    return rec


def short(cmd: list[str]) -> str:
    return " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd[:4]))


def last_line(log, mark: int) -> str:
    """The last line the step wrote to the log (an exception's message, pytest's summary), for the report."""
    log.flush()
    with open(log.name, "rb") as f:
        f.seek(mark)
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


class UtilSampler:
    """nvidia-smi's GPU utilisation (%) and memory used (MiB) every 200 ms, stamped with time.time(): the fit's
    runs record their own start and end, and the report averages the samples inside each."""

    def __init__(self, csv: Path):
        self.samples: list[tuple[float, float, float]] = []
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-lms", "200"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.csv = csv.open("w")
        self.csv.write("time,utilization_percent,memory_used_mib\n")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:  # "[N/A]" or a header
                continue
            self.samples.append((time.time(), util, mem))
            self.csv.write(f"{self.samples[-1][0]:.3f},{util:.0f},{mem:.0f}\n")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.thread.join(timeout=2)
        self.csv.close()


# ---- the report ----------------------------------------------------------------------------------------------

PAPER_FIG2 = 90.3  # batch 4096 over batch 1 (paper, Fig. 2)
PAPER_UTIL = 97  # % GPU utilisation while fitting (paper)
PAPER_FIT_RATE = 139  # images/s: 12.8M images at 400 Gaussians, 3000 iterations, in 25.6 GPU-hours
FIT_GOAL = 10 * PAPER_FIT_RATE  # images/s at 400 Gaussians with the 300-iteration default
PSNR_TOL = 0.2  # dB: the GPU fit's mean PSNR may differ this much from the CPU fit of the same photos


def utilisation(t0: float, t1: float, samples) -> dict | None:
    """Mean utilisation and peak memory among the samples taken in [t0, t1]."""
    inside = [(u, m) for t, u, m in samples if t0 <= t <= t1]
    if not inside:
        return None
    return {"util_mean": statistics.fmean(u for u, _ in inside), "mem_max_mib": max(m for _, m in inside),
            "samples": len(inside)}


def anchors(steps: dict) -> dict:
    """The figures the paper states, and ours beside them (None where not measured)."""
    render = steps.get("render", {}).get("results", {})
    fit = steps.get("fit", {}).get("results", {})
    runs = [r for r in fit.get("runs", []) if r.get("recipe") == "default" and r.get("splats") == 400
            and "images_per_s" in r]
    best = max(runs, key=lambda r: r["images_per_s"], default=None)
    check = next((c for c in fit.get("cpu_checks", []) if c["recipe"] == "default" and c["splats"] == 400), None)
    return {
        "fig2_400": render.get("fig2", {}).get("400", {}).get("speedup"),
        "fig2_3136": render.get("fig2", {}).get("3136", {}).get("speedup"),
        "fit_util": ((best or {}).get("gpu") or {}).get("util_mean"),
        "fit_images_per_s_400": best and best["images_per_s"],
        "fit_batch_400": best and best["batch"],
        "psnr_gpu_vs_cpu_400": check and check["delta_mean"],
    }


def _num(x, fmt: str = ".1f", unit: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{fmt}}{unit}"


def _table(headers: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def assemble(meta: dict, records: list[dict], samples=()) -> tuple[dict, str]:
    """The report, as JSON and markdown, from the step records so far (and nvidia-smi's samples)."""
    steps = {r["name"]: r for r in records}
    for run in steps.get("fit", {}).get("results", {}).get("runs", []):
        if "t0" in run:
            run["gpu"] = utilisation(run["t0"], run["t1"], samples)
    a = anchors(steps)
    env = steps.get("env", {}).get("results", {})
    md = ["# GPU check" + (" (dry run: no GPU)" if meta.get("dry") else ""), "",
          f"{env.get('device', 'no CUDA device')}; python {env.get('python', '?')}, torch {env.get('torch', '?')} "
          f"(CUDA {env.get('cuda') or '-'}), driver {env.get('driver') or '-'}, nvcc {env.get('nvcc') or '-'}. "
          f"{meta.get('elapsed', 0):.0f} s of a {meta.get('deadline', 0):.0f} s deadline.", ""]
    md += _table(["step", "status", "seconds", "limit", "note"],
                 [[r["name"], r["status"], r["seconds"], r.get("limit", "-"), r.get("reason", "")] for r in records])
    md += ["", "## Against the paper", ""]
    md += _table(["figure", "measured", "paper / goal"], [
        ["Fig. 2: batch 4096 over batch 1, 400 splats", _num(a["fig2_400"], unit="x"), f"{PAPER_FIG2}x"],
        ["Fig. 2, 3136 splats", _num(a["fig2_3136"], unit="x"), "-"],
        ["GPU utilisation while fitting (default, 400, largest batch)", _num(a["fit_util"], ".0f", "%"),
         f"{PAPER_UTIL}%"],
        ["fit images/s, default recipe (300 it.), 400 Gaussians",
         f"{_num(a['fit_images_per_s_400'], '.0f')} (batch {a['fit_batch_400'] or '-'})",
         f">= {FIT_GOAL} (10x the paper's {PAPER_FIT_RATE} at 3000 it.)"],
        ["mean PSNR, GPU fit minus CPU fit (default, 400)", _num(a["psnr_gpu_vs_cpu_400"], "+.2f", " dB"),
         f"within {PSNR_TOL} dB, no lower"],
    ])
    md += _render_section(steps) + _fit_section(steps) + _train_section(steps) + _tests_section(steps)
    report = {"meta": meta, "anchors": a, "steps": steps}
    return report, "\n".join(md) + "\n"


def _render_section(steps: dict) -> list[str]:
    r = steps.get("render", {}).get("results")
    if not r:
        return []
    return ["", "## Rasterizer, forward+backward at 224x224 (bench-render)", ""] + _table(
        ["splats", "batch", "ms/image", "images/s", "Gpairs/s", "vs batch 1"],
        [[b["splats"], b["batch"], f"{b['ms_per_image']:.3f}", f"{b['images_per_s']:.0f}",
          f"{b['gpairs_per_s']:.1f}", f"{b['vs_batch1']:.1f}x"] for b in r.get("batches", [])]) + [""] + _table(
        ["splats (constant footprint, batch 64)", "Mpairs/image", "ms/image", "vs 400"],
        [[f["splats"], f"{f['mpairs_per_image']:.2f}", f"{f['ms_per_image']:.3f}", f"{f['vs_400']:.2f}x"]
         for f in r.get("footprint", [])])


def _fit_section(steps: dict) -> list[str]:
    r = steps.get("fit", {}).get("results")
    if not r:
        return []
    rows = []
    for run in r.get("runs", []):
        gpu = run.get("gpu") or {}
        rows.append([run["recipe"], run["splats"], run["iterations"], run["batch"], _num(run.get("seconds")),
                     _num(run.get("images_per_s")), _num(run.get("psnr_mean"), ".2f"),
                     _num(gpu.get("util_mean"), ".0f", "%"), _num(run.get("peak_gib"), ".1f"),
                     run.get("error", "")])
    md = ["", f"## Fit on {r.get('device', '?')}: {r.get('photos', '?')} photos at {r.get('size', '?')}x"
              f"{r.get('size', '?')}, tiled with their flips and rotations to fill a batch", ""]
    md += _table(["recipe", "Gaussians", "iterations", "batch", "seconds", "images/s", "mean PSNR", "GPU util",
                  "peak GiB", "note"], rows)
    checks = r.get("cpu_checks", [])
    if checks:
        md += ["", f"Against a CPU fit of the same photos (batch {checks[0]['batch']} on the GPU; tolerance "
                   f"{PSNR_TOL} dB on the mean):", ""]
        md += _table(["recipe", "Gaussians", "photos", "CPU PSNR", "GPU PSNR", "mean diff", "max |diff|", "CPU s",
                      "verdict"],
                     [[c["recipe"], c["splats"], c["photos"], _num(c.get("cpu_psnr"), ".2f"),
                       _num(c.get("gpu_psnr"), ".2f"), _num(c.get("delta_mean"), "+.2f"),
                       _num(c.get("delta_max"), ".2f"), _num(c.get("cpu_seconds")), c.get("verdict", "")]
                      for c in checks])
    return md


def _train_section(steps: dict) -> list[str]:
    r = steps.get("train", {}).get("results")
    if not r:
        return []
    return ["", f"## Training steps, {r.get('precision', '?')} on {r.get('device', '?')} (random weights, "
                "batches already on the device)", ""] + _table(
        ["run", "model", "trainable", "batch", "steps timed", "ms/step", "samples/s", "peak GiB", "note"],
        [[t["run"], t["model"], t.get("trainable", "-"), t["batch"], t.get("steps", "-"), _num(t.get("ms_per_step")),
          _num(t.get("samples_per_s"), ".0f"), _num(t.get("peak_gib"), ".1f"), t.get("error", "")]
         for t in r.get("runs", [])])


def _tests_section(steps: dict) -> list[str]:
    r = steps.get("tests", {}).get("results")
    if not r:
        return []
    return ["", f"## pytest -m gpu: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped"] + \
           [f"- {name}: {what}" for name, what in r.get("problems", [])]


def write_report(out: Path, meta: dict, records: list[dict], samples=()) -> str:
    report, md = assemble(meta, records, samples)
    for name, text in (("report.json", json.dumps(report, indent=1, default=str)), ("report.md", md)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return md


# ---- the run ---------------------------------------------------------------------------------------------------


def pytest_counts(xml: Path) -> dict:
    """passed / failed / skipped, and the failures' and skips' names and messages, from pytest's junit XML."""
    import xml.etree.ElementTree as ET

    out = {"passed": 0, "failed": 0, "skipped": 0, "problems": []}
    for case in ET.parse(xml).getroot().iter("testcase"):
        bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        kind = "passed" if bad is None else "skipped" if bad.tag == "skipped" else "failed"
        out[kind] += 1
        if bad is not None:
            message = (bad.get("message") or "").splitlines() or [""]
            out["problems"].append((f"{case.get('classname')}::{case.get('name')}", f"{kind}: {message[0][:160]}"))
    return out


def check(out: Path, *, dry: bool, deadline: float, only: set[str] | None = None, steps=None,
          site: Path = SITE) -> int:
    """Runs the steps (STEPS, those in `only`), writing the report after each; returns the exit status."""
    steps = [s for s in (steps or STEPS) if not only or s.name in only]
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, dry=dry, site=site)
    meta = {"dry": dry, "deadline": deadline, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed": 0.0,
            "only": sorted(only) if only else None}
    sampler = UtilSampler(out / "gpu-util.csv") if not dry and shutil.which("nvidia-smi") else None
    samples = sampler.samples if sampler else []
    start, records = time.monotonic(), []
    with (out / "check.log").open("w") as log:
        try:
            for i, step in enumerate(steps):
                failed = [r for r in records if r["name"] in step.after and r["status"] != "ok"]
                left = deadline - (time.monotonic() - start)
                timeout = min(step.limit or math.inf, left - sum(s.need for s in steps[i + 1:]))
                if dry and step.gpu and not step.smoke:
                    rec = {"name": step.name, "status": "skipped", "seconds": 0.0, "reason": "no CUDA device"}
                elif failed:
                    rec = {"name": step.name, "status": "skipped", "seconds": 0.0,
                           "reason": f"needs {failed[0]['name']} ({failed[0]['status']})"}
                elif timeout < min(MIN_STEP, step.limit or MIN_STEP):
                    rec = {"name": step.name, "status": "skipped", "seconds": 0.0,
                           "reason": f"out of time ({left:.0f} s left)"}
                else:
                    print(f"== {step.name} (limit {timeout:.0f} s)", flush=True)
                    rec = run_step(step, ctx, timeout, log)
                    if dry and step.gpu:  # the worker ran at toy size on the CPU
                        rec.update(status="skipped" if rec["status"] == "ok" else rec["status"],
                                   reason=f"no CUDA device; CPU smoke run {rec['status']}"
                                          + (f": {rec['reason']}" if "reason" in rec else ""))
                records.append(rec)
                print(f"   {rec['status']} in {rec['seconds']} s {rec.get('reason', '')}", flush=True)
                meta["elapsed"] = time.monotonic() - start
                write_report(out, meta, records, samples)
        finally:
            if sampler:
                sampler.stop()
            meta["elapsed"] = time.monotonic() - start
            md = write_report(out, meta, records, samples)
    print(md)
    bad = [r for r in records if r["status"] in ("failed", "timeout")]
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/gpu-check", help="report folder ($OUT on the device)")
    p.add_argument("--dry", action="store_true", help="the CPU side only: GPU steps skipped, workers at toy size")
    p.add_argument("--deadline", type=float, help=f"seconds for the whole check (default {DEADLINE}; "
                                                  f"--dry {DRY_DEADLINE})")
    p.add_argument("--only", help="comma-separated steps, e.g. fit,train for a rerun on a warm machine")
    a = p.parse_args(argv)
    only = set(a.only.split(",")) if a.only else None
    unknown = (only or set()) - {s.name for s in STEPS}
    if unknown:
        p.error(f"--only: unknown steps {sorted(unknown)}; the steps are {', '.join(s.name for s in STEPS)}")
    return check(Path(a.out), dry=a.dry, deadline=a.deadline or (DRY_DEADLINE if a.dry else DEADLINE), only=only)


if __name__ == "__main__":
    sys.exit(main())
