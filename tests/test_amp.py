"""torch.autocast: convpool.conv2d and conv_transpose2d cast like torch's (to the region's dtype),
max_pool2d runs in its input's dtype (torch's is in no autocast list); results, dtypes and
gradients match torch's under the same autocast region."""
import copy

import pytest
import torch
from torch import nn

import convpool
from helpers import TOLERANCES

AUTOCAST_DTYPES = [torch.bfloat16, torch.float16]

# Gradients relative to their largest element. Looser than the forward's for float16: convpool's
# max_pool2d backward accumulates overlapping windows in float, torch's in float16, and the conv
# bias gradient behind the pool sums those rounding differences over the batch and the plane.
GRAD_TOLERANCES = {torch.bfloat16: TOLERANCES[torch.bfloat16], torch.float16: dict(rtol=1e-2, atol=1e-2)}
# Where the two gradients differ by more than that, convpool's may still be the better one: the
# rounding noise of an exactly-zero element (a bias whose channel the pools never pick) differs
# between torch's bf16 kernels (oneDNN's native path on AVX512-BF16 CPUs, another on AVX2 ones,
# measured on a Zen 3: bias element 0.0 exactly, torch -0.0036, convpool 0.0139). Then convpool's
# error against the float64 model must be no larger than torch's own, tensor by tensor.


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        # No bias before a batch norm: its gradient would be rounding noise around zero.
        nn.Conv2d(8, 16, 3, stride=2, groups=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 2 * 2, 5))


def record_output_dtypes(model):
    dtypes = []
    for module in model:
        module.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    return dtypes


def run_under_autocast(model, x, device_type, dtype):
    """Forward and backward inside the region (as training scripts often do); the dtype of every
    layer's output, the output, and the gradients of x and of the fp32 parameters."""
    dtypes = record_output_dtypes(model)
    with torch.autocast(device_type, dtype=dtype):
        out = model(x)
        grads = torch.autograd.grad(out.float().square().sum(), [x, *model.parameters()])
    return dtypes, out, grads


def float64_grads(model, x):
    """The gradients run_under_autocast computes, in float64 without autocast (the exact ones)."""
    exact = copy.deepcopy(model).double()
    x = x.detach().double().requires_grad_(True)
    return torch.autograd.grad(exact(x).square().sum(), [x, *exact.parameters()])


