"""The CUDA backend's device code, executed on the CPU by the thread-block emulator in tests/cuda_emu.

A session fixture compiles extensions/splat2d/cuda/*.cuh from this working tree together with the
emulator (cuda_emu.*) and its C entry points (harness.cpp, selftest.cpp) into a shared library, cached
under build/cuda_emu by a hash of the sources and flags, so an edited kernel is what the next run tests.
The same binning, kernels and slicing as the CUDA build run here; only CUB's scan and radix sort are
stood in for by std:: (stable, on the same key bits).

Oracles: the CPU backend, which walks each pixel's Gaussians in the same ascending order with the same
splat2d.h maths (forward: bit for bit; backward: close, as atomics reorder the sums), and the dense
reference with the same cut-off. Every check runs under two schedules (fibers in order, and shuffled at
every switch point); as both forwards equal the CPU's bit for bit, they equal each other.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import random_splats
from test_render import CASES, CROWDED_TILE, compare_with_reference, empty_first_image, with_garbage_padding

from gs_lightning.render import CUTOFF, rasterize
from gs_lightning.splats import Splats

ROOT = Path(__file__).resolve().parent.parent
EMU = ROOT / "tests" / "cuda_emu"
KERNELS = ROOT / "extensions" / "splat2d" / "cuda"
SOURCES = [EMU / "cuda_emu.cpp", EMU / "harness.cpp", EMU / "selftest.cpp"]
# -ffp-contract=off as in the CPU build (setup.py), so no FMA changes a rounding.
FLAGS = ["-std=c++20", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-Wno-unknown-pragmas", f"-I{EMU}", f"-I{KERNELS}"]
CXX = shutil.which(os.environ.get("CXX", "c++"))
SCHEDULES = {"in_order": (0, 0), "shuffled": (1, 20240611)}
# Two images per launch, so a batch of 3 runs in two slices (the CUDA build slices at 4096).
IMAGES_PER_LAUNCH = 2

pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler")


class EmulatorError(RuntimeError):
    pass


def build(extra_flags=()) -> Path:
    flags = FLAGS + list(extra_flags)
    inputs = SOURCES + sorted(EMU.glob("*.h")) + sorted(KERNELS.glob("*.cuh")) + [KERNELS.parent / "splat2d.h"]
    digest = hashlib.sha256(" ".join([CXX, *flags]).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    lib = ROOT / "build" / "cuda_emu" / f"harness-{digest.hexdigest()[:16]}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([CXX, *flags, *map(str, SOURCES), "-o", str(tmp)], check=True)
        os.replace(tmp, lib)
    return lib


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i32, i64, u64, f32, err = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float, [
        ctypes.c_char_p, ctypes.c_int]
    common = [p, p, p, p, i64, i32, i32, i32, f32, i32, u64, i64]
    lib.emu_forward.argtypes = common + [p] + err
    lib.emu_backward.argtypes = common + [p, p, p, p] + err
    lib.emu_selftest.argtypes = [ctypes.c_char_p, i32, u64, p] + err
    return lib


@pytest.fixture(scope="session")
def emu() -> ctypes.CDLL:
    return load(build())


def call(fn, *args) -> None:
    error = ctypes.create_string_buffer(8192)
    if fn(*args, error, len(error)):
        raise EmulatorError(error.value.decode())


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def frame_args(xy, chol, rgb, mask, height, width, schedule):  # the arguments both entries share
    order, seed = SCHEDULES[schedule]
    return (*map(ptr, (xy, chol, rgb, mask)), xy.shape[0], xy.shape[1], height, width, CUTOFF, order, seed,
            IMAGES_PER_LAUNCH)


class _Emulated(torch.autograd.Function):
    """xy [B, N, 2], chol and rgb [B, N, 3], mask [B, N] -> image [B, 3, H, W], as gs_lightning._C does."""

    @staticmethod
    def forward(ctx, xy, chol, rgb, mask, height, width, lib, schedule):
        ctx.save_for_backward(xy, chol, rgb, mask)
        ctx.args = (height, width, lib, schedule)
        # NaN where the kernel must write: a pixel it skips stays NaN.
        image = torch.full((xy.shape[0], 3, height, width), float("nan"))
        call(lib.emu_forward, *frame_args(xy, chol, rgb, mask, height, width, schedule), ptr(image))
        return image

    @staticmethod
    def backward(ctx, grad_image):
        xy, chol, rgb, mask = ctx.saved_tensors
        height, width, lib, schedule = ctx.args
        grad_image = grad_image.contiguous()
        out = [torch.zeros_like(t) for t in (xy, chol, rgb)]
        call(lib.emu_backward, *frame_args(xy, chol, rgb, mask, height, width, schedule), ptr(grad_image), *map(ptr, out))
        return (*out, None, None, None, None, None)


def emulated(lib, schedule):
    """render(splats, height, width) on the emulated CUDA kernels, differentiable."""
    def render(s: Splats, height: int, width: int) -> torch.Tensor:
        tensors = (t.contiguous() for t in (s.xy, s.chol, s.rgb, s.mask))
        return _Emulated.apply(*tensors, height, width, lib, schedule)
    return render


def assert_grads_close(got, want):
    for g, w, name in zip(got, want, ("xy", "chol", "rgb")):
        scale = w.abs().amax().item() if w.numel() else 1.0
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * scale, msg=lambda m: f"grad {name} vs CPU: {m}")


def check_against_cpu(lib, schedule, s: Splats, height: int, width: int):
    """Emulated forward and backward vs the dense reference (inside compare_with_reference) and the CPU backend."""
    image, grads = compare_with_reference(s, height, width, emulated(lib, schedule))
    cpu_image, cpu_grads = compare_with_reference(s, height, width, "cpu")
    assert torch.equal(image, cpu_image), (
        f"forward differs from the CPU backend at {(image != cpu_image).sum().item()} values "
        f"(max |diff| {(image - cpu_image).abs().nan_to_num(float('inf')).max().item():.3g})")
    assert_grads_close(grads, cpu_grads)
    return image


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("case", [*CASES, "crowded_tile"])
def test_kernels_match_cpu_backend_and_reference(emu, case, schedule):
    batch, n, height, width, kwargs = CROWDED_TILE if case == "crowded_tile" else CASES[case]
    check_against_cpu(emu, schedule, random_splats(batch, n, height, width, **kwargs), height, width)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_image_with_no_splats_next_to_full_ones(emu, schedule):
    s = empty_first_image(random_splats(3, 50, 37, 53))
    image = check_against_cpu(emu, schedule, s, 37, 53)
    assert (image[0] == 0).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_padding_rows_are_never_read(emu, schedule):
    """NaN, zero covariance and inf in padded rows change no bit of the image or of the real rows' gradients."""
    s = random_splats(3, 40, 24, 40, keep=0.6, requires_grad=False)
    render = emulated(emu, schedule)
    out = {}
    for name, splats in (("clean", s), ("garbage", with_garbage_padding(s))):
        leaves = [t.clone().requires_grad_(True) for t in (splats.xy, splats.chol, splats.rgb)]
        image = render(Splats(*leaves, s.mask), 24, 40)
        out[name] = (image.detach(), *torch.autograd.grad(image.sum(), leaves))
    for clean, garbage in zip(out["clean"], out["garbage"]):
        assert torch.equal(clean, garbage)
    assert torch.equal(out["clean"][0], rasterize(s, 24, 40))


