"""Mutants of the CPU backend's SIMD kernels and its exp (issue 14), for tests/test_render.py."""
SPLAT = "extensions/splat2d/splat2d.h"
TILES = "extensions/splat2d/cpu/tiles.cpp"
SIMD = "extensions/splat2d/cpu/simd.h"
CPU = "extensions/splat2d/cpu/splat2d_cpu.cpp"
TESTS = ["tests/test_render.py"]

MUTANTS = [
    # The exp.
    {"name": "exp-no-cody-waite-low-part", "path": SPLAT, "old": "const F r = (x - n * kLn2Hi) - n * kLn2Lo;",
     "new": "const F r = x - n * kLn2Hi;", "tests": ["tests/test_render.py::test_gaussian_weight_is_within_1_08_ulp_of_exp"],
     "why": "r keeps ln2's rounding error times n: the weight is off by up to 3% at s2 = 174"},
    {"name": "exp-degree-3", "path": SPLAT, "old": "+ r2 * ((kExpQ2 + kExpQ3 * r) + r2 * kExpQ4);",
     "new": "+ r2 * (kExpQ2 + kExpQ3 * r);", "tests": ["tests/test_render.py::test_gaussian_weight_is_within_1_08_ulp_of_exp"],
     "why": "a polynomial a degree short: tens of ulp, still inside the render's tolerance"},
    # The kernels.
    {"name": "render-cutoff-unmasked", "path": TILES,
     "old": "const F w = where_le(s2, cutoff, gaussian_weight_in_range(s2));\n    float* a",
     "new": "const F w = gaussian_weight_in_range(s2);\n    float* a", "tests": TESTS,
     "why": "the forward adds the lanes beyond the cut-off of every row chunk it visits"},
    {"name": "grad-cutoff-unmasked", "path": TILES,
     "old": "const F w = where_le(s2, cutoff, gaussian_weight_in_range(s2));\n    const float* g",
     "new": "const F w = gaussian_weight_in_range(s2);\n    const float* g", "tests": TESTS,
     "why": "the backward adds the gradient of pairs beyond the cut-off"},
    {"name": "half-chunk-upper-offset", "path": TILES, "old": "span.template run<H, H>(c);",
     "new": "span.template run<H, 0>(c);", "tests": TESTS,
     "why": "a box in the right half of a 16-lane chunk is evaluated at the left half's pixels (avx512)"},
    {"name": "lane-tree-pairs-neighbours", "path": SIMD, "old": "half[c] = chunks[c] + chunks[c + C / 2];",
     "new": "half[c] = chunks[2 * c] + chunks[2 * c + 1];", "tests": TESTS,
     "why": "the scalar and portable paths sum their lanes in another order than the wide paths: other bits"},
    {"name": "simd-env-ignored", "path": CPU, "old": "const char* want = std::getenv(kSimdEnv);",
     "new": "const char* want = nullptr;", "tests": TESTS,
     "why": "GS_LIGHTNING_SIMD is not read: the tests of every path test the fastest one only"},
    {"name": "l2-residual-gradient-halved", "path": CPU, "old": "dimg[from + j] = 2.0f * r / count;",
     "new": "dimg[from + j] = r / count;", "tests": TESTS,
     "why": "the fused L2 loss back-propagates half of d mean(r^2) / d render"},
]