def check_matches_torch(device, dtype):
    torch.manual_seed(0)
    theirs = small_net().to(device)
    ours = convpool.convert(copy.deepcopy(theirs))
    x = torch.randn(4, 3, 20, 20, device=device, requires_grad=True)
    dtypes_ours, out_ours, grads_ours = run_under_autocast(ours, x, device.type, dtype)
    dtypes_theirs, out_theirs, grads_theirs = run_under_autocast(theirs, x, device.type, dtype)
    # conv outputs in the autocast dtype, pooling keeps it, linear casts again: torch's choices.
    assert dtypes_ours == dtypes_theirs
    assert dtypes_ours[0] == dtype and out_ours.dtype == dtype
    torch.testing.assert_close(out_ours, out_theirs, **TOLERANCES[dtype])
    grads_exact = float64_grads(theirs, x)  # after the dtype checks: the copy keeps their hooks
    for ours_grad, theirs_grad, exact in zip(grads_ours, grads_theirs, grads_exact):
        assert ours_grad.dtype == theirs_grad.dtype == torch.float32  # fp32 leaves: fp32 grads
        scale = theirs_grad.abs().max().item()
        tolerance = GRAD_TOLERANCES[dtype]
        ours_vs_torch = ((ours_grad - theirs_grad).abs() / scale
                         - tolerance["rtol"] * theirs_grad.abs() / scale).max().item()
        if ours_vs_torch > tolerance["atol"]:
            ours_error = (ours_grad.double() - exact).abs().max().item()
            torch_error = (theirs_grad.double() - exact).abs().max().item()
            assert ours_error <= torch_error, (
                f"gradient {list(exact.shape)}: convpool differs from torch by {ours_vs_torch:.3g} "
                f"(relative) and its error against float64, {ours_error:.3g}, exceeds torch's "
                f"{torch_error:.3g}")


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
def test_autocast_cpu_net_matches_torch(dtype):
    check_matches_torch(torch.device("cpu"), dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
def test_autocast_cuda_net_matches_torch(dtype):
    check_matches_torch(torch.device("cuda"), dtype)


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
def test_autocast_cpu_op_dtypes(dtype):
    x = torch.randn(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    b = torch.randn(4)
    with torch.autocast("cpu", dtype=dtype):
        # Every floating operand is cast, bias included; the result is in the region's dtype.
        y = convpool.conv2d(x, w, b, padding=1)
        expected = torch.nn.functional.conv2d(x, w, b, padding=1)
        assert y.dtype == expected.dtype == dtype
        torch.testing.assert_close(y, expected, **TOLERANCES[dtype])
        # Operands of mixed dtypes are all cast: no dtype-mismatch error.
        assert convpool.conv2d(x.to(dtype), w, b).dtype == dtype
        # float64 is left alone, as torch does.
        assert convpool.conv2d(x.double(), w.double()).dtype == torch.float64
        # max_pool2d runs in its input's dtype.
        values, indices = convpool.max_pool2d(x, 2, return_indices=True)
        expected_values, expected_indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
        assert values.dtype == expected_values.dtype == torch.float32
        assert torch.equal(values, expected_values) and torch.equal(indices, expected_indices)
        # Inside a region with autocast disabled, nothing is cast.
        with torch.autocast("cpu", enabled=False):
            assert convpool.conv2d(x, w, b).dtype == torch.float32
    # Outside the region, nothing is cast.
    assert convpool.conv2d(x, w, b).dtype == torch.float32


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
def test_autocast_cpu_conv_transpose2d(dtype):
    """torch puts conv_transpose2d in the same lower-precision list; convpool's (a composition of
    ops) casts its operands itself: same dtypes and values, gradients of fp32 leaves in fp32."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 5, generator=g, requires_grad=True)
    w = torch.randn(4, 3, 4, 4, generator=g, requires_grad=True)
    b = torch.randn(3, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        y = convpool.conv_transpose2d(x, w, b, stride=2, padding=1)
        expected = torch.nn.functional.conv_transpose2d(x, w, b, stride=2, padding=1)
        assert y.dtype == expected.dtype == dtype
        # Ours rounds twice (the sum, then sum + bias), torch once: up to an ulp of the larger of
        # |sum| and |output| apart, beyond the accumulation order.
        eps = torch.finfo(dtype).eps
        scale = expected.abs().max().item() + b.abs().max().item()
        torch.testing.assert_close(y, expected, rtol=2 * eps, atol=2 * eps * scale)
        assert convpool.conv_transpose2d(x.to(dtype), w, b).dtype == dtype  # mixed: all cast
        assert convpool.conv_transpose2d(x.double(), w.double()).dtype == torch.float64
        with torch.autocast("cpu", enabled=False):
            assert convpool.conv_transpose2d(x, w, b).dtype == torch.float32
    go = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    for ours, theirs in zip(torch.autograd.grad(y, (x, w, b), go),
                            torch.autograd.grad(expected, (x, w, b), go)):
        assert ours.dtype == theirs.dtype == torch.float32
        scale = theirs.abs().max().item()
        torch.testing.assert_close(ours / scale, theirs / scale, **GRAD_TOLERANCES[dtype])
    assert convpool.conv_transpose2d(x, w, b).dtype == torch.float32  # outside the region


def test_autocast_rule_registered_for_cpu_and_cuda():
    # The CUDA rule cannot run without a GPU here; it must at least be in the dispatch table.
    for key in ("AutocastCPU", "AutocastCUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("convpool::conv2d", key)
        # No rule for max_pool2d (torch has none) nor for the backward ops (they get cast tensors).
        for op in ("max_pool2d", "max_pool2d_backward", "conv2d_grad_input", "conv2d_grad_weight",
                   "conv2d_grad_bias"):
            assert not torch._C._dispatch_has_kernel_for_dispatch_key(f"convpool::{op}", key)


def test_autocast_under_torch_compile():
    # The cast rule is traced too: a compiled converted net under autocast equals eager.
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = convpool.convert(small_net())
    x = torch.randn(4, 3, 20, 20)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual, expected = compiled(x), model(x)
    assert actual.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(actual, expected)
    params = list(model.parameters())
    for a, e in zip(torch.autograd.grad(actual.float().sum(), params),
                    torch.autograd.grad(expected.float().sum(), params)):
        assert a.dtype == e.dtype == torch.float32
        torch.testing.assert_close(a, e)
    torch._dynamo.reset()
