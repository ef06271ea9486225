"""The per-call fast paths: convpool._C's direct entry points to the ops (csrc/direct_calls.cpp),
the fused conv2d backward, and the single-thread rule for tiny problems (csrc/cpu/registry.h).
Each must give exactly what the path it replaces gives, and hand every call it is not made for
back to torch.ops."""
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import convpool
from convpool import _C

ops = torch.ops.convpool


def conv_operands(seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64) if bias else None
    return x, w, b


GEOMETRY = ([2, 1], [1, 0], [1, 2], 2)  # stride, padding, dilation, groups


def op_calls():
    """(name, arguments) of one plain call of every op."""
    x, w, b = conv_operands()
    y = ops.conv2d(x, w, b, *GEOMETRY)
    px = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    pool = ([3, 2], [2, 2], [1, 0], [1, 2], True)
    values, indices = ops.max_pool2d(px, *pool)
    return [
        ("conv2d", (x, w, b, *GEOMETRY)),
        ("conv2d_grad_input", (torch.ones_like(y), w, list(x.shape), *GEOMETRY)),
        ("conv2d_grad_weight", (torch.ones_like(y), x, list(w.shape), *GEOMETRY)),
        ("conv2d_grad_bias", (y,)),
        ("max_pool2d", (px, *pool)),
        ("max_pool2d_values", (px, *pool)),
        ("max_pool2d_backward", (torch.ones_like(values), px, indices, *pool)),
    ]


@pytest.mark.parametrize("name,args", op_calls(), ids=[name for name, _ in op_calls()])
def test_direct_entry_point_equals_the_op(name, args):
    direct = getattr(_C, "_" + name)(*args)
    expected = getattr(ops, name)(*args)
    for got, want in zip(direct if isinstance(direct, tuple) else (direct,),
                         expected if isinstance(expected, tuple) else (expected,)):
        assert torch.equal(got, want)
        assert got.stride() == want.stride()
        assert not got.requires_grad


class Tagged(torch.Tensor):
    """A subclass whose __torch_function__ must see every call (as torch.ops guarantees)."""
    seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("case", ["float_stride", "tuple_of_floats", "bool_groups", "subclass",
                                  "missing_argument", "huge_int"])
def test_unusual_calls_are_handed_back(case):
    x, w, b = conv_operands()
    stride, padding, dilation, groups = GEOMETRY
    args = {
        "float_stride": (x, w, b, 2.0, padding, dilation, groups),
        "tuple_of_floats": (x, w, b, (2.0, 1.0), padding, dilation, groups),
        "bool_groups": (x, w, b, stride, padding, dilation, True),
        "subclass": (x.as_subclass(Tagged), w, b, stride, padding, dilation, groups),
        "missing_argument": (x, w, b, stride, padding, dilation),
        "huge_int": (x, w, b, [2**70, 1], padding, dilation, groups),
    }[case]
    assert _C._conv2d(*args) is NotImplemented


def test_a_torch_function_mode_sees_convpool_calls():
    x, w, b = conv_operands()
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    with Record():
        assert _C._conv2d(x, w, b, *GEOMETRY) is NotImplemented
        out = convpool.conv2d(x, w, b, *GEOMETRY)
    assert any("convpool.conv2d" in str(f) for f in seen), seen
    torch.testing.assert_close(out, F.conv2d(x, w, b, *GEOMETRY), rtol=1e-7, atol=1e-7)


def test_a_subclass_keeps_its_torch_function():
    x, w, b = conv_operands()
    Tagged.seen.clear()
    out = convpool.conv2d(x.as_subclass(Tagged), w, b, *GEOMETRY)
    assert any("convpool.conv2d" in str(f) for f in Tagged.seen), Tagged.seen
    torch.testing.assert_close(torch.Tensor(out), F.conv2d(x, w, b, *GEOMETRY), rtol=1e-7,
                               atol=1e-7)


def test_errors_keep_their_type_and_message():
    x, w, b = conv_operands()
    with pytest.raises(RuntimeError, match="non-positive stride is not supported"):
        _C._conv2d(x, w, b, [0, 1], [0], [1], 2)
    with pytest.raises(RuntimeError, match=r"expected stride to be a single integer value or a "
                                           r"list of 2 values"):
        _C._conv2d(x, w, b, [1, 1, 1], [0], [1], 2)
    with pytest.raises(RuntimeError, match="stride should not be zero"):
        _C._max_pool2d(x, [2], [0], [0], [1], False)


@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, False),
                                  (False, False, True), (False, False, False)])
