"""Winograd F(4x4, 3x3) on the CPU (csrc/cpu/winograd/): forced by name
(convpool.backends.cpu.force("winograd_f4x4"), so no test reaches it through a threshold), it
matches a float64 reference within its documented bound and torch.nn.functional.conv2d; the
selector picks it where it pays and nowhere else; results are bitwise the same for 1 and 2
threads.

The documented bound (README, "accuracy"): for float32,
    max |y - y_exact| <= WINOGRAD_ERROR_FACTOR * eps * sqrt(9 * C_in) * max|x| * max|w|  (+ eps |b|)
for inputs and weights of both signs (the tests' data), where the direct GEMM path stays within
about 5 of the same unit (measured: Winograd up to ~125, 6 to 32 times the direct path's error)."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import convpool
from convpool import _C
from convpool.backends import cpu
from helpers import LAYOUTS, TOLERANCES, grads, leaf, make_tensor

HERE = os.path.dirname(os.path.abspath(__file__))
WINOGRAD_ERROR_FACTOR = 256


@pytest.fixture
def winograd_mode():
    """Sets the mode for one test and restores the previous one."""
    previous = _C._cpu_winograd_mode()
    yield _C._cpu_winograd_mode
    _C._cpu_winograd_mode(previous)


@pytest.fixture
def forced():
    """winograd_f4x4 forced for one test: conv2d and stride-1 conv2d_grad_input run it (a call it
    cannot run raises), the ops without such an entry keep their heuristic."""
    with cpu.force("winograd_f4x4"):
        yield


def algorithm(x_size, w_size, padding=1, stride=1, dilation=1, groups=1, op="fprop", dtype="float32"):
    return _C._cpu_conv2d_algorithm(op, dtype, tuple(x_size), tuple(w_size), stride, padding,
                                    dilation, groups)


def error_unit(x, w, b=None, dtype=torch.float32):
    """eps * sqrt(9 * C_in) * max|x| * max|w| (+ eps * max|b|): the unit of the documented bound."""
    eps = torch.finfo(dtype).eps
    unit = eps * math.sqrt(w.shape[1] * 9) * x.abs().max().item() * w.abs().max().item()
    if b is not None:
        unit += eps * b.abs().max().item()
    return unit


def check_against_references(out, x, w, b, padding):
    """`out` (float32) is within the bound of the float64 reference and of torch's float32 result."""
    ref64 = F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=padding)
    bound = WINOGRAD_ERROR_FACTOR * error_unit(x, w, b)
    assert out.shape == ref64.shape
    err64 = (out.double() - ref64).abs().max().item()
    assert err64 <= bound, (err64, bound)
    ref32 = F.conv2d(x.contiguous(), w, b, padding=padding)
    err32 = (out.double() - ref32.double()).abs().max().item()
    assert err32 <= bound, (err32, bound)


