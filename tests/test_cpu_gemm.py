"""The CPU conv GEMM (csrc/cpu/gemm/) under the GEMM-based conv algorithms (conv_gemm.cpp),
forced by name (gemm_im2col, gemm_col2im: whichever applies to each op), so no shape reaches them
or misses them through a heuristic threshold: edge tiles, the 1x1 and channels_last paths,
determinism across thread counts, and the portable kernel forced with CONVPOOL_CPU_ISA=generic."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import convpool
from convpool import _C
from helpers import conv_op_args, every_algorithm

GEMM = ("gemm_im2col", "gemm_col2im")

# (N, C_in, H, W, C_out, k, stride, padding): GEMM M, N, K that are not multiples of the register
# tiles (6/12 x 16/32) or cache blocks (KC 192/256, MC 96-192, NC 512/1024), K = 1, tiny problems.
SHAPES = [
    (1, 1, 1, 1, 1, 1, 1, 0),  # K = 1, one pixel
    (2, 1, 5, 7, 3, 1, 1, 0),  # K = 1
    (1, 3, 4, 4, 1, 3, 1, 1),  # M = 1
    (2, 5, 7, 9, 13, 3, 1, 1),
    (1, 70, 9, 11, 150, 3, 1, 1),  # K = 630 > KC, M = 150 > MC
    (1, 7, 41, 45, 17, 3, 1, 1),  # N = 1845 > NC: several column blocks
    (3, 300, 5, 5, 20, 1, 1, 0),  # 1x1, K = 300 > KC, tiles spanning images
    (2, 33, 12, 10, 37, 1, 1, 0),  # 1x1 plane runs across rows
    (2, 9, 13, 11, 35, 3, 2, 1),  # stride 2
    (1, 4, 30, 3, 5, 5, 1, 2),  # narrow image: many short runs per panel
]


def _ids(shape):
    return "n{}c{}h{}w{}o{}k{}s{}p{}".format(*shape)


def _reference(x, w, b, stride, padding):
    """float64 result and gradients for a fixed output gradient."""
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = F.conv2d(xd, wd, bd, stride=stride, padding=padding)
    g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
    return (y,) + torch.autograd.grad(y, (xd, wd, bd), g), g


def _ours(x, w, b, stride, padding, g, groups=1):
    """[(index into _reference's tuple, algorithm, result)]: output, grad_input, grad_weight with
    every GEMM algorithm that applies forced (at least one per op), and grad_bias. The output
    gradient is in the output's memory format, as autograd passes it."""
    y = torch.ops.convpool.conv2d(x, w, b, [stride] * 2, [padding] * 2, [1, 1], groups)
    go = g.to(y.dtype)
    if not y.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last):
        go = go.contiguous(memory_format=torch.channels_last)
    args = conv_op_args(x, w, b, go, stride, padding, 1, groups)
    results = []
    for i, op in enumerate(("conv2d", "conv2d_grad_input", "conv2d_grad_weight")):
        forced = every_algorithm(op, args[op], only=GEMM)
        assert forced, (op, "no GEMM algorithm applies")
        results += [(i, name, out) for name, out in forced]
    results.append((3, "heuristic", torch.ops.convpool.conv2d_grad_bias(go)))
    return results


def _inputs(shape, dtype, layout):
    n, c, h, w, co, k, _, _ = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype) * 2 - 1
    wt = torch.rand(co, c, k, k, generator=gen, dtype=torch.float64).to(dtype) * 2 - 1
    b = torch.rand(co, generator=gen, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided_view":
        x = torch.cat([x, x], 3)[..., ::2]
    return x, wt, b


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_view"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_edge_tiles_against_float64(shape, dtype, layout):
    x, w, b = _inputs(shape, dtype, layout)
    stride, padding = shape[6], shape[7]
    ref, g = _reference(x, w, b, stride, padding)
    ours = _ours(x, w, b, stride, padding, g)
    like_torch = F.conv2d(x, w, b, stride=stride, padding=padding)
    rtol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}[dtype]
    for i, name, a in ours:
        if i == 0:
            assert a.stride() == like_torch.stride(), name
        r = ref[i]
        scale = max(r.abs().max().item(), 1.0)  # operands are O(1)
        assert (a.double() - r).abs().max().item() <= rtol * scale, (i, name)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threads_give_identical_bits(dtype, layout):
    x, w, b = _inputs((2, 48, 30, 30, 72, 3, 1, 1), dtype, layout)
    g = torch.randn(2, 72, 30, 30, generator=torch.Generator().manual_seed(3), dtype=dtype)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            results.append(_ours(x, w, b, 1, 1, g))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for (i, name, a), (_, _, r) in zip(other, results[0]):
            assert torch.equal(a, r), (i, name)


