"""gradcheck and gradgradcheck (double backward) in float64, through every op's formula."""
import pytest
import torch

import convpool
from helpers import leaf

CONV_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=2),
    dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=1),
    dict(stride=1, padding="same", dilation=1, groups=3),
    dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=6),  # depthwise
]


@pytest.mark.parametrize("kwargs", CONV_CASES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_gradcheck_and_gradgradcheck(kwargs, with_bias, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 6, 5, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 6 // kwargs["groups"], 3, 2, dtype=torch.float64, generator=g)
    bias = torch.randn(weight.shape[0], dtype=torch.float64, generator=g) if with_bias else None
    inputs = (leaf(x), leaf(weight)) + ((leaf(bias),) if with_bias else ())

    def fn(x, weight, bias=None):
        return convpool.conv2d(x, weight, bias, **kwargs)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_conv2d_unbatched_gradgradcheck():
    x = leaf(torch.randn(2, 5, 4, dtype=torch.float64))
    weight = leaf(torch.randn(3, 2, 2, 2, dtype=torch.float64))
    bias = leaf(torch.randn(3, dtype=torch.float64))
    fn = lambda x, w, b: convpool.conv2d(x, w, b, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    assert torch.autograd.gradgradcheck(fn, (x, weight, bias))


TRANSPOSE_CASES = [
    dict(stride=1, padding=0, output_padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, output_padding=1, dilation=1, groups=2),
    dict(stride=(2, 1), padding=(0, 1), output_padding=(1, 0), dilation=(1, 2), groups=1),
    dict(stride=1, padding=1, output_padding=(2, 1), dilation=(3, 2), groups=4),  # op >= stride
]


@pytest.mark.parametrize("kwargs", TRANSPOSE_CASES)
@pytest.mark.parametrize("with_bias, channels_last", [(True, False), (False, True)])
def test_conv_transpose2d_gradcheck_and_gradgradcheck(kwargs, with_bias, channels_last):
    g = torch.Generator().manual_seed(0)
    # Smaller than conv2d's: the output, which the numerical Jacobians walk, is the larger side.
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 4 // kwargs["groups"], 3, 2, dtype=torch.float64, generator=g)
    out_channels = weight.shape[1] * kwargs["groups"]
    bias = torch.randn(out_channels, dtype=torch.float64, generator=g) if with_bias else None
    inputs = (leaf(x), leaf(weight)) + ((leaf(bias),) if with_bias else ())

    def fn(x, weight, bias=None):
        return convpool.conv_transpose2d(x, weight, bias, **kwargs)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_conv_transpose2d_unbatched_gradgradcheck():
    x = leaf(torch.randn(2, 4, 3, dtype=torch.float64))
    weight = leaf(torch.randn(2, 3, 3, 2, dtype=torch.float64))
    bias = leaf(torch.randn(3, dtype=torch.float64))
    fn = lambda x, w, b: convpool.conv_transpose2d(x, w, b, stride=2, output_padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    assert torch.autograd.gradgradcheck(fn, (x, weight, bias))


POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=1, padding=(1, 0), dilation=(1, 2)),
]


@pytest.mark.parametrize("kwargs", POOL_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_gradcheck_and_gradgradcheck(kwargs, channels_last):
    # Distinct values, so the maximum is unique and the function differentiable at the point.
    x = torch.randperm(2 * 3 * 7 * 6, generator=torch.Generator().manual_seed(0)).double().view(2, 3, 7, 6) / 10
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fn = lambda x: convpool.max_pool2d(x, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (leaf(x),))
    assert torch.autograd.gradgradcheck(fn, (leaf(x),))