SHAPES = [
    # (batch, C_in, C_out, H, W): odd sizes give partial tiles; channel counts off the SIMD widths
    (1, 16, 16, 8, 8),
    (3, 5, 7, 9, 11),
    (2, 19, 33, 13, 7),
    (1, 40, 24, 6, 17),
    (2, 3, 1, 4, 4),
    (1, 8, 8, 1, 1),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_forced_matches_references(forced, layout, padding, shape, bias):
    n, ci, co, h, w_ = shape
    if h + 2 * padding < 3 or w_ + 2 * padding < 3:
        pytest.skip("kernel larger than the padded input")
    x = make_tensor((n, ci, h, w_), torch.float32, layout, seed=1)
    w = make_tensor((co, ci, 3, 3), torch.float32, seed=2)
    b = make_tensor((1, 1, 1, co), torch.float32, seed=3).flatten() if bias else None
    assert algorithm(x.shape, w.shape, padding) == "winograd_f4x4"
    out = convpool.conv2d(x, w, b, padding=padding)
    check_against_references(out, x, w, b, padding)
    torch_out = F.conv2d(x, w, b, padding=padding)
    cl = torch.channels_last
    assert out.is_contiguous(memory_format=cl) == torch_out.is_contiguous(memory_format=cl)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forced_long_reductions(forced, layout):
    """More input channels than one KC block of the micro-kernel (the 36 products accumulate over
    several blocks) and output channels spanning several panels with a partial last one."""
    x = make_tensor((2, 300, 9, 10), torch.float32, layout, seed=21)
    w = make_tensor((70, 300, 3, 3), torch.float32, seed=22)
    b = make_tensor((1, 1, 1, 70), torch.float32, seed=23).flatten()
    check_against_references(convpool.conv2d(x, w, b, padding=1), x, w, b, 1)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_view"])
def test_forced_gradients_through_autograd(forced, layout):
    """grad_input of a stride-1 3x3 conv is a Winograd conv too (flipped, transposed weight)."""
    n, ci, co, h, w_ = 2, 24, 40, 11, 14
    assert algorithm((n, ci, h, w_), (co, ci, 3, 3), op="dgrad") == "winograd_f4x4"
    x = make_tensor((n, ci, h, w_), torch.float32, layout, seed=4)
    w = make_tensor((co, ci, 3, 3), torch.float32, seed=5)
    b = make_tensor((1, 1, 1, co), torch.float32, seed=6).flatten()
    xs, ws, bs = leaf(x), leaf(w), leaf(b)
    got = grads(convpool.conv2d(xs, ws, bs, padding=1), [xs, ws, bs])
    xr, wr, br = leaf(x.double()), leaf(w.double()), leaf(b.double())
    want = grads(F.conv2d(xr, wr, br, padding=1), [xr, wr, br])
    # grad_input is a conv over the C_out channels of grad_output (values in [0, 1)): the bound
    # with C_out for C_in and max|grad_output| <= 1.
    unit = torch.finfo(torch.float32).eps * math.sqrt(co * 9) * w.abs().max().item()
    err = (got[0].double() - want[0]).abs().max().item()
    assert err <= WINOGRAD_ERROR_FACTOR * unit, (err, unit)
    torch.testing.assert_close(got[1].double(), want[1], **TOLERANCES[torch.float32])
    torch.testing.assert_close(got[2].double(), want[2], **TOLERANCES[torch.float32])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forced_half_types_use_float_tiles(forced, dtype, layout):
    x = make_tensor((2, 20, 10, 9), dtype, layout, seed=7)
    w = make_tensor((18, 20, 3, 3), dtype, seed=8)
    b = make_tensor((1, 1, 1, 18), dtype, seed=9).flatten()
    assert algorithm(x.shape, w.shape, dtype=str(dtype).split(".")[1]) == "winograd_f4x4"
    out = convpool.conv2d(x, w, b, padding=1)
    assert out.dtype == dtype
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    torch.testing.assert_close(out.double(), ref, **TOLERANCES[dtype])
    torch.testing.assert_close(out, F.conv2d(x.float(), w.float(), b.float(), padding=1).to(dtype),
                               **TOLERANCES[dtype])


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("where", ["input", "weight"])
def test_non_finite_values_give_torchs_pattern(forced, value, where):
    """Winograd would spread an inf over whole tiles as NaN; such calls are recomputed directly."""
    x = make_tensor((2, 16, 12, 13), torch.float32, seed=19)
    w = make_tensor((16, 16, 3, 3), torch.float32, seed=20)
    if where == "input":
        x[1, 3, 5, 6] = value
    else:
        w[4, 2, 1, 1] = value
    out = convpool.conv2d(x, w, padding=1)
    ref = F.conv2d(x, w, padding=1)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.isinf() & (out > 0), ref.isinf() & (ref > 0))
    assert torch.equal(out.isinf() & (out < 0), ref.isinf() & (ref < 0))
    finite = ref.isfinite()
    torch.testing.assert_close(out[finite], ref[finite], **TOLERANCES[torch.float32])


def test_float64_keeps_the_direct_path(winograd_mode):
    winograd_mode("1")  # the shorthand: preferred wherever it applies, which excludes float64
    x = make_tensor((2, 32, 20, 20), torch.float64, seed=10)
    w = make_tensor((32, 32, 3, 3), torch.float64, seed=11)
    assert algorithm(x.shape, w.shape, dtype="float64") == "gemm_im2col"
    torch.testing.assert_close(convpool.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1),
                               rtol=1e-12, atol=1e-12)
    with cpu.force("winograd_f4x4"):
        with pytest.raises(ValueError, match="applicable here: gemm_im2col"):
            convpool.conv2d(x, w, padding=1)


def test_error_is_a_bounded_multiple_of_the_direct_paths():
    """On a ResNet-sized layer: within the documented bound, and not far off the direct path."""
    x = make_tensor((2, 64, 28, 28), torch.float32, seed=12)
    w = make_tensor((64, 64, 3, 3), torch.float32, seed=13)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    errors = {}
    for name in ("gemm_im2col", "winograd_f4x4"):
        with cpu.force(name):
            errors[name] = (convpool.conv2d(x, w, padding=1).double() - ref).abs().max().item()
    unit = error_unit(x, w)
    assert errors["gemm_im2col"] <= 8 * unit
    assert errors["winograd_f4x4"] <= WINOGRAD_ERROR_FACTOR * unit
    assert errors["winograd_f4x4"] <= 64 * errors["gemm_im2col"]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("threads", [2, 3])
