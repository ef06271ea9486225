"""Depthwise conv2d on the CPU (one output channel per input channel): the vectorized float32
kernels of csrc/cpu/depthwise/ and the portable templates they fall back to, forward,
grad_input and grad_weight, against torch in float64 and float32, in every layout they walk:

- channels_last: vectors along channels (16 and 8 lanes: 16, 32 full, 17 and 40 with a partial one)
- NCHW small planes at stride 1 with "same" rows: the plane flattened (width <= 24)
- NCHW wide rows at stride 1 (output width >= 64): vectors along the width
- NCHW otherwise: channel-blocked tiles (16 planes interleaved, banded rows)
- strided grad_input: one stride-1 correlation per phase (channels_last, or in blocked tiles)
- any other dtype: the portable kernels.
Each kernel (registry entry) that applies to a case is forced on it in turn
(test_every_applicable_kernel_forced_matches_float64), so no walk is reached by a shape picked
near a threshold; the other tests run what the heuristic selects. The same tests run again with CONVPOOL_CPU_ISA=avx2 and =generic (test_cpu_isa.py)."""
import pytest
import torch
import torch.nn.functional as F

import convpool
from convpool.backends import cpu
from helpers import CONV_OPS, TOLERANCES, conv_op_args, every_algorithm, grads, leaf, make_tensor

# (N, C, H, W, kernel, stride, padding, dilation): each row names the walk it is there for (the
# heuristic's choice today, float32); the forced test runs every walk that applies to it
CASES = [
    (2, 16, 9, 11, (3, 3), 1, 1, 1),      # flat (NCHW), channels_last
    (2, 17, 7, 7, (3, 3), 1, 1, 1),       # flat, partial vector; channels_last partial
    (1, 40, 14, 14, (3, 3), 1, 1, 1),     # flat, several vectors per plane
    (2, 32, 6, 20, (5, 5), 1, 2, 1),      # flat, 5x5
    (2, 16, 12, 21, (3, 3), 1, 2, 2),     # flat, dilated
    (2, 16, 5, 70, (3, 3), 1, 1, 1),      # planes
    (2, 17, 6, 70, (3, 3), 2, 1, 1),      # blocked at stride 2 (grad_input: phases in tiles)
    (1, 16, 4, 37, (1, 5), (1, 2), (0, 2), 1),  # blocked, stride (1, 2), rectangular kernel
    (2, 16, 8, 72, (3, 3), 1, 0, 2),      # planes, no padding, dilated
    (2, 17, 9, 13, (3, 3), 1, 0, 1),      # blocked (rows of different widths)
    (2, 40, 11, 9, (3, 3), 2, 1, 1),      # blocked, stride 2
    (1, 16, 10, 12, (3, 5), (3, 1), (1, 2), (1, 2)),  # blocked, stride 3 rows
    (2, 3, 8, 8, (3, 3), 1, 1, 1),        # 3 channels (less than one vector)
    (1, 16, 3, 3, (5, 5), 1, 2, 1),       # kernel larger than the map
    (1, 16, 7, 5, (1, 5), 1, 2, 2),       # a tap that never lands inside
]
LAYOUTS = ["contiguous", "channels_last", "strided_view"]


def run_both(x, w, b, stride, padding, dilation):
    groups = x.shape[1]
    xs, ws = leaf(x), leaf(w)
    bs = leaf(b) if b is not None else None
    ours = convpool.conv2d(xs, ws, bs, stride, padding, dilation, groups)
    ours_grads = grads(ours, [xs, ws, bs])
    return ours, ours_grads


