"""convpool.max_pool2d against torch.nn.functional.max_pool2d: values, bit-identical indices,
gradients, NaN and tie rules, layouts and dtypes."""
import pytest
import torch
import torch.nn.functional as F

import convpool
from convpool.backends import cpu
from helpers import LAYOUTS, grads, leaf, make_tensor

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
CASES = [
    (2, 3, 8, 8, 2, None, 0, 1, False),
    (2, 3, 9, 10, 3, 2, 1, 1, False),
    (2, 3, 9, 10, 3, 2, 1, 1, True),
    (1, 2, 7, 11, (3, 2), (2, 1), (1, 0), (1, 2), True),
    (2, 2, 10, 9, 3, 3, 1, 2, True),
    (0, 3, 6, 6, 2, 2, 0, 1, False),
    (2, 4, 13, 13, (5, 3), (3, 2), (2, 1), 1, True),
    (1, 3, 5, 5, 5, 1, 2, 1, False),
    (1, 2, 6, 7, 2, 1, 1, 1, True),  # overlapping windows, padding on both sides
    (2, 3, 12, 12, 3, 2, 0, 1, True),  # SqueezeNet-style ceil_mode
    (1, 1, 4, 4, 1, 1, 0, 1, False),  # identity
    (1, 2, 1, 9, (1, 3), (1, 2), (0, 1), 1, True),
    # Wide rows and many channels: the vectorized paths (8 lanes + tails, stride 1, stride 2
    # deinterleave, gathered strides) with edge columns on both sides.
    (1, 3, 5, 67, 3, 2, 1, 1, True),
    (1, 19, 4, 53, 2, 2, 0, 1, False),
    (1, 2, 4, 41, 3, 1, 1, 1, False),
    (1, 17, 5, 50, (2, 3), 3, 1, (1, 2), True),
    (2, 9, 3, 34, (1, 4), (1, 2), (0, 2), (1, 3), True),
    # 16-lane paths (AVX-512): output rows of 66 (a 64-column chunk of four vectors + a tail),
    # exactly 32, 37 at stride 1, 33 at stride 3 (gathered); 65, 80 and 33 channels for
    # channels_last (four vectors + a tail, whole vectors, a 1-lane tail).
    (1, 2, 3, 131, 3, 2, 1, 1, True),
    (1, 3, 4, 64, 2, 2, 0, 1, False),
    (2, 33, 6, 37, (1, 3), 1, (0, 1), 1, False),
    (1, 2, 4, 100, (2, 3), (1, 3), (1, 1), (1, 2), False),
    (1, 65, 5, 5, 3, 2, 1, 1, False),
    (1, 80, 4, 6, 2, 1, 0, 1, True),
    # Up to 128 channels in one register chunk: 7 vectors with a 4-lane tail, exactly 8 vectors.
    (1, 100, 5, 6, 3, 2, 1, 1, True),
    (1, 128, 4, 5, 2, 1, 0, 1, False),
    # More than 128 channels: the channels_last tap-by-tap path (a whole vector tail, a 3-lane one).
    (2, 144, 5, 6, 3, 2, 1, 1, True),
    (1, 131, 4, 5, 2, 1, 0, 1, False),
]


def _case_id(case):
    return "x".join(map(str, case[:4])) + f"-k{case[4]}s{case[5]}p{case[6]}d{case[7]}c{int(case[8])}".replace(" ", "")


def _kwargs(case):
    _, _, _, _, kernel, stride, padding, dilation, ceil_mode = case
    return dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=ceil_mode, return_indices=True)


def _input(case, dtype, layout, values="random"):
    n, c, h, w = case[:4]
    if values == "ties":  # few distinct values: many ties
        return make_tensor((n, c, h, w), dtype, layout, low=0, high=2, seed=5).round()
    return make_tensor((n, c, h, w), dtype, layout, low=-8, high=8, seed=4)


def _check_values_only(x, ref, kwargs):
    """Without indices and without a gradient, max_pool2d takes the values-only kernel: the same
    values (NaN included) and layout as torch."""
    kwargs = dict(kwargs, return_indices=False)
    with torch.no_grad():
        ours = convpool.max_pool2d(x, **kwargs)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True)
    assert ours.stride() == ref.stride()


