"""convpool.conv2d against torch.nn.functional.conv2d: values, gradients, layouts, dtypes."""
import pytest
import torch
import torch.nn.functional as F

import convpool
from helpers import LAYOUTS, TOLERANCES, grads, leaf, make_tensor

# (N, C_in, H, W, C_out, kH, kW, stride, padding, dilation, groups, bias)
CASES = [
    (2, 3, 7, 9, 4, 3, 3, 1, 0, 1, 1, True),
    (2, 4, 8, 8, 6, 3, 3, 2, 1, 1, 2, True),
    (1, 6, 11, 7, 6, 3, 3, 1, 1, 1, 6, False),  # depthwise
    (1, 4, 9, 7, 8, 3, 3, 2, 1, 1, 4, True),  # depthwise, channel multiplier 2
    (3, 4, 10, 10, 8, 1, 1, 1, 0, 1, 1, True),  # 1x1
    (2, 5, 9, 8, 3, 1, 1, 2, 0, 1, 1, False),  # 1x1 strided
    (2, 3, 13, 12, 5, 5, 3, (2, 3), (2, 1), (1, 2), 1, True),
    (2, 4, 9, 9, 4, 2, 2, 1, "same", 1, 2, True),  # even kernel: asymmetric 'same'
    (2, 4, 9, 10, 4, 3, 4, 1, "same", 2, 1, False),
    (2, 4, 9, 9, 4, 3, 3, 1, "valid", 1, 1, True),
    (1, 3, 5, 5, 4, 5, 5, 1, 0, 1, 1, True),  # kernel covers the whole input
    (2, 8, 7, 7, 12, 3, 3, 1, 1, 1, 4, True),  # groups
    (2, 3, 16, 15, 4, 7, 7, 2, 3, 1, 1, False),  # 7x7 stem
    (2, 2, 8, 7, 3, 3, 3, 3, 0, 1, 1, True),  # stride > kernel: input rows no window covers
    (1, 2, 6, 6, 2, 3, 3, 1, 4, 3, 1, True),  # padding larger than the kernel
    (2, 3, 1, 1, 4, 1, 1, 1, 0, 1, 1, True),  # 1x1 image
    (2, 5, 13, 21, 10, 3, 3, 2, 1, 2, 5, True),  # depthwise, dilated, strided, multiplier 2
    (1, 3, 8, 19, 3, 2, 5, (1, 3), (1, 2), 1, 3, False),  # depthwise, rectangular kernel
    (2, 4, 6, 6, 4, 7, 7, 1, 3, 1, 4, True),  # depthwise, kernel wider than padding reaches
]


def _case_id(case):
    return "x".join(map(str, case[:4])) + f"-o{case[4]}k{case[5]}{case[6]}s{case[7]}p{case[8]}d{case[9]}g{case[10]}b{int(case[11])}"


