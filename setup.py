"""gs-lightning: the package and its compiled extension gs_lightning._C.

The CPU backend is always built. The CUDA backend is built when a CUDA toolkit
is found and either a GPU is visible or FORCE_CUDA=1 (CI sets it so the CUDA
sources are compiled on machines without a GPU). Install with
`pip install --no-build-isolation -e .` so the build uses the torch already in
the environment instead of downloading a second one.
"""
import os
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).parent
SRC = Path("extensions") / "splat2d"


def want_cuda() -> bool:
    if CUDA_HOME is None:
        return False
    return os.environ.get("FORCE_CUDA", "0") == "1" or torch.cuda.is_available()


def extension():
    sources = [str(SRC / "bindings.cpp"), str(SRC / "cpu" / "splat2d_cpu.cpp"), str(SRC / "cpu" / "tiles.cpp")]
    # -ffp-contract=off: no FMA contraction, so the cut-off test s2 <= cutoff
    # rounds exactly as in the PyTorch reference (and in the CUDA build).
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-fschedule-insns", "-fsched-pressure"]
    # The headers hold the maths and the kernels: a change to one must rebuild every source.
    headers = sorted(str(p.relative_to(ROOT)) for ext in ("*.h", "*.cuh") for p in (ROOT / SRC).rglob(ext))
    kwargs = dict(include_dirs=[str(ROOT / SRC)], extra_link_args=["-fopenmp"], depends=headers)
    if not want_cuda():
        return CppExtension("gs_lightning._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    sources.append(str(SRC / "cuda" / "splat2d_cuda.cu"))
    # --fmad=false for the same reason as -ffp-contract=off above.
    nvcc = ["-O3", "--fmad=false"]
    return CUDAExtension(
        "gs_lightning._C",
        sources,
        define_macros=[("WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        **kwargs,
    )


setup(
    name="gs_lightning",
    version="0.1.0",
    description="Vision-language alignment from 2D Gaussian splat representations, on PyTorch Lightning",
    packages=find_packages(include=["gs_lightning", "gs_lightning.*"]),
    package_data={"gs_lightning": ["models/configs/*.json"]},
    python_requires=">=3.10",
    ext_modules=[extension()],
    entry_points={"console_scripts": ["gs-lightning = gs_lightning.cli:main"]},
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