def _check(case, dtype, layout, values="random"):
    x = _input(case, dtype, layout, values)
    ours, ours_idx = convpool.max_pool2d(x, **_kwargs(case))
    try:
        ref, ref_idx = F.max_pool2d(x, **_kwargs(case))
    except RuntimeError as error:
        # torch's channels_last int8/uint8 kernel refuses planes larger than the dtype's maximum;
        # the same values in float64 give the reference.
        if "numeric_limits<integer_t>" not in str(error):
            raise
        ref, ref_idx = F.max_pool2d(x.double(), **_kwargs(case))
        ref = ref.to(dtype)
    assert ours.dtype == ref.dtype and ours_idx.dtype == torch.int64
    assert torch.equal(ours_idx, ref_idx)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True)
    assert ours.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(
        memory_format=torch.channels_last)
    assert ours_idx.stride() == ref_idx.stride()
    _check_values_only(x, ref, _kwargs(case))
    if dtype.is_floating_point and x.numel():
        x = leaf(x)
        out_ours = convpool.max_pool2d(x, **_kwargs(case))[0]
        out_ref = F.max_pool2d(x, **_kwargs(case))[0]
        (g_ours,), (g_ref,) = grads(out_ours, (x,)), grads(out_ref, (x,))
        tol = dict(rtol=0, atol=0) if dtype in (torch.float32, torch.float64) else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(g_ours, g_ref, **tol)
        assert g_ours.stride() == g_ref.stride()


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_matches_torch(case, dtype, layout):
    _check(case, dtype, layout)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8])
def test_ties_first_maximum_wins(case, dtype, layout):
    _check(case, dtype, layout, values="ties")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_and_inf_rules(layout):
    """NaN wins (the last NaN of a window), -inf windows report their first element, +inf wins."""
    x = make_tensor((2, 3, 9, 9), torch.float64, layout, seed=7)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=x.dtype)
    g = torch.Generator().manual_seed(3)
    mask = torch.randint(0, 5, x.shape, generator=g)
    x = torch.where(mask == 0, specials[0], torch.where(mask == 1, specials[1], torch.where(mask == 2, specials[2], x)))
    x[0, 0] = -float("inf")  # a whole plane of -inf
    x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    for kwargs in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, ceil_mode=True),
                   dict(kernel_size=3, stride=1, dilation=2)):
        ours, ours_idx = convpool.max_pool2d(x, return_indices=True, **kwargs)
        ref, ref_idx = F.max_pool2d(x, return_indices=True, **kwargs)
        assert torch.equal(ours_idx, ref_idx)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True)
        _check_values_only(x, ref, kwargs)
        xg = leaf(x)
        (g_ours,) = grads(convpool.max_pool2d(xg, **kwargs), (xg,))
        (g_ref,) = grads(F.max_pool2d(xg, **kwargs), (xg,))
        torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=0)


def test_indices_work_with_max_unpool2d():
    x = torch.randn(2, 3, 8, 8)
    values, indices = convpool.max_pool2d(x, 2, return_indices=True)
    torch.testing.assert_close(F.max_unpool2d(values, indices, 2),
                               F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2))


def test_unbatched_input():
    x = torch.randn(3, 9, 8)
    for kwargs in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, ceil_mode=True)):
        ours, idx = convpool.max_pool2d(x, return_indices=True, **kwargs)
        ref, ref_idx = F.max_pool2d(x, return_indices=True, **kwargs)
        assert torch.equal(ours, ref) and torch.equal(idx, ref_idx)


def test_stride_defaults_to_kernel_size():
    x = torch.randn(1, 2, 9, 9)
    for stride in (None, []):
        assert torch.equal(convpool.max_pool2d(x, 3, stride), F.max_pool2d(x, 3, stride))


def test_window_wholly_in_padding_is_safe():
    """PyTorch returns indices 11 and 15 for a 10-element plane here (out of bounds) and its
    backward writes outside grad_input. convpool returns -inf with index -1 (no input element) and
    gives such windows no gradient."""
    x = leaf(torch.randn(1, 1, 1, 10))
    values, indices = convpool.max_pool2d(x, 3, 6, 1, 2, ceil_mode=True, return_indices=True)
    assert torch.equal(indices, torch.full((1, 1, 1, 2), -1))
    assert torch.equal(values, torch.full((1, 1, 1, 2), -float("inf")))
    (grad,) = torch.autograd.grad(values.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))


def test_backward_rejects_out_of_range_indices():
    x = torch.randn(1, 1, 4, 4)
    grad_output = torch.ones(1, 1, 2, 2)
    indices = torch.tensor([[[[0, 2], [8, 16]]]])
    with pytest.raises(RuntimeError, match="outside the input plane"):
        torch.ops.convpool.max_pool2d_backward(grad_output, x, indices, [2], [2], [0], [1], False)


def test_deterministic_overlapping_backward():
    x = leaf(torch.randn(4, 8, 17, 17))
    results = [torch.autograd.grad(convpool.max_pool2d(x, 3, 1, 1).sum(), x)[0] for _ in range(2)]
    assert torch.equal(*results)


def test_huge_stride_computes_the_single_window():
    """torch refuses strides that do not fit in 32 bits ("value cannot be converted to type int");
    convpool's shape math is int64, so the result is the one window any stride >= H, W gives."""
    x = torch.randn(2, 3, 9, 9)
    for stride in (2**40, 2**62):
        values, indices = convpool.max_pool2d(x, 3, stride, 1, return_indices=True)
        ref_values, ref_indices = F.max_pool2d(x, 3, 100, 1, return_indices=True)
        assert torch.equal(values, ref_values) and torch.equal(indices, ref_indices)