def test_slicing_does_not_change_a_bit(emu):
    """A batch launched image by image renders exactly what one launch does (the CUDA build slices at 4096)."""
    s = random_splats(3, 40, 37, 53, requires_grad=False)
    images = {}
    for per_launch in (1, 4096):
        image = torch.full((3, 3, 37, 53), float("nan"))
        args = list(frame_args(s.xy, s.chol, s.rgb, s.mask, 37, 53, "in_order"))
        args[-1] = per_launch
        call(emu.emu_forward, *args, ptr(image))
        images[per_launch] = image
    assert torch.equal(images[1], images[4096])


# --- the emulator itself -------------------------------------------------------------------------------

@pytest.fixture(scope="session", params=["switch", "ucontext"])
def emulator(request) -> ctypes.CDLL:
    """The emulator under both context switches: its own (x86-64) and ucontext's (every other machine)."""
    return load(build(["-DEMU_UCONTEXT"] if request.param == "ucontext" else []))


def selftest(lib, name: str, schedule: str, size: int = 4096) -> torch.Tensor:
    out = torch.zeros(size, dtype=torch.int32)
    call(lib.emu_selftest, name.encode(), *SCHEDULES[schedule], ptr(out))
    return out


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_collectives_compute_what_cuda_defines(emulator, schedule):
    out = selftest(emulator, "collectives", schedule)
    got = out[: 128 * 14].reshape(128, 14)
    for row, (b, t) in enumerate((b, t) for b in range(2) for t in range(64)):
        lane, base = t % 32, t - t % 32
        half = torch.tensor([0.5 * (t ^ 16)], dtype=torch.float32).view(torch.int32).item()
        want = [
            sum(1 << k for k in range(0, 32, 3)),  # ballot of lanes 0, 3, ..., 30
            1,  # any: lane 7
            0,  # all: lane 31 says no
            base + 5,
            t - 1 if lane >= 1 else t,
            t + 3 if lane % 8 + 3 < 8 else t,
            t ^ 1,
            sum(1 for k in range(64) if k % 3 == 0),
            1,
            1,
            bin(t).count("1"),
            half,
            base + (2 if lane < 16 else 18),
            1,  # each old value of the atomic counter was below 64
        ]
        assert got[row].tolist() == want, f"block {b} thread {t}"
    assert out[128 * 14: 128 * 14 + 2].tolist() == [64, 64]


