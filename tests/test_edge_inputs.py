"""Edge inputs in one table: every row is a legal call whose result (values, max-pool indices and
the gradients of every input) must equal PyTorch's, or, where PyTorch's result is out of bounds, a
documented safe one (README, "Where convpool deliberately differs"). The parity files test the
same behaviours over grids of shapes; this table is the checklist of the special cases.

A row is (id, inputs, call): `inputs()` builds the leaf tensors (fresh ones for each side), and
`call(ops, *inputs)` runs the case with `ops` = torch's functions or convpool's (views such as
slices, expands or channels_last copies are taken inside `call`, so gradients flow to the leaves).
"""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convpool

TORCH = SimpleNamespace(conv2d=F.conv2d, max_pool2d=F.max_pool2d, Conv2d=nn.Conv2d,
                        MaxPool2d=nn.MaxPool2d)
OURS = SimpleNamespace(conv2d=convpool.conv2d, max_pool2d=convpool.max_pool2d,
                       Conv2d=convpool.Conv2d, MaxPool2d=convpool.MaxPool2d)
inf, nan = math.inf, math.nan
CL = torch.channels_last


def rand(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64).mul_(2).sub_(1).to(dtype)


def image(rows):
    """A (1, 1, H, W) float64 tensor from nested lists."""
    return torch.tensor(rows, dtype=torch.float64)[None, None]


def conv_inputs(x_shape, w_shape, bias=True, dtype=torch.float64):
    def make():
        x, w = rand(*x_shape, dtype=dtype, seed=1), rand(*w_shape, dtype=dtype, seed=2)
        b = rand(w_shape[0], dtype=dtype, seed=3) if bias else None
        return (x, w, b) if bias else (x, w)
    return make


def fixed(*tensors):
    return lambda: tuple(t.clone() for t in tensors)


def pool(*args, **kwargs):
    """A max_pool2d call returning values and indices."""
    return lambda ops, x: ops.max_pool2d(x, *args, return_indices=True, **kwargs)


def conv(*args, **kwargs):
    return lambda ops, *t: ops.conv2d(*t, *args, **kwargs)


def module(name, *args, **kwargs):
    """A module built the same way on both sides with the same parameters (torch's state_dict)."""
    def call(ops, x):
        torch.manual_seed(0)
        layer = getattr(ops, name)(*args, **kwargs).double()
        return layer(x)
    return call


# The out-of-plane indices PyTorch returns for windows with no input element are replaced by -1
# (no element); their values (-inf) match torch and they get no gradient.
def empty_windows_safe(torch_result):
    values, indices = torch_result
    plane = 10
    safe = indices.clone()
    safe[(indices < 0) | (indices >= plane)] = -1
    return values, safe