def _run(case, dtype, layout, weight_layout="contiguous"):
    n, c, h, w, co, kh, kw, stride, padding, dilation, groups, has_bias = case
    x = leaf(make_tensor((n, c, h, w), dtype, layout, seed=1))
    weight = leaf(make_tensor((co, c // groups, kh, kw), dtype, weight_layout, seed=2))
    bias = leaf(make_tensor((1, 1, 1, co), dtype, seed=3).flatten()) if has_bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ours = convpool.conv2d(x, weight, bias, **kwargs)
    ref = F.conv2d(x, weight, bias, **kwargs)
    return x, weight, bias, ours, ref


def _check(case, dtype, layout, weight_layout="contiguous", tol=None):
    tol = tol or TOLERANCES[dtype]
    x, weight, bias, ours, ref = _run(case, dtype, layout, weight_layout)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, **tol)
    assert ours.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(
        memory_format=torch.channels_last)
    assert ours.is_contiguous() == ref.is_contiguous()
    if ours.numel() == 0 and x.numel() == 0:
        return
    for a, b in zip(grads(ours, (x, weight, bias)), grads(ref, (x, weight, bias))):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torch(case, dtype, layout):
    _check(case, dtype, layout)


@pytest.mark.parametrize("case", CASES[:8], ids=_case_id)
@pytest.mark.parametrize("weight_layout", ["channels_last", "strided_view"])
def test_weight_layouts(case, weight_layout):
    _check(case, torch.float64, "contiguous", weight_layout)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_reduced_precision_close_to_float64(case, dtype, layout):
    """Half/bfloat16 accumulate in float: compare with a float64 run on the same rounded inputs."""
    x, weight, bias, ours, _ = _run(case, dtype, layout)
    ref = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                   stride=case[7], padding=case[8], dilation=case[9], groups=case[10])
    assert ours.dtype == dtype
    # One rounding of the float32 result to the storage type.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(ours.double(), ref, rtol=eps, atol=eps * max(1.0, ref.abs().max().item()))
    if ours.numel():
        ours_grads = grads(ours, (x, weight, bias))
        ref_grads = grads(ref.to(dtype), (x, weight, bias))  # torch in the same dtype
        for a, b in zip(ours_grads, ref_grads):
            scale = max(1.0, b.double().abs().max().item())
            torch.testing.assert_close(a.double(), b.double(), rtol=4 * eps, atol=4 * eps * scale)


def test_unbatched_input():
    x = make_tensor((1, 3, 9, 8), torch.float64).squeeze(0)
    weight = make_tensor((4, 3, 3, 3), torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    for padding in (1, "same", "valid"):
        torch.testing.assert_close(convpool.conv2d(x, weight, bias, padding=padding),
                                   F.conv2d(x, weight, bias, padding=padding))


def test_empty_batch_gradients_are_zero():
    x = leaf(torch.randn(0, 3, 6, 6, dtype=torch.float64))
    weight = leaf(torch.randn(4, 3, 3, 3, dtype=torch.float64))
    bias = leaf(torch.randn(4, dtype=torch.float64))
    out = convpool.conv2d(x, weight, bias, padding=1)
    assert out.shape == (0, 4, 6, 6)
    gx, gw, gb = torch.autograd.grad(out.sum(), (x, weight, bias))
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gb, torch.zeros_like(gb))


def test_input_without_channels_matches_torch_shape():
    x = torch.randn(2, 0, 8, 8)
    weight = torch.randn(4, 0, 3, 3)
    bias = torch.randn(4)
    assert convpool.conv2d(x, weight, bias).shape == F.conv2d(x, weight, bias).shape


def test_same_padding_even_kernel_warns_like_torch():
    x, weight = torch.randn(1, 2, 6, 6), torch.randn(2, 2, 2, 2)
    with pytest.warns(UserWarning, match="zero-padded copy"):
        convpool.conv2d(x, weight, padding="same")


def test_classic_kernels_on_an_image():
    """The lecture's kernels (blur, sharpen, edge) on a structured image, per channel."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    image = torch.stack([torch.sin(xx / 3), torch.cos(yy / 5), (xx + yy) / 72]).unsqueeze(0).double()
    gauss = torch.tensor([[1, 4, 7, 4, 1], [4, 16, 26, 16, 4], [7, 26, 41, 26, 7],
                          [4, 16, 26, 16, 4], [1, 4, 7, 4, 1]], dtype=torch.float64) / 273
    sharpen = torch.tensor([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=torch.float64)
    edge = torch.tensor([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=torch.float64)
    for kernel in (gauss, sharpen, edge):
        weight = kernel.expand(3, 1, *kernel.shape).contiguous()
        out = convpool.conv2d(image, weight, padding="same", groups=3)
        torch.testing.assert_close(out, F.conv2d(image, weight, padding="same", groups=3))
    # Edge detection of a constant image is zero away from the border.
    flat = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    assert convpool.conv2d(flat, edge.view(1, 1, 3, 3)).abs().max() == 0


def test_deterministic():
    x = leaf(torch.randn(4, 8, 15, 15))
    weight = leaf(torch.randn(16, 4, 3, 3))
    runs = []
    for _ in range(2):
        out = convpool.conv2d(x, weight, None, stride=2, padding=1, groups=2)
        runs.append((out, *torch.autograd.grad(out, (x, weight), torch.ones_like(out))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_large_tiled_problem_matches_torch():
    """Bigger than one workspace tile: several tiles and image blocks."""
    x = leaf(torch.randn(3, 16, 70, 66, dtype=torch.float64))
    weight = leaf(torch.randn(24, 16, 3, 3, dtype=torch.float64))
    ours = convpool.conv2d(x, weight, None, padding=1)
    ref = F.conv2d(x, weight, None, padding=1)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads(ours, (x, weight)), grads(ref, (x, weight))):
        torch.testing.assert_close(a, b)


def test_torch_channels_last_crash_case():
    """PyTorch 2.14.1 segfaults on this channels_last grouped, dilated, padded convolution (found
    by the hypothesis properties). convpool computes it; the reference is torch on NCHW."""
    x = leaf(torch.randn(1, 6, 3, 1, dtype=torch.float64).contiguous(memory_format=torch.channels_last))
    weight = leaf(torch.randn(4, 3, 4, 1, dtype=torch.float64))
    bias = leaf(torch.randn(4, dtype=torch.float64))
    kwargs = dict(stride=2, padding=(2, 1), dilation=2, groups=2)
    ours = convpool.conv2d(x, weight, bias, **kwargs)
    ref = F.conv2d(x.contiguous(), weight, bias, **kwargs)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads(ours, (x, weight, bias)), grads(ref, (x, weight, bias))):
        torch.testing.assert_close(a, b)