def test_missing_barrier_gives_schedule_dependent_results(emulator):
    race = {name: selftest(emulator, "race", name)[:64] for name in SCHEDULES}
    fixed = {name: selftest(emulator, "race_fixed", name)[:64] for name in SCHEDULES}
    want = torch.tensor([(t + 1) % 64 + 1 for t in range(64)], dtype=torch.int32)
    assert all(torch.equal(v, want) for v in fixed.values())
    assert not torch.equal(race["in_order"], race["shuffled"])
    assert (race["in_order"][:63] == -1).all(), "reads of unwritten shared memory must see the poison"


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_shared_memory_is_poisoned_at_every_block(emulator, schedule):
    bits = selftest(emulator, "poison", schedule)[:64]
    assert bits.view(torch.float32).isnan().all()


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(
    "name, match",
    [
        ("barrier_after_exit", r"__syncthreads at .*selftest.cpp:\d+ reached by only part of the block: 32 of 64"),
        ("barrier_divergent", r"threads wait at different barriers"),
        ("collective_exited_lane", r"__shfl_down_sync .* names lane 31, which has exited"),
        ("collective_without_caller", r"with mask 0x1 does not name the calling lane [1-9]"),
        ("collective_elsewhere", r"deadlock: .* waits at __shfl_sync.*, but lane \d+ that it names waits at __shfl_sync"),
        ("shuffle_outside_mask", r"reads lane 20, which is not in its mask"),
        ("deadlock", r"deadlock: .* waits at __shfl_sync.*, but lane 0 that it names waits at __syncthreads"),
        ("atomic_outside", r"atomicAdd at 0x[0-9a-f]+ is outside every watched buffer"),
    ],
)
def test_misuse_is_reported(emulator, name, match, schedule):
    with pytest.raises(EmulatorError, match=match):
        selftest(emulator, name, schedule)