def reference(x, w, b, stride, padding, dilation):
    groups = x.shape[1]
    xd, wd = leaf(x.double()), leaf(w.double())
    bd = leaf(b.double()) if b is not None else None
    out = F.conv2d(xd, wd, bd, stride, padding, dilation, groups)
    return out, grads(out, [xd, wd, bd])


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [False, True])
def test_float32_matches_torch(case, layout, bias):
    n, c, h, w_, kernel, stride, padding, dilation = case
    x = make_tensor((n, c, h, w_), torch.float32, layout, seed=1)
    w = make_tensor((c, 1) + kernel, torch.float32, "contiguous", seed=2)
    b = make_tensor((1, 1, 1, c), torch.float32, seed=3).flatten() if bias else None
    ours, ours_grads = run_both(x, w, b, stride, padding, dilation)
    ref, ref_grads = reference(x, w, b, stride, padding, dilation)
    torch_out = F.conv2d(x, w, b, stride, padding, dilation, c)
    assert ours.shape == torch_out.shape and ours.stride() == torch_out.stride()
    torch.testing.assert_close(ours, torch_out, **TOLERANCES[torch.float32])
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(ours_grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def forced_calls(case, layout, dtype, bias=True):
    """{op: (args, float64 reference)} of the four conv ops of a depthwise case."""
    n, c, h, w_, kernel, stride, padding, dilation = case
    x = make_tensor((n, c, h, w_), dtype, layout, seed=12)
    w = make_tensor((c, 1) + kernel, dtype, "contiguous", seed=13)
    b = make_tensor((1, 1, 1, c), dtype, seed=14).flatten() if bias else None
    xd, wd = leaf(x.double()), leaf(w.double())
    bd = leaf(b.double()) if bias else None
    out = F.conv2d(xd, wd, bd, stride, padding, dilation, c)
    go = make_tensor(tuple(out.shape), dtype, layout, seed=15)
    refs = [out.detach()] + list(torch.autograd.grad(out, [t for t in (xd, wd, bd) if t is not None],
                                                     go.double()))
    args = conv_op_args(x, w, b, go, stride, padding, dilation, c)
    return {op: (args[op], ref) for op, ref in zip(CONV_OPS, refs)}


DEPTHWISE = {name for _, name, _ in cpu.table() if name.startswith("depthwise")}


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_applicable_kernel_forced_matches_float64(case, layout):
    """Forward, grad_input and grad_weight (and grad_bias) with each CPU algorithm that applies
    forced in turn: every depthwise walk and portable kernel (and the GEMM, which applies too),
    whatever the heuristic prefers."""
    for op, (args, ref) in forced_calls(case, layout, torch.float32).items():
        results = every_algorithm(op, args)
        assert results, op
        if op != "conv2d_grad_bias":  # the GEMM applies to a depthwise conv too (not preferred)
            assert {name for name, _ in results} & DEPTHWISE, op
        for name, got in results:
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"{op} forced to {name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_other_dtypes_every_portable_kernel_forced(dtype, layout):
    tol = TOLERANCES[dtype]
    for case in (CASES[0], CASES[6], CASES[10]):
        for op, (args, ref) in forced_calls(case, layout, dtype).items():
            results = every_algorithm(op, args)
            assert results, op
            scale = max(1.0, ref.abs().max().item())
            for name, got in results:
                torch.testing.assert_close(got.double() / scale, ref / scale, **tol,
                                           msg=lambda m: f"{op} forced to {name}: {m}")


def test_the_cases_reach_every_depthwise_kernel():
    """Each depthwise entry this CPU can run applies to some case (and so is forced above)."""
    rank = {"generic": 0, "avx2": 1, "avx512": 2}
    wanted = {(op, name) for op, name, isa in cpu.table()
              if name in DEPTHWISE and rank[isa] <= rank[cpu.isa()]}
    reached = set()
    for case in CASES:
        for layout in LAYOUTS:
            for op, (args, _) in forced_calls(case, layout, torch.float32).items():
                reached |= {(op, name) for name in cpu.algorithms(op, *args)}
    assert wanted <= reached, sorted(wanted - reached)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_other_dtypes_match_torch(dtype, layout):
    for case in (CASES[0], CASES[6], CASES[10]):
        n, c, h, w_, kernel, stride, padding, dilation = case
        x = make_tensor((n, c, h, w_), dtype, layout, seed=4)
        w = make_tensor((c, 1) + kernel, dtype, seed=5)
        b = make_tensor((1, 1, 1, c), dtype, seed=6).flatten()
        ours, ours_grads = run_both(x, w, b, stride, padding, dilation)
        ref, ref_grads = reference(x, w, b, stride, padding, dilation)
        tol = TOLERANCES[dtype]
        torch.testing.assert_close(ours.double(), ref, **tol)
        for got, want in zip(ours_grads, ref_grads):
            scale = max(1.0, want.abs().max().item())
            torch.testing.assert_close(got.double() / scale, want / scale, **tol)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_mobilenet_layers_at_batch_size(layout):
    # MobileNetV2's depthwise shapes (scaled down in space): the flat, channel-blocked, strided and
    # channels_last walks at real channel counts.
    for c, hw, stride in [(32, 40, 1), (96, 40, 2), (144, 28, 1), (144, 28, 2), (384, 14, 1),
                          (576, 14, 2), (960, 7, 1)]:
        x = make_tensor((2, c, hw, hw), torch.float32, layout, seed=c)
        w = make_tensor((c, 1, 3, 3), torch.float32, seed=c + 1)
        b = make_tensor((1, 1, 1, c), torch.float32, seed=c + 2).flatten()
        ours, ours_grads = run_both(x, w, b, stride, 1, 1)
        ref, ref_grads = reference(x, w, b, stride, 1, 1)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
        for got, want in zip(ours_grads, ref_grads):
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_non_finite_values_propagate_as_torch(layout):
    x = make_tensor((2, 16, 9, 11), torch.float32, layout, seed=7)
    w = make_tensor((16, 1, 3, 3), torch.float32, seed=8)
    x[0, 3, 4, 5] = float("nan")
    x[1, 7, 0, 0] = float("inf")
    for stride in (1, 2):
        ours = convpool.conv2d(x, w, None, stride, 1, 1, 16)
        want = F.conv2d(x, w, None, stride, 1, 1, 16)
        torch.testing.assert_close(ours, want, equal_nan=True, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[10], (8, 48, 10, 10, (3, 3), 2, 1, 1)])
def test_bitwise_the_same_for_any_thread_count(layout, case):
    n, c, h, w_, kernel, stride, padding, dilation = case
    x = make_tensor((n, c, h, w_), torch.float32, layout, seed=9)
    w = make_tensor((c, 1) + kernel, torch.float32, seed=10)
    b = make_tensor((1, 1, 1, c), torch.float32, seed=11).flatten()
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            ours, ours_grads = run_both(x, w, b, stride, padding, dilation)
            results.append([ours] + list(ours_grads))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert torch.equal(a, b_)