def test_values_only_kernel_is_used_only_without_indices_or_gradient():
    """functional.max_pool2d picks max_pool2d_values exactly when nothing needs the indices
    (counted from the ops the dispatcher runs: functional holds the ops it calls)."""
    x = torch.randn(1, 2, 6, 6)

    def ops_run(call):
        with torch.profiler.profile() as prof:
            call()
        return [e.name for e in prof.events() if e.name.startswith("convpool::")]

    assert ops_run(lambda: convpool.max_pool2d(x, 2)) == ["convpool::max_pool2d_values"]
    # A gradient needs the indices, so does return_indices.
    assert ops_run(lambda: convpool.max_pool2d(leaf(x), 2)) == ["convpool::max_pool2d"]
    assert ops_run(lambda: convpool.max_pool2d(x, 2, return_indices=True)) == [
        "convpool::max_pool2d"]
    with torch.no_grad():  # grad mode off: values only
        assert ops_run(lambda: convpool.max_pool2d(leaf(x), 2)) == [
            "convpool::max_pool2d_values"]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bad", [-2, 64 * 64, 2**62, 2**32 + 5])
def test_backward_rejects_bad_index_in_vector_check(layout, bad):
    """Indices are range-checked a row (NCHW) or a pixel (channels_last) at a time, a vector per
    compare: a bad one in the middle of a vector, negative other than -1, or one whose low 32
    bits name a valid element, still raises, whichever backward algorithm runs."""
    x = torch.randn(1, 24, 64, 64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    values, indices = convpool.max_pool2d(x, 2, return_indices=True)
    indices = indices.clone()
    indices[0, 13, 5, 11] = bad
    args = (torch.ones_like(values), x, indices, [2], [2], [0], [1], False)
    names = cpu.algorithms("max_pool2d_backward", *args)
    assert names
    for name in names:
        with cpu.force(name):
            with pytest.raises(RuntimeError, match=r"index -?\d+ at output position \(0, 13, 5, 11\) is outside"):
                torch.ops.convpool.max_pool2d_backward(*args)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_sums_indices_outside_their_windows(layout):
    """Indices need not come from the forward: any index inside the plane gets its gradient,
    summed in output order as torch does, whichever backward algorithm runs (the vector
    channels_last kernel, which expects each index among its window's taps, hands such calls to
    the portable scatter)."""
    x = make_tensor((2, 20, 12, 10), torch.float32, layout, seed=3)
    values = F.max_pool2d(x, 3, 2, 1)
    g = torch.Generator().manual_seed(4)
    indices = torch.randint(-1, 12 * 10, values.shape, generator=g)
    grad_output = make_tensor(tuple(values.shape), torch.float32, layout, seed=5)
    if layout == "channels_last":
        indices = indices.contiguous(memory_format=torch.channels_last)
    args = (grad_output, x, indices, [3], [2], [1], [1], False)
    # torch has no "no input element" index: -1 is ours; give those outputs no gradient there too
    expected = torch.ops.aten.max_pool2d_with_indices_backward(
        torch.where(indices < 0, 0.0, grad_output), x, [3], [2], [1], [1], False, indices.clamp(min=0))
    names = cpu.algorithms("max_pool2d_backward", *args)
    assert names
    for name in names:
        with cpu.force(name):
            got = torch.ops.convpool.max_pool2d_backward(*args)
        assert torch.equal(got, expected), name


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_outputs_of_32_mib_and_more_match_torch(layout):
    """Outputs of 32 MiB or more get transparent huge pages (a hint before first touch): values,
    indices and gradient are still exactly torch's (SqueezeNet pool1 at batch 8: 35 MB grad_input)."""
    x = make_tensor((8, 96, 109, 109), torch.float32, layout, seed=11)
    assert x.numel() * x.element_size() >= 32 << 20
    kwargs = dict(kernel_size=3, stride=2, ceil_mode=True, return_indices=True)
    values, indices = convpool.max_pool2d(x, **kwargs)
    ref, ref_indices = F.max_pool2d(x, **kwargs)
    assert torch.equal(values, ref) and torch.equal(indices, ref_indices)
    grad_output = make_tensor(tuple(values.shape), torch.float32, layout, seed=12)
    ours = torch.ops.convpool.max_pool2d_backward(grad_output, x, indices, [3], [2], [0], [1], True)
    expected = torch.ops.aten.max_pool2d_with_indices_backward(grad_output, x, [3], [2], [0], [1], True, ref_indices)
    assert torch.equal(ours, expected) and ours.stride() == expected.stride()