EDGE_CASES = [
    # ---- conv2d --------------------------------------------------------------------------
    ("conv-empty-batch", conv_inputs((0, 3, 8, 8), (4, 3, 3, 3)), conv(padding=1)),
    ("conv-unbatched", conv_inputs((3, 7, 9), (4, 3, 3, 3)), conv(stride=2)),
    ("conv-unbatched-bias-free", conv_inputs((3, 7, 9), (4, 3, 3, 3), bias=False), conv()),
    ("conv-zero-input-channels", conv_inputs((2, 0, 6, 6), (4, 0, 3, 3)), conv()),
    ("conv-sliced-input", conv_inputs((2, 6, 10, 12), (4, 3, 3, 3)), lambda o, x, w, b: o.conv2d(x[:, ::2, 1:, ::2], w, b, padding=1)),
    ("conv-expanded-input", conv_inputs((1, 3, 6, 6), (4, 3, 3, 3)), lambda o, x, w, b: o.conv2d(x.expand(3, 3, 6, 6), w, b)),
    ("conv-expanded-weight", conv_inputs((2, 3, 6, 6), (1, 3, 3, 3)), lambda o, x, w, b: o.conv2d(x, w.expand(5, 3, 3, 3), b.expand(5))),
    ("conv-broadcast-scalar-image", conv_inputs((1, 1, 1, 1), (2, 1, 3, 3)), lambda o, x, w, b: o.conv2d(x.expand(2, 1, 7, 7), w, b, padding=1)),
    ("conv-channels-last", conv_inputs((2, 4, 7, 7), (6, 2, 3, 3)), lambda o, x, w, b: o.conv2d(x.contiguous(memory_format=CL), w, b, padding=1, groups=2)),
    ("conv-channels-last-weight-only", conv_inputs((2, 3, 7, 7), (5, 3, 3, 3)), lambda o, x, w, b: o.conv2d(x, w.contiguous(memory_format=CL), b)),
    ("conv-transposed-view", conv_inputs((2, 3, 9, 5), (4, 3, 2, 3)), lambda o, x, w, b: o.conv2d(x.transpose(2, 3), w, b, stride=(2, 1))),
    ("conv-nan-input", fixed(image([[1., nan, 3.], [4., 5., 6.], [7., 8., 9.]]), rand(2, 1, 2, 2), rand(2)), conv(padding=1)),
    ("conv-inf-input", fixed(image([[inf, 1., 2.], [3., -inf, 4.], [5., 6., 7.]]), rand(2, 1, 2, 2).abs() + 0.5, rand(2)), conv()),
    ("conv-nan-weight", fixed(rand(1, 2, 5, 5), torch.tensor([nan, 1., 2., 3., 4., 5., 6., 7.], dtype=torch.float64).view(1, 2, 2, 2), rand(1)), conv(stride=2)),
    ("conv-inf-bias", conv_inputs((1, 2, 4, 4), (3, 2, 3, 3), bias=False), lambda o, x, w: o.conv2d(x, w, torch.tensor([inf, -inf, nan], dtype=torch.float64))),
    ("conv-kernel-equals-input", conv_inputs((2, 3, 5, 4), (2, 3, 5, 4)), conv()),
    ("conv-1x1-image", conv_inputs((3, 4, 1, 1), (5, 4, 1, 1)), conv()),
    ("conv-stride-beyond-input", conv_inputs((2, 3, 6, 6), (4, 3, 3, 3)), conv(stride=100)),
    ("conv-stride-huge", conv_inputs((1, 2, 5, 5), (2, 2, 2, 2)), conv(stride=2**40)),
    ("conv-padding-larger-than-input", conv_inputs((1, 2, 3, 3), (2, 2, 3, 3)), conv(padding=7)),
    ("conv-dilation-spans-input", conv_inputs((1, 2, 9, 9), (3, 2, 3, 3)), conv(dilation=4)),
    ("conv-depthwise", conv_inputs((2, 6, 8, 8), (12, 1, 3, 3)), conv(padding=1, groups=6)),
    ("conv-groups-equal-out-channels", conv_inputs((1, 4, 5, 5), (4, 1, 1, 1)), conv(groups=4)),
    ("conv-same-even-kernel", conv_inputs((1, 2, 6, 7), (3, 2, 4, 2)), conv(padding="same", dilation=(1, 3))),
    ("conv-valid", conv_inputs((1, 2, 6, 7), (3, 2, 4, 2)), conv(padding="valid")),
    ("conv-float32-empty-output-channels-batch", conv_inputs((0, 4, 3, 3), (2, 4, 3, 3), dtype=torch.float32), conv()),
    ("conv-bfloat16", conv_inputs((1, 3, 6, 6), (2, 3, 3, 3), dtype=torch.bfloat16), conv(padding=1)),
    # ---- max_pool2d ----------------------------------------------------------------------
    ("pool-empty-batch", lambda: (rand(0, 3, 8, 8),), pool(2)),
    ("pool-unbatched", lambda: (rand(3, 7, 9),), pool(3, 2, 1)),
    ("pool-sliced", lambda: (rand(2, 6, 9, 12),), lambda o, x: o.max_pool2d(x[:, 1::2, :, ::3], 2, 1, return_indices=True)),
    ("pool-expanded", lambda: (rand(1, 1, 5, 5),), lambda o, x: o.max_pool2d(x.expand(3, 4, 5, 5), 3, 1, 1, return_indices=True)),
    ("pool-expanded-row", lambda: (rand(1, 1, 1, 6),), lambda o, x: o.max_pool2d(x.expand(1, 1, 5, 6), 2, return_indices=True)),
    ("pool-channels-last", lambda: (rand(2, 5, 7, 6),), lambda o, x: o.max_pool2d(x.contiguous(memory_format=CL), 3, 2, 1, ceil_mode=True, return_indices=True)),
    ("pool-nan-wins", fixed(image([[1., nan, 3.], [nan, 5., inf], [7., 8., 9.]])), pool(2, 1)),
    ("pool-inf", fixed(image([[-inf, inf, 3.], [inf, 5., -inf], [7., 8., 9.]])), pool(2, 1)),
    ("pool-all-minus-inf", fixed(image([[-inf] * 4] * 4)), pool(2, 1, 1)),
    ("pool-ties-first-wins", fixed(image([[2., 2., 2., 2.], [2., 2., 2., 2.], [1., 2., 2., 1.]])), pool(2, 1)),
    ("pool-ties-with-padding", fixed(image([[0., 0.], [0., 0.]])), pool(3, 1, 1)),
    ("pool-ceil-mode-last-window", lambda: (rand(1, 2, 7, 7),), pool(2, 2, ceil_mode=True)),
    ("pool-ceil-mode-dropped-window", lambda: (rand(1, 1, 6, 6),), pool(3, 3, 1, ceil_mode=True)),
    ("pool-ceil-mode-dilated", lambda: (rand(1, 1, 9, 8),), pool(3, 2, 1, 2, ceil_mode=True)),
    ("pool-kernel-equals-input", lambda: (rand(2, 3, 5, 4),), pool((5, 4))),
    ("pool-1x1", lambda: (rand(2, 3, 1, 1),), pool(1)),
    ("pool-stride-beyond-input", lambda: (rand(1, 2, 5, 5),), pool(2, 50)),
    ("pool-stride-2-pow-31-minus-1", lambda: (rand(1, 1, 4, 4),), pool(2, 2**31 - 1)),
    ("pool-dilated-overlapping", lambda: (rand(2, 2, 11, 10),), pool(3, 1, 1, 3)),
    ("pool-integer-int64-extremes", fixed(torch.tensor([[[[-2**63, 2**63 - 1], [0, 2**63 - 1]]]])), lambda o, x: o.max_pool2d(x, 2, 1, 1, return_indices=True)),
    ("pool-uint8", fixed(torch.tensor([[[[0, 255, 7], [255, 1, 2]]]], dtype=torch.uint8)), pool(2, 1)),
    ("pool-float16-overflow-values", fixed(torch.tensor([[[[65504., -65504.], [inf, 1.]]]], dtype=torch.float16)), pool(2, 1, 1)),
    # ---- modules -------------------------------------------------------------------------
    ("module-conv-reflect", lambda: (rand(2, 3, 6, 7),), module("Conv2d", 3, 4, 3, padding=2, padding_mode="reflect")),
    ("module-conv-circular", lambda: (rand(2, 3, 6, 7),), module("Conv2d", 3, 4, 3, padding=(1, 3), padding_mode="circular")),
    ("module-conv-replicate-strided", lambda: (rand(2, 3, 6, 7),), module("Conv2d", 3, 6, (2, 3), 2, 1, groups=3, padding_mode="replicate")),
    ("module-conv-same-dilated", lambda: (rand(1, 2, 9, 9),), module("Conv2d", 2, 2, 4, padding="same", dilation=2, bias=False)),
    ("module-conv-unbatched", lambda: (rand(3, 5, 5),), module("Conv2d", 3, 2, 3)),
    ("module-pool-indices-ceil", lambda: (rand(2, 3, 7, 7),), module("MaxPool2d", 3, 2, 1, ceil_mode=True, return_indices=True)),
    ("module-pool-unbatched", lambda: (rand(3, 6, 6),), module("MaxPool2d", 2)),
]

