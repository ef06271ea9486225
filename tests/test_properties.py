"""Property tests (hypothesis): for random shapes, arguments, dtypes and layouts, convpool raises
if and only if torch raises, and otherwise matches it (values, indices, gradients).
CONVPOOL_HYPOTHESIS_EXAMPLES sets the number of examples per property (long runs)."""
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

import convpool
from helpers import TOLERANCES

EXAMPLES = int(os.environ.get("CONVPOOL_HYPOTHESIS_EXAMPLES", "1000"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))

small = st.integers(0, 3)
pair_or_int = lambda values: st.one_of(values, st.tuples(values, values))  # noqa: E731


def _layout(x, layout):
    if layout == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        return torch.cat([x, x], dim=-1)[..., ::2]
    return x


def _outcome(fn):
    try:
        return fn(), None
    except Exception as error:  # noqa: BLE001  (any exception: we compare raising, not types)
        return None, error


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    batched = draw(st.booleans())
    shape = [draw(st.integers(0, 2))] if batched else []
    shape += [groups * draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))]
    out_channels = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = draw(st.one_of(pair_or_int(small), st.sampled_from(["same", "valid"])))
    stride = draw(pair_or_int(st.integers(1, 3))) if not isinstance(padding, str) or padding == "valid" else 1
    return dict(
        shape=shape, weight_shape=[out_channels, shape[-3] // groups, *kernel],
        bias=draw(st.booleans()), stride=stride, padding=padding,
        dilation=draw(pair_or_int(st.integers(1, 3))), groups=groups,
        dtype=draw(st.sampled_from([torch.float64, torch.float32])),
        layout=draw(st.sampled_from(["contiguous", "channels_last", "sliced"])))


@seed(20261125)
@SETTINGS
@given(conv_problems())
def test_conv2d_property(problem):
    dtype = problem["dtype"]
    x = _layout(torch.randn(problem["shape"], dtype=dtype), problem["layout"]).requires_grad_()
    w = torch.randn(problem["weight_shape"], dtype=dtype).requires_grad_()
    b = torch.randn(problem["weight_shape"][0], dtype=dtype).requires_grad_() if problem["bias"] else None
    kwargs = {k: problem[k] for k in ("stride", "padding", "dilation", "groups")}
    # torch's reference from a contiguous copy: its channels_last path segfaults on some of these
    # shapes (see test_conv2d.py::test_torch_channels_last_crash_case); values do not depend on
    # the layout, and ours still runs on the drawn layout.
    ref, ref_error = _outcome(lambda: F.conv2d(x.contiguous(), w, b, **kwargs))
    ours, our_error = _outcome(lambda: convpool.conv2d(x, w, b, **kwargs))
    assert (ref_error is None) == (our_error is None), (ref_error, our_error)
    event("both raised" if ref_error is not None else "both computed")
    if ref_error is not None:
        return
    torch.testing.assert_close(ours, ref, **TOLERANCES[dtype])
    inputs = [t for t in (x, w, b) if t is not None]
    projection = torch.randn_like(ref)
    for a, c in zip(torch.autograd.grad(ours, inputs, projection), torch.autograd.grad(ref, inputs, projection)):
        torch.testing.assert_close(a, c, **TOLERANCES[dtype])


@st.composite
def pool_problems(draw):
    batched = draw(st.booleans())
    shape = [draw(st.integers(0, 2))] if batched else []
    # Mostly valid arguments, with the invalid ones (zeros, too much padding) still drawn often
    # enough that "raises iff torch raises" is exercised too.
    shape += [draw(st.sampled_from([0, 1, 2, 3, 4, 5])), draw(st.integers(0, 10)), draw(st.integers(0, 10))]
    kernel = st.sampled_from([0, 1, 2, 2, 3, 3, 3, 4])
    return dict(
        shape=shape, kernel_size=draw(pair_or_int(kernel)),
        stride=draw(st.one_of(st.none(), pair_or_int(st.sampled_from([0, 1, 1, 2, 2, 3])))),
        padding=draw(pair_or_int(st.sampled_from([0, 0, 0, 1, 1, 2]))),
        dilation=draw(pair_or_int(st.sampled_from([1, 1, 2, 3]))),
        ceil_mode=draw(st.booleans()),
        dtype=draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.int32])),
        values=draw(st.sampled_from(["random", "ties", "special"])),
        layout=draw(st.sampled_from(["contiguous", "channels_last", "sliced"])))


def _pool_input(problem):
    shape, dtype = problem["shape"], problem["dtype"]
    if problem["values"] == "ties" or not dtype.is_floating_point:
        x = torch.randint(0, 3, shape).to(dtype)
    else:
        x = torch.randn(shape).to(dtype)
        if problem["values"] == "special" and x.numel():
            specials = torch.tensor([float("nan"), float("inf"), -float("inf")]).to(dtype)
            mask = torch.randint(0, 6, shape)
            x = torch.where(mask < 3, specials[mask.clamp(max=2)], x)
    return _layout(x, problem["layout"])


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _empty_windows(in_shape, out_shape, kernel_size, stride, padding, dilation):
    """(H_out, W_out) mask of windows whose every tap lands in padding (torch returns bogus
    indices there; convpool returns -1), from the geometry alone."""
    stride = kernel_size if stride is None else stride

    def dim_has_tap(size_in, size_out, k, s, p, d):
        starts = torch.arange(size_out) * s - p
        taps = starts[:, None] + torch.arange(k)[None, :] * d
        return ((taps >= 0) & (taps < size_in)).any(dim=1)

    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding, dilation))
    rows = dim_has_tap(in_shape[-2], out_shape[-2], kh, sh, ph, dh)
    cols = dim_has_tap(in_shape[-1], out_shape[-1], kw, sw, pw, dw)
    return ~(rows[:, None] & cols[None, :])


@seed(20261125)
@SETTINGS
@given(pool_problems())
def test_max_pool2d_property(problem):
    x = _pool_input(problem)
    kwargs = {k: problem[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
    ref, ref_error = _outcome(lambda: F.max_pool2d(x, return_indices=True, **kwargs))
    ours, our_error = _outcome(lambda: convpool.max_pool2d(x, return_indices=True, **kwargs))
    assert (ref_error is None) == (our_error is None), (ref_error, our_error)
    event("both raised" if ref_error is not None else "both computed")
    if ref_error is not None:
        return
    (values, indices), (ref_values, ref_indices) = ours, ref
    empty = _empty_windows(x.shape, values.shape, **{k: kwargs[k] for k in (
        "kernel_size", "stride", "padding", "dilation")}).expand(values.shape)
    assert torch.equal(indices == -1, empty)
    if bool(empty.any()):
        # Our documented answer there: torch's value (-inf / lowest) with index -1; elsewhere torch's.
        assert torch.equal(values[empty], ref_values[empty])
        assert torch.equal(indices[~empty], ref_indices[~empty])
        torch.testing.assert_close(values[~empty], ref_values[~empty], rtol=0, atol=0, equal_nan=True)
        return
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(values, ref_values, rtol=0, atol=0, equal_nan=True)
    if x.dtype.is_floating_point and x.numel():
        xg = x.detach().requires_grad_()
        projection = torch.randn(ref_values.shape).to(x.dtype)
        (g_ours,) = torch.autograd.grad(convpool.max_pool2d(xg, **kwargs), xg, projection)
        (g_ref,) = torch.autograd.grad(F.max_pool2d(xg, **kwargs), xg, projection)
        tol = dict(rtol=0, atol=0) if x.dtype != torch.bfloat16 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(g_ours, g_ref, **tol)