def test_bitwise_the_same_for_any_thread_count(forced, layout, threads):
    # 2 x 23 x 23 tiles: more than one tile block, so blocks and items are split across threads
    x = make_tensor((2, 16, 90, 90), torch.float32, layout, seed=14)
    w = make_tensor((24, 16, 3, 3), torch.float32, seed=15)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        xs = leaf(x)
        y1 = convpool.conv2d(xs, w, padding=1)
        (g1,) = grads(y1, [xs])
        torch.set_num_threads(threads)
        xs = leaf(x)
        y2 = convpool.conv2d(xs, w, padding=1)
        (g2,) = grads(y2, [xs])
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(y1, y2)
    assert torch.equal(g1, g2)


def test_selector_picks_winograd_where_it_pays(winograd_mode):
    winograd_mode("auto")
    resnet = ((8, 64, 56, 56), (64, 64, 3, 3))
    assert algorithm(*resnet) == "winograd_f4x4"
    assert algorithm((2, 64, 28, 28), (64, 64, 3, 3)) == "winograd_f4x4"
    assert algorithm(*resnet, op="dgrad") == "winograd_f4x4"
    assert algorithm((8, 256, 14, 14), (256, 256, 3, 3)) == "winograd_f4x4"
    assert algorithm(*resnet, dtype="float64") == "gemm_im2col"
    assert algorithm((8, 1, 56, 56), (64, 1, 3, 3)) == "direct_hwc"  # one input channel
    assert algorithm((8, 64, 2, 2), (64, 64, 3, 3)) == "direct_hwc"  # 2x2 output
    assert algorithm((1, 512, 7, 7), (512, 512, 3, 3)) == "gemm_im2col"  # weight transform > savings
    assert algorithm((4, 512, 7, 7), (512, 512, 3, 3)) == "gemm_im2col"
    assert algorithm((8, 512, 7, 7), (512, 512, 3, 3)) == "winograd_f4x4"  # ResNet-50's last 3x3
    assert algorithm((1, 256, 14, 14), (256, 256, 3, 3)) == "winograd_f4x4"
    assert algorithm((1, 64, 12, 12), (64, 64, 3, 3)) == "direct_hwc"  # 144 output pixels
    assert algorithm((1, 16, 32, 32), (1024, 16, 3, 3)) == "direct_hwc"  # short products, wide output
    assert algorithm((1, 16, 28, 28), (256, 16, 3, 3)) == "winograd_f4x4"
    # Not Winograd's shape: the direct kernel's short reductions (direct/dispatch.cpp)
    assert algorithm(*resnet, stride=2) == "direct_hwc"
    assert algorithm(*resnet, op="dgrad", stride=2) == "direct_hwc"
    assert algorithm(*resnet, dilation=2) == "direct_hwc"
    assert algorithm((8, 64, 56, 56), (64, 32, 3, 3), groups=2) == "direct_hwc"
    assert algorithm((8, 64, 56, 56), (64, 64, 5, 5)) == "gemm_im2col"
    winograd_mode("0")
    assert algorithm(*resnet) == "direct_hwc"
    winograd_mode("1")
    assert algorithm((1, 1, 2, 2), (1, 1, 3, 3)) == "winograd_f4x4"
    assert algorithm(*resnet, stride=2) == "direct_hwc"  # forcing never applies it outside its shape


def test_parity_on_a_resnet_layer(winograd_mode):
    """Forced, and as the heuristic (auto mode) runs it, whatever it selects there."""
    winograd_mode("auto")
    x = make_tensor((2, 64, 28, 28), torch.float32, "channels_last", seed=16)
    w = make_tensor((64, 64, 3, 3), torch.float32, seed=17)
    b = make_tensor((1, 1, 1, 64), torch.float32, seed=18).flatten()
    with cpu.force("winograd_f4x4"):
        check_against_references(convpool.conv2d(x, w, b, padding=1), x, w, b, 1)
    check_against_references(convpool.conv2d(x, w, b, padding=1), x, w, b, 1)


def test_mode_setter_rejects_unknown_values(winograd_mode):
    with pytest.raises(ValueError, match="CONVPOOL_CPU_WINOGRAD"):
        winograd_mode("sometimes")
    assert winograd_mode() in ("0", "1", "auto")


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), cwd=HERE,
                          capture_output=True, text=True, timeout=600)


def test_environment_variable_sets_the_initial_mode():
    code = "from convpool import _C; print(_C._cpu_winograd_mode())"
    for value in ("0", "1", "auto"):
        proc = run_python(code, CONVPOOL_CPU_WINOGRAD=value)
        assert proc.returncode == 0 and proc.stdout.strip() == value, proc.stderr
    proc = run_python(code, CONVPOOL_CPU_WINOGRAD="fast")
    assert proc.returncode != 0 and "CONVPOOL_CPU_WINOGRAD" in proc.stderr


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_other_isas_subprocess(isa):
    """The AVX2 (6-row register tile, 16-wide panels) and portable variants, in a process that
    forces them."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-k", "not subprocess", os.path.join(HERE, "test_winograd.py")],
                          env=dict(os.environ, CONVPOOL_CPU_ISA=isa), cwd=HERE,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