# Rows where PyTorch's result is out of bounds: our documented safe result instead.
SAFE_INSTEAD_OF_TORCH = {
    # The window starting at column 12 lies wholly in padding: torch says index 11 / 15 of a
    # 10-element plane (and its backward writes there); we say -1.
    "pool-window-wholly-in-padding": (lambda: (rand(1, 1, 1, 10),), pool(3, 6, 1, 2, ceil_mode=True), empty_windows_safe),
}
EDGE_CASES.append(("pool-window-wholly-in-padding",) + SAFE_INSTEAD_OF_TORCH["pool-window-wholly-in-padding"][:2])


def _outputs(result):
    return list(result) if isinstance(result, tuple) else [result]


def _run(inputs, call, ops):
    leaves = [t.requires_grad_(True) if t.is_floating_point() else t for t in inputs()]
    outputs = _outputs(call(ops, *leaves))
    differentiable = [t for t in leaves if t.requires_grad]
    grads = []
    if differentiable and outputs[0].requires_grad:
        g = torch.Generator().manual_seed(7)
        projection = torch.rand(outputs[0].shape, generator=g, dtype=torch.float64).to(outputs[0].dtype)
        grads = torch.autograd.grad(outputs[0], differentiable, projection, allow_unused=True)
    return outputs, grads


def _assert_same(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert actual.is_contiguous(memory_format=CL) == expected.is_contiguous(memory_format=CL) or actual.dim() < 4
    if expected.dtype == torch.int64 or not expected.is_floating_point():
        assert torch.equal(actual, expected), (actual, expected)
    else:
        torch.testing.assert_close(actual, expected, equal_nan=True,
                                   **({"rtol": 2e-2, "atol": 2e-2} if expected.dtype == torch.bfloat16 else {}))


def test_table_is_big_enough():
    assert len(EDGE_CASES) >= 50
    assert len({row[0] for row in EDGE_CASES}) == len(EDGE_CASES)


@pytest.mark.parametrize("row", EDGE_CASES, ids=[row[0] for row in EDGE_CASES])
def test_edge_input_matches_torch(row):
    name, inputs, call = row
    ours, our_grads = _run(inputs, call, OURS)
    if name in SAFE_INSTEAD_OF_TORCH:
        expected = _outputs(SAFE_INSTEAD_OF_TORCH[name][2](call(TORCH, *inputs())))
        theirs, their_grads = expected, None
    else:
        theirs, their_grads = _run(inputs, call, TORCH)
    assert len(ours) == len(theirs)
    for actual, expected in zip(ours, theirs):
        _assert_same(actual, expected)
    if their_grads is not None:
        assert len(our_grads) == len(their_grads)
        for actual, expected in zip(our_grads, their_grads):
            if expected is None:
                assert actual is None or not actual.any()
            else:
                _assert_same(actual, expected)


def test_window_wholly_in_padding_gets_no_gradient():
    x = rand(1, 1, 1, 10).requires_grad_(True)
    values, indices = convpool.max_pool2d(x, 3, 6, 1, 2, ceil_mode=True, return_indices=True)
    assert indices.min() >= -1 and indices.max() < 10
    values.backward(torch.where(torch.isinf(values), 1.0, 0.0))
    assert not x.grad.any()  # only the empty windows were given gradient, and they have no element