def test_fused_backward_equals_the_three_ops(mask):
    x, w, _ = conv_operands()
    y = ops.conv2d(x, w, None, *GEOMETRY)
    g = torch.randn_like(y)
    got = _C._conv2d_backward(g, x, w, *GEOMETRY, *mask)
    want = (ops.conv2d_grad_input(g, w, list(x.shape), *GEOMETRY),
            ops.conv2d_grad_weight(g, x, list(w.shape), *GEOMETRY),
            ops.conv2d_grad_bias(g))
    assert len(got) == 3
    for needed, a, b in zip(mask, got, want):
        if needed:
            assert torch.equal(a, b)
        else:
            assert a is None


def test_fused_backward_without_input_channels():
    # No input channels: an output without channels, whose bias gradient is zeros (as torch).
    x = torch.randn(2, 0, 5, 5)
    w = torch.randn(3, 0, 3, 3)
    y = ops.conv2d(x, w, None, [1], [0], [1], 1)
    gi, gw, gb = _C._conv2d_backward(torch.ones_like(y), x, w, [1], [0], [1], 1, True, True, True)
    assert gi.shape == x.shape and gw.shape == w.shape
    assert torch.equal(gb, torch.zeros(3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_autograd_through_the_fast_paths(channels_last):
    x, w, b = conv_operands()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    out = convpool.conv2d(*leaves, *GEOMETRY)
    expected = F.conv2d(*ref, *GEOMETRY)
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-7)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    g = torch.randn_like(expected)
    for a, e in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(expected, ref, g)):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (1, 8, 16, 16), (4, 32, 28, 28)],
                         ids=["tiny", "near_threshold", "parallel"])
def test_results_do_not_depend_on_the_thread_count(shape):
    # Problems below registry.h's kSerialWork run on one thread, larger ones on all: both must
    # give the same bits whatever the thread count (fixed summation order).
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(shape[1], shape[1], 3, 3, generator=g)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = convpool.conv2d(x, w, padding=1)
            results.append((y, ops.conv2d_grad_weight(y, x, list(w.shape), [1], [1], [1], 1),
                            convpool.max_pool2d(x, 2)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_plain_reverse_mode_records_a_cpp_node():
    x, w, b = (t.requires_grad_() for t in conv_operands())
    assert "Conv2dFunction" in convpool.conv2d(x, w, b, *GEOMETRY).grad_fn.name()
    p = torch.randn(1, 2, 6, 6, requires_grad=True)
    values, indices = convpool.max_pool2d(p, 2, return_indices=True)
    assert "MaxPool2dFunction" in values.grad_fn.name()
    assert not indices.requires_grad


def test_cpp_node_honours_saved_tensor_hooks():
    x, w, b = (t.requires_grad_() for t in conv_operands())
    packed, unpacked = [], []

    def pack(t):
        packed.append(t.shape)
        return t.clone()

    def unpack(t):
        unpacked.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = convpool.conv2d(x, w, b, *GEOMETRY)
    assert packed == [x.shape, w.shape]
    got = torch.autograd.grad(out.sum(), (x, w, b))
    assert unpacked == [x.shape, w.shape]
    ref = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    for a, e in zip(got, torch.autograd.grad(F.conv2d(*ref, *GEOMETRY).sum(), ref)):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-7)


def test_cpp_node_detects_a_modified_saved_input():
    x, w, _ = conv_operands()
    w.requires_grad_()
    out = convpool.conv2d(x, w, None, *GEOMETRY)
    x.add_(1)  # saved for the weight gradient
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_cpp_node_double_backward_matches_torch():
    x, w, b = (t.requires_grad_() for t in conv_operands())
    ref = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    results = []
    for f, leaves in ((convpool.conv2d, (x, w, b)), (F.conv2d, ref)):
        gx, gw = torch.autograd.grad(f(*leaves, *GEOMETRY).square().sum(), leaves[:2],
                                     create_graph=True)
        results.append(torch.autograd.grad((gx.square().sum() + gw.sum()), leaves))
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-7)
    p = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    pr = p.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(convpool.max_pool2d(p, 2).square().sum(), p, create_graph=True)
    (gr,) = torch.autograd.grad(F.max_pool2d(pr, 2).square().sum(), pr, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(g.sum(), p)[0],
                               torch.autograd.grad(gr.sum(), pr)[0], rtol=1e-7, atol=1e-7)


def test_cpp_node_under_compiled_autograd():
    from torch._dynamo import compiled_autograd
    x, w, b = (t.requires_grad_() for t in conv_operands())
    ref = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    out = convpool.conv2d(x, w, b, *GEOMETRY)
    with compiled_autograd._enable(torch.compile(backend="eager")):
        out.sum().backward()
    F.conv2d(*ref, *GEOMETRY).sum().backward()
    for a, e in zip((x, w, b), ref):
        torch.testing.assert_close(a.grad, e.grad, rtol=1e-7, atol=1e-7)
