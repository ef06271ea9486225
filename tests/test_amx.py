"""bfloat16 convolution on AMX tiles (csrc/cpu/amx/, the registry's "amx_bf16": fprop, wgrad and
stride-1 dgrad): forced by name, it matches torch's float64 result rounded to bfloat16 over the geometry its driver treats apart
(stride phases, dilation, groups, channel counts that are not a multiple of 32, virtual pixels
past the output's width, inputs read in place, chunks of images), in both layouts, with the
non-finite pattern of torch's; the heuristic runs it for dense bfloat16 convs; results do not
depend on the thread count. Skipped on a CPU without AMX (the registry test says which entries
it could not run)."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import convpool
from convpool.backends import cpu
from helpers import make_tensor

HERE = os.path.dirname(os.path.abspath(__file__))


pytestmark = pytest.mark.skipif("amx" not in cpu.isas(), reason="this CPU has no AMX-BF16 (or Linux refused it)")

# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups)
CASES = [
    (2, 64, 14, 14, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),     # one step of 32, virtual columns
    (3, 64, 9, 11, 96, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # read in place (all but the last image)
    (3, 32, 10, 12, 40, (3, 2), (1, 1), (0, 0), (2, 1), 1),     # in place with taps past the block
    (2, 5, 13, 11, 7, (3, 3), (2, 2), (1, 1), (1, 1), 1),       # 5 channels padded to 32; 4 phases
    (1, 8, 17, 16, 12, (2, 3), (3, 2), (1, 2), (2, 1), 2),      # groups, stride 3 x 2, dilation
    (2, 48, 7, 7, 33, (3, 3), (1, 1), (1, 1), (1, 1), 3),       # odd channels per group, 11 out per group
    (1, 3, 40, 40, 64, (7, 7), (2, 2), (3, 3), (1, 1), 1),      # a first layer
    (4, 96, 5, 6, 160, (1, 1), (2, 2), (0, 0), (1, 1), 1),      # 1x1 stride 2, 5 channel blocks
]


def reference(x, w, b, stride, padding, dilation, groups):
    y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride, padding,
                 dilation, groups)
    return y.to(torch.bfloat16)


def case_tensors(case, layout, seed):
    """Input and weight of a CASES entry (seeds `seed`, `seed + 1`), and its conv arguments."""
    n, c, h, w_, k, kernel, stride, padding, dilation, groups = case
    x = make_tensor((n, c, h, w_), torch.bfloat16, layout, seed=seed)
    w = make_tensor((k, c // groups) + kernel, torch.bfloat16, seed=seed + 1)
    return x, w, (stride, padding, dilation, groups)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_fprop_matches_torch(case, layout):
    x, w, (stride, padding, dilation, groups) = case_tensors(case, layout, seed=1)
    c, k = x.shape[1], w.shape[0]
    b = make_tensor((1, 1, 1, k), torch.bfloat16, seed=3).flatten()
    with cpu.force("amx_bf16"):
        assert cpu.selected("conv2d", x, w, b, list(stride), list(padding), list(dilation), groups) == "amx_bf16"
        y = convpool.conv2d(x, w, b, stride, padding, dilation, groups)
    expected = reference(x, w, b, stride, padding, dilation, groups)
    assert y.dtype == torch.bfloat16 and y.shape == expected.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    # float sums of exact bf16 products, rounded once: within one bf16 rounding of the exact
    # result plus the float sum's error.
    torch.testing.assert_close(y.double(), expected.double(), rtol=8e-3, atol=4e-3 * c)
    torch.testing.assert_close(y, F.conv2d(x, w, b, stride, padding, dilation, groups),
                               rtol=1.6e-2, atol=4e-3 * c)


def test_chunks_of_images():
    """More images than one copy chunk holds (16 MiB): chunks after the first reuse the copy."""
    x = make_tensor((5, 64, 100, 100), torch.bfloat16, "channels_last", seed=4)[:, :, 1:-1, 1:-1]
    w = make_tensor((32, 64, 3, 3), torch.bfloat16, seed=5)
    with cpu.force("amx_bf16"):
        y = convpool.conv2d(x, w, None, 1, 1)
    torch.testing.assert_close(y.double(), reference(x, w, None, 1, 1, 1, 1).double(),
                               rtol=8e-3, atol=0.3)


# (N, C_in, H, W, C_out, kernel, padding, dilation, groups) of the forward conv; stride 1
DGRAD_CASES = [
    (2, 24, 9, 10, 40, (3, 3), (1, 1), (1, 1), 1),
    (1, 8, 17, 16, 12, (2, 3), (1, 2), (2, 1), 2),     # groups, dilation, asymmetric padding
    (3, 48, 6, 7, 64, (1, 1), (0, 0), (1, 1), 1),      # grad_output read in place (64 channels)
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", DGRAD_CASES, ids=str)
def test_dgrad_matches_torch(case, layout):
    n, c, h, w_, k, kernel, padding, dilation, groups = case
    w = make_tensor((k, c // groups) + kernel, torch.bfloat16, seed=7)
    xd = torch.zeros(n, c, h, w_, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(xd, w.double(), None, 1, padding, dilation, groups)
    go = make_tensor(tuple(out.shape), torch.bfloat16, layout, seed=6)
    out.backward(go.double())
    args = ([n, c, h, w_], [1, 1], list(padding), list(dilation), groups)
    with cpu.force("amx_bf16"):
        gi = torch.ops.convpool.conv2d_grad_input(go, w, *args)
    torch.testing.assert_close(gi.double(), xd.grad.to(torch.bfloat16).double(), rtol=8e-3,
                               atol=4e-3 * k)


def test_wgrad_over_chunks_of_images():
    """Images in several chunks (16 MiB of copy and pairs each): sums carried across them."""
    x = make_tensor((5, 64, 98, 98), torch.bfloat16, "channels_last", seed=17)
    w = torch.zeros(32, 64, 3, 3, dtype=torch.bfloat16)
    wd = w.double().requires_grad_(True)
    out = F.conv2d(x.double(), wd, None, 1, 1)
    go = make_tensor(tuple(out.shape), torch.bfloat16, "channels_last", seed=18)
    out.backward(go.double())
    with cpu.force("amx_bf16"):
        gw = torch.ops.convpool.conv2d_grad_weight(go, x, list(w.shape), [1, 1], [1, 1], [1, 1], 1)
    torch.testing.assert_close(gw.double(), wd.grad.to(torch.bfloat16).double(), rtol=8e-3, atol=2.0)


def test_folded_runs_of_several_steps():
    """16 channels x 3 taps = 48 values: two steps per kernel row (the second half zeros)."""
    x = make_tensor((2, 16, 11, 13), torch.bfloat16, "channels_last", seed=19)
    w = make_tensor((32, 16, 3, 3), torch.bfloat16, seed=20)
    with cpu.force("amx_bf16"):
        y = convpool.conv2d(x, w, None, 1, 1)
    torch.testing.assert_close(y.double(), reference(x, w, None, 1, 1, 1, 1).double(), rtol=8e-3,
                               atol=0.07)


def test_not_applicable_where_padding_would_dominate():
    """Depthwise (one channel a group, padded to 32) never; autotuning would run it otherwise."""
    x = torch.zeros(1, 64, 8, 8, dtype=torch.bfloat16)
    dw = torch.zeros(64, 1, 3, 3, dtype=torch.bfloat16)
    assert "amx_bf16" not in cpu.algorithms("conv2d", x, dw, None, [1, 1], [1, 1], [1, 1], 64)
    # one channel along a dilated row: 32x, still applicable; two groups of one channel: depthwise
    x1 = torch.zeros(1, 1, 8, 8, dtype=torch.bfloat16)
    assert "amx_bf16" in cpu.algorithms("conv2d", x1, torch.zeros(8, 1, 3, 3, dtype=torch.bfloat16),
                                        None, [1, 1], [2, 2], [1, 2], 1)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_wgrad_matches_torch(case, layout):
    x, w, (stride, padding, dilation, groups) = case_tensors(case, layout, seed=10)
    wd = w.double().requires_grad_(True)
    out = F.conv2d(x.double(), wd, None, stride, padding, dilation, groups)
    go = make_tensor(tuple(out.shape), torch.bfloat16, layout, seed=12)
    out.backward(go.double())
    args = (go, x, list(w.shape), list(stride), list(padding), list(dilation), groups)
    with cpu.force("amx_bf16"):
        assert cpu.selected("conv2d_grad_weight", *args) == "amx_bf16"
        gw = torch.ops.convpool.conv2d_grad_weight(*args)
    pixels = out.shape[0] * out.shape[2] * out.shape[3]
    torch.testing.assert_close(gw.double(), wd.grad.to(torch.bfloat16).double(), rtol=8e-3,
                               atol=2e-3 * pixels ** 0.5)


def test_wgrad_with_non_finite_input_matches_torch():
    """The virtual pixels multiply input values by zero: an inf there must not make a NaN, so
    such an input runs the GEMM instead (the pattern then is torch's)."""
    x = make_tensor((2, 32, 8, 8), torch.bfloat16, "channels_last", seed=13)
    x[0, 4, 3, 7] = float("inf")   # read by the virtual columns of row 3 at the left taps
    x[1, 9, 0, 0] = float("nan")
    w = torch.zeros(16, 32, 3, 3, dtype=torch.bfloat16)
    go = make_tensor((2, 16, 8, 8), torch.bfloat16, "channels_last", seed=14)
    args = (go, x, list(w.shape), [1, 1], [1, 1], [1, 1], 1)
    with cpu.force("amx_bf16"):
        gw = torch.ops.convpool.conv2d_grad_weight(*args)
    wd = w.double().requires_grad_(True)
    F.conv2d(x.double(), wd, None, 1, 1).backward(go.double())
    assert torch.equal(gw.isnan(), wd.grad.isnan())
    assert torch.equal(gw.isinf(), wd.grad.isinf())
    finite = wd.grad.isfinite()
    torch.testing.assert_close(gw.double()[finite], wd.grad.to(torch.bfloat16).double()[finite],
                               rtol=8e-3, atol=0.1)


def test_non_finite_inputs_propagate_as_in_torch():
    """inf and NaN reach exactly the outputs whose window holds them (padding and the virtual
    columns read real neighbours but never feed a kept output)."""
    x = make_tensor((2, 36, 12, 12), torch.bfloat16, "channels_last", seed=8)
    x[0, 3, 5, 0] = float("inf")
    x[1, 35, 11, 11] = float("nan")
    x[1, 0, 0, 6] = float("-inf")
    w = make_tensor((20, 36, 3, 3), torch.bfloat16, seed=9).abs()
    with cpu.force("amx_bf16"):
        y = convpool.conv2d(x, w, None, 1, 1)
    expected = F.conv2d(x.double(), w.double(), None, 1, 1)
    assert torch.equal(y.isnan(), expected.isnan())
    assert torch.equal(y.isposinf(), expected.isposinf())
    assert torch.equal(y.isneginf(), expected.isneginf())


def test_folded_first_layer_with_non_finite_input_matches_torch():
    """Few input channels fold a kernel row's taps into one step: the pixels past a run are
    multiplied by zero weights, so an input holding inf or NaN takes the unfolded plan (whose
    pattern of non-finite outputs is torch's)."""
    x = make_tensor((2, 3, 20, 21), torch.bfloat16, "channels_last", seed=15)
    x[0, 1, 4, 9] = float("inf")
    x[1, 2, 13, 0] = float("nan")
    w = make_tensor((16, 3, 5, 5), torch.bfloat16, seed=16).abs()
    with cpu.force("amx_bf16"):
        y = convpool.conv2d(x, w, None, 2, 2)
        clean = convpool.conv2d(x.nan_to_num(posinf=0.0), w, None, 2, 2)
    expected = F.conv2d(x.double(), w.double(), None, 2, 2)
    assert torch.equal(y.isnan(), expected.isnan()) and torch.equal(y.isinf(), expected.isinf())
    torch.testing.assert_close(clean.double(), F.conv2d(x.nan_to_num(posinf=0.0).double(), w.double(), None, 2, 2)
                               .to(torch.bfloat16).double(), rtol=8e-3, atol=0.05)


def test_heuristic_runs_it_for_dense_bf16():
    x = torch.zeros(2, 64, 14, 14, dtype=torch.bfloat16)
    w = torch.zeros(64, 64, 3, 3, dtype=torch.bfloat16)
    args = ([1, 1], [1, 1], [1, 1], 1)
    assert cpu.selected("conv2d", x, w, None, *args) == "amx_bf16"
    assert cpu.selected("conv2d", x.float(), w.float(), None, *args) != "amx_bf16"
    depthwise = torch.zeros(64, 1, 3, 3, dtype=torch.bfloat16)
    assert cpu.selected("conv2d", x, depthwise, None, [1, 1], [1, 1], [1, 1], 64) != "amx_bf16"
    # one input channel: a kernel row's taps fold into one step, so AMX runs it ...
    speech = torch.zeros(1, 1, 40, 60, dtype=torch.bfloat16), torch.zeros(32, 1, 5, 20, dtype=torch.bfloat16)
    assert cpu.selected("conv2d", *speech, None, [2, 2], [0, 0], [1, 1], 1) == "amx_bf16"
    # ... but not along a dilated row, where each tap would be one channel padded to 32
    assert cpu.selected("conv2d", *speech, None, [2, 2], [0, 0], [1, 2], 1) != "amx_bf16"
    rgb = torch.zeros(1, 3, 40, 40, dtype=torch.bfloat16), torch.zeros(64, 3, 7, 7, dtype=torch.bfloat16)
    assert cpu.selected("conv2d", *rgb, None, [2, 2], [3, 3], [1, 1], 1) == "amx_bf16"


def test_same_result_for_one_and_two_threads(tmp_path):
    code = (
        "import torch, convpool\n"
        "from convpool.backends import cpu\n"
        "torch.set_num_threads({})\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(3, 96, 15, 15, generator=g).bfloat16()\n"
        "w = torch.randn(80, 96, 3, 3, generator=g).bfloat16()\n"
        "go = torch.randn(3, 80, 8, 8, generator=g).bfloat16()\n"
        "with cpu.force('amx_bf16'):\n"
        "    y = convpool.conv2d(x, w, None, 2, 1)\n"
        "    gw = torch.ops.convpool.conv2d_grad_weight(go, x, [80, 96, 3, 3], [2, 2], [1, 1], [1, 1], 1)\n"
        "torch.save((y, gw), {!r})\n")
    outs = []
    for threads in (1, 2):
        path = str(tmp_path / f"y{threads}.pt")
        subprocess.run([sys.executable, "-c", code.format(threads, path)], check=True, cwd=HERE,
                       timeout=300)
        outs.append(torch.load(path))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