def test_isa_reported():
    assert _C._cpu_isa() in ("avx512", "avx2", "generic")


_SUBPROCESS_CHECK = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F, convpool
    from convpool import _C
    from convpool.backends import cpu
    assert _C._cpu_isa() == sys.argv[1], (_C._cpu_isa(), sys.argv[1])
    torch.manual_seed(0)
    with cpu.force("gemm_im2col"):  # fprop, stride-1 dgrad and wgrad: the GEMM, by name
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            for cl in (False, True):
                for (ci, co, k, p) in ((13, 35, 3, 1), (40, 9, 1, 0), (3, 50, 7, 3)):
                    x = torch.randn(2, ci, 23, 19, dtype=dtype)
                    if cl:
                        x = x.contiguous(memory_format=torch.channels_last)
                    w = torch.randn(co, ci, k, k, dtype=dtype)
                    x.requires_grad_(); w.requires_grad_()
                    y = convpool.conv2d(x, w, None, padding=p)
                    g = torch.randn_like(y)
                    ours = (y,) + torch.autograd.grad(y, (x, w), g)
                    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
                    r = F.conv2d(xd, wd, padding=p)
                    ref = (r,) + torch.autograd.grad(r, (xd, wd), g.double())
                    for a, b in zip(ours, ref):
                        err = (a.double() - b).abs().max().item() / (b.abs().max().item() + 1e-12)
                        assert err <= tol, (dtype, cl, ci, co, k, err)
    print("ok")
""")


def _run_with_isa(isa_env):
    env = dict(os.environ, CONVPOOL_CPU_ISA=isa_env)
    return subprocess.run([sys.executable, "-c", _SUBPROCESS_CHECK, isa_env], env=env,
                          capture_output=True, text=True, timeout=300)


def test_generic_fallback_kernel():
    """CONVPOOL_CPU_ISA=generic forces the portable kernel (what a CPU without AVX2 runs)."""
    proc = _run_with_isa("generic")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.skipif(_C._cpu_isa() != "avx512", reason="needs an AVX-512 CPU")
def test_avx2_kernel_on_avx512_cpu():
    proc = _run_with_isa("avx2")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_bad_isa_value_is_an_error():
    code = "import convpool, torch; from convpool import _C; _C._cpu_isa()"
    env = dict(os.environ, CONVPOOL_CPU_ISA="sse9")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "CONVPOOL_CPU_ISA" in proc.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_groups_with_wide_groups(dtype, layout):
    """Groups of >= 8 channels (the channels_last register-transpose packer works per group)."""
    x, _, _ = _inputs((2, 36, 11, 10, 1, 1, 1, 1), dtype, layout)
    gen = torch.Generator().manual_seed(5)
    w = torch.rand(24, 12, 3, 3, generator=gen, dtype=torch.float64).to(dtype) - 0.5
    b = torch.rand(24, generator=gen, dtype=torch.float64).to(dtype)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    r = F.conv2d(xd, wd, bd, padding=1, groups=3)
    g = torch.linspace(-1, 1, r.numel(), dtype=torch.float64).reshape(r.shape)
    ref = (r,) + torch.autograd.grad(r, (xd, wd, bd), g)
    ours = _ours(x, w, b, 1, 1, g, groups=3)
    rtol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    for i, name, a in ours:
        e = ref[i]
        assert (a.double() - e).abs().max().item() <= rtol * max(e.abs().max().item(), 1.0), (i, name)
