"""The CUDA kernels on a real GPU: the same parity cases as the emulated suite
(tests/test_cuda_emulated.py), plus what only a GPU can show: streams, grid limits on large shapes.
Skipped without a GPU or without a CUDA build of convpool."""
import pytest
import torch
import torch.nn.functional as F

import convpool

import cuda_cases as cc


def _has_cuda_kernels():
    if not torch.cuda.is_available():
        return False
    try:
        convpool.conv2d(torch.zeros(1, 1, 1, 1, device="cuda"), torch.zeros(1, 1, 1, 1, device="cuda"))
        return True
    except (RuntimeError, NotImplementedError):
        return False


pytestmark = pytest.mark.skipif(not _has_cuda_kernels(),
                                reason="no GPU, or convpool built without its CUDA kernels")


@pytest.mark.parametrize("layout", cc.LAYOUTS)
@pytest.mark.parametrize("precision", list(cc.PRECISIONS))
@pytest.mark.parametrize("case", list(cc.CONV_CASES))
def test_conv2d(case, precision, layout):
    cc.check_conv(case, precision, layout, device="cuda")


@pytest.mark.parametrize("layout", cc.LAYOUTS)
@pytest.mark.parametrize("precision", list(cc.PRECISIONS))
@pytest.mark.parametrize("case", list(cc.TRANSPOSE_CASES))
def test_conv_transpose2d(case, precision, layout):
    cc.check_transpose(case, precision, layout, device="cuda")


@pytest.mark.parametrize("layout", cc.LAYOUTS)
@pytest.mark.parametrize("dtype", cc.DTYPES, ids=str)
@pytest.mark.parametrize("case", list(cc.POOL_CASES))
def test_max_pool2d(case, dtype, layout):
    cc.check_pool(case, dtype, layout, device="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_backward_is_bitwise_deterministic(dtype):
    x, w, b, args = cc.make_conv("tiles", dtype, "nchw", device="cuda")
    first = cc.conv_results(x, w, b, args, convpool.conv2d)
    for _ in range(3):
        for a, c in zip(first, cc.conv_results(x, w, b, args, convpool.conv2d)):
            assert torch.equal(a, c)


def test_runs_on_the_current_stream():
    x, w, b, args = cc.make_conv("tiles", torch.float32, "nchw", device="cuda")
    expected = convpool.conv2d(x, w, b, **args)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = convpool.conv2d(x, w, b, **args)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(got, expected)


def test_grid_limits_large_shapes():
    # More than 65535 groups (grid z of the wgrad GEMM) and pooling planes beyond a 65535-block y.
    x = torch.randn(2, 70000, 3, 3, device="cuda", requires_grad=True)
    w = torch.randn(70000, 1, 2, 2, device="cuda", requires_grad=True)
    y = convpool.conv2d(x, w, groups=70000)
    gx, gw = torch.autograd.grad(y, [x, w], torch.ones_like(y))
    ry = F.conv2d(x, w, groups=70000)
    rgx, rgw = torch.autograd.grad(ry, [x, w], torch.ones_like(ry))
    torch.testing.assert_close(y, ry)
    torch.testing.assert_close(gx, rgx)
    torch.testing.assert_close(gw, rgw)
    p = torch.randn(1, 3, 700, 700, device="cuda")
    v, i = convpool.max_pool2d(p, 3, 1, 1, return_indices=True)
    rv, ri = F.max_pool2d(p, 3, 1, 1, return_indices=True)
    assert torch.equal(v, rv) and torch.equal(i, ri)
