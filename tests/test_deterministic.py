"""torch.use_deterministic_algorithms(True): every convpool op runs (no error, no warning, also
with warn_only=True) and is bitwise reproducible, forward, backward and double backward."""
import warnings

import pytest
import torch
from torch import nn

import convpool


@pytest.fixture(params=[False, True], ids=["strict", "warn_only"])
def deterministic_mode(request):
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=request.param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a nondeterminism warning fails the test
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def make_net():
    # Overlapping pool windows (their backward adds into shared inputs), grouped and strided
    # convs with bias: the cases where a parallel kernel would be tempted to use atomics.
    return convpool.convert(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4), nn.Tanh(),
        nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(8, 4, 1)))


def all_gradients(device):
    """Output, first-order gradients (input and parameters) and the gradient of their squared
    norm (double backward through every op's backward)."""
    torch.manual_seed(0)
    net = make_net().to(device)
    x = torch.randn(4, 3, 17, 15, device=device, requires_grad=True)
    inputs = [x, *net.parameters()]
    out = net(x)
    first = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    second = torch.autograd.grad(sum(g.square().sum() for g in first), inputs)
    return [out.detach(), *(g.detach() for g in first), *second]


def check_deterministic(device):
    first_run = all_gradients(device)
    second_run = all_gradients(device)
    assert len(first_run) == len(second_run) == 1 + 2 * 7
    for a, b in zip(first_run, second_run):
        assert torch.equal(a, b)
        # The deterministic mode fills fresh memory with NaN: every element was written.
        assert not a.isnan().any()


def test_deterministic_mode_cpu(deterministic_mode):
    check_deterministic("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deterministic_mode_cuda(deterministic_mode):
    check_deterministic("cuda")


def test_ops_declare_nothing_nondeterministic(deterministic_mode):
    # The ops themselves, called directly: none raises torch's nondeterminism alert.
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    ops = torch.ops.convpool
    y = ops.conv2d(x, w, None, [2], [1], [1], 2)
    ops.conv2d_grad_input(y, w, x.shape, [2], [1], [1], 2)
    ops.conv2d_grad_weight(y, x, w.shape, [2], [1], [1], 2)
    ops.conv2d_grad_bias(y)
    values, indices = ops.max_pool2d(x, [3], [2], [1], [1], True)
    ops.max_pool2d_backward(values, x, indices, [3], [2], [1], [1], True)
