"""The CPU algorithm registry (csrc/cpu/registry.h, convpool.backends.cpu): for every sample of
tests/samples.py, in every layout and dtype, each op lists its applicable algorithms and each one,
forced, matches torch (float64 reference); every registered algorithm is run on at least one
sample, so no test depends on where a heuristic threshold lies. Algorithms needing an instruction
set this CPU lacks (or CONVPOOL_CPU_ISA caps) are skipped, and say so."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import convpool  # noqa: F401
import samples
from convpool.backends import cpu
from helpers import make_tensor

HERE = os.path.dirname(os.path.abspath(__file__))
CONV_DTYPES = [torch.float32, torch.float64, torch.bfloat16]
POOL_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Against a float64 reference (Winograd's documented float32 bound at these channel counts is
# ~5e-4; bfloat16 results are rounded to 8 bits).
TOL = {torch.float64: dict(rtol=1e-7, atol=1e-7), torch.float32: dict(rtol=1e-4, atol=1e-3),
       torch.bfloat16: dict(rtol=3e-2, atol=6e-2), torch.float16: dict(rtol=2e-3, atol=2e-3)}
CONV_OPS = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias"]
POOL_OPS = ["max_pool2d", "max_pool2d_values", "max_pool2d_backward"]


def runnable(isa):
    return isa in cpu.isas()


def conv_calls(s, layout, dtype, weight_layout="contiguous"):
    """{op: (args, float64 reference)} for the four conv ops of sample `s`."""
    x = make_tensor(s.input_size, dtype, layout, seed=1)
    w = make_tensor(s.weight_size, dtype, weight_layout, seed=2)
    b = make_tensor((1, 1, 1, s.k), dtype, seed=3).flatten()
    xd, wd, bd = (t.double().requires_grad_(True) for t in (x, w, b))
    out = F.conv2d(xd, wd, bd, s.stride, s.padding, s.dilation, s.groups)
    go = make_tensor(tuple(out.shape), dtype, layout, seed=4)
    gi, gw, gb = torch.autograd.grad(out, [xd, wd, bd], go.double())
    args = s.args()
    return {
        "conv2d": ([x, w, b] + args, out.detach()),
        "conv2d_grad_input": ([go, w, list(x.shape)] + args, gi),
        "conv2d_grad_weight": ([go, x, list(w.shape)] + args, gw),
        "conv2d_grad_bias": ([go], gb),
    }


def pool_calls(s, layout, dtype):
    """{op: (args, reference, exact indices or None)} for the three pool ops of sample `s`."""
    x = make_tensor((s.n, s.c, s.h, s.w), dtype, layout, seed=5)
    values, indices = F.max_pool2d(x, s.kernel, s.stride, s.padding, s.dilation, s.ceil_mode,
                                   return_indices=True)
    go = make_tensor(tuple(values.shape), dtype, layout, seed=6)
    gi = torch.ops.aten.max_pool2d_with_indices_backward(
        go.double(), x.double(), list(s.kernel), list(s.stride), list(s.padding),
        list(s.dilation), s.ceil_mode, indices)
    args = s.args()
    return {
        "max_pool2d": ([x] + args, values, indices),
        "max_pool2d_values": ([x] + args, values, None),
        "max_pool2d_backward": ([go, x, indices] + args, gi, None),
    }


def check(op, args, expected, indices, dtype, name):
    with cpu.force(name):
        assert cpu.selected(op, *args) == name
        got = getattr(torch.ops.convpool, op)(*args)
    if indices is not None:
        got, got_indices = got
        assert torch.equal(got_indices, indices), (op, name)
    torch.testing.assert_close(got.double(), expected.double(), **TOL[dtype],
                               msg=lambda m: f"{op} forced to {name}: {m}")


def conv_cases():
    for s in samples.CONV:
        for layout in samples.CONV_LAYOUTS:
            for dtype in CONV_DTYPES:
                yield s, layout, dtype


def pool_cases():
    for s in samples.POOL:
        for layout in samples.POOL_LAYOUTS:
            for dtype in POOL_DTYPES:
                yield s, layout, dtype


@pytest.mark.parametrize("dtype", CONV_DTYPES, ids=str)
@pytest.mark.parametrize("layout", samples.CONV_LAYOUTS)
@pytest.mark.parametrize("sample", samples.CONV, ids=str)
def test_conv_every_applicable_algorithm_matches_torch(sample, layout, dtype):
    for op, (args, expected) in conv_calls(sample, layout, dtype).items():
        names = cpu.algorithms(op, *args)
        assert names, op
        assert cpu.selected(op, *args) == names[0]  # the heuristic runs the first
        assert len(set(names)) == len(names)
        for name in names:
            check(op, args, expected, None, dtype, name)


@pytest.mark.parametrize("dtype", CONV_DTYPES, ids=str)
@pytest.mark.parametrize("sample", samples.CONV, ids=str)
def test_conv_channels_last_weight_every_algorithm_matches_torch(sample, dtype):
    """A model converted to channels_last holds its weights so: the GEMMs read a float one in
    place, with the reduction ordered (kh, kw, c)."""
    for op, (args, expected) in conv_calls(sample, "channels_last", dtype, "channels_last").items():
        for name in cpu.algorithms(op, *args):
            check(op, args, expected, None, dtype, name)


@pytest.mark.parametrize("dtype", POOL_DTYPES, ids=str)
@pytest.mark.parametrize("layout", samples.POOL_LAYOUTS)
@pytest.mark.parametrize("sample", samples.POOL, ids=str)
def test_pool_every_applicable_algorithm_matches_torch(sample, layout, dtype):
    for op, (args, expected, indices) in pool_calls(sample, layout, dtype).items():
        names = cpu.algorithms(op, *args)
        assert names, op
        assert cpu.selected(op, *args) == names[0]
        for name in names:
            check(op, args, expected, indices, dtype, name)


@pytest.mark.parametrize("op,name,isa", cpu.table(), ids=lambda v: str(v))
def test_every_registered_algorithm_runs_on_some_sample(op, name, isa):
    """Each table entry applies to a sample of tests/samples.py and, forced, matches torch."""
    if not runnable(isa):
        pytest.skip(f"{name} needs {isa}; this CPU (after CONVPOOL_CPU_ISA) reaches {cpu.isas()}")
    pool = op.startswith("max_pool2d")
    for s, layout, dtype in pool_cases() if pool else conv_cases():
        calls = pool_calls(s, layout, dtype) if pool else conv_calls(s, layout, dtype)
        args, expected, *indices = calls[op]
        if name in cpu.algorithms(op, *args):
            check(op, args, expected, indices[0] if indices else None, dtype, name)
            return
    pytest.fail(f"no sample in tests/samples.py that {op}'s {name} applies to: add one")


def test_table_names_are_unique_per_op():
    entries = cpu.table()
    assert len(entries) == len(set((op, name) for op, name, _ in entries))
    assert {op for op, _, _ in entries} == set(CONV_OPS + POOL_OPS)


def test_forcing_an_inapplicable_algorithm_names_the_applicable_ones():
    x, w = torch.randn(1, 8, 9, 9), torch.randn(8, 8, 3, 3)
    args = [x, w, None, [2, 2], [1, 1], [1, 1], 1]  # stride 2: no Winograd
    assert "winograd_f4x4" not in cpu.algorithms("conv2d", *args)
    with cpu.force("winograd_f4x4"):
        with pytest.raises(ValueError, match=r"'winograd_f4x4' does not apply to conv2d .*"
                                             r"stride \(2, 2\).*applicable here: gemm_im2col"):
            torch.ops.convpool.conv2d(*args)
        # ops with no entry of that name keep their heuristic
        out = torch.ops.convpool.max_pool2d_values(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
        torch.testing.assert_close(out, F.max_pool2d(x, 2))


@pytest.mark.skipif(runnable("avx512"), reason="this CPU has AVX-512")
def test_forcing_an_algorithm_this_cpu_lacks_says_which_isa():
    x = torch.randn(1, 8, 9, 9)
    with cpu.force("pool_avx512_rows"):
        with pytest.raises(ValueError, match=r"needs avx512; this CPU runs (avx2|generic)"):
            torch.ops.convpool.max_pool2d_values(x, [2, 2], [2, 2], [0, 0], [1, 1], False)


def test_forcing_amx_where_it_is_off_says_so():
    """amx_bf16 needs AMX (isa "amx"): capped to AVX2 (or on a CPU without AMX) forcing it
    names what is missing; the call is never attempted."""
    code = ("import torch, convpool\n"
            "from convpool.backends import cpu\n"
            "assert 'amx' not in cpu.isas(), cpu.isas()\n"
            "x, w = torch.zeros(1, 32, 6, 6).bfloat16(), torch.zeros(32, 32, 3, 3).bfloat16()\n"
            "with cpu.force('amx_bf16'):\n"
            "    try:\n"
            "        torch.ops.convpool.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)\n"
            "    except ValueError as e:\n"
            "        print(e)\n")
    env = dict(os.environ, CONVPOOL_CPU_ISA="avx2")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'amx_bf16' does not apply to conv2d" in out.stdout
    assert "it needs amx; this CPU runs avx2" in out.stdout


def test_unknown_name_is_refused_at_entry():
    with pytest.raises(ValueError, match="unknown CPU algorithm 'gemm_fast'.*gemm_im2col"):
        with cpu.force("gemm_fast"):
            pass
    assert cpu._C._cpu_force() is None


def test_force_nests_and_restores():
    with cpu.force("gemm_im2col"):
        with cpu.force("gemm_col2im"):
            assert cpu._C._cpu_force() == "gemm_col2im"
        assert cpu._C._cpu_force() == "gemm_im2col"
    assert cpu._C._cpu_force() is None


def test_algorithms_lists_the_same_under_a_forced_algorithm_that_cannot_run():
    # winograd_f4x4 needs stride 1: forced, the call and selected() raise, algorithms() lists.
    x, w = torch.randn(2, 8, 13, 11), torch.randn(16, 8, 3, 3)
    args = [x, w, None, [2, 2], [1, 1], [1, 1], 1]
    names = cpu.algorithms("conv2d", *args)
    assert names and "winograd_f4x4" not in names
    with cpu.force("winograd_f4x4"):
        assert cpu.algorithms("conv2d", *args) == names
        with pytest.raises(ValueError, match="'winograd_f4x4' does not apply"):
            cpu.selected("conv2d", *args)
        assert cpu._C._cpu_force() == "winograd_f4x4"


def test_algorithms_leaves_the_forced_name_alone(monkeypatch):
    """The forced name is one per process: algorithms() must not clear it around its query, or an
    op running on another thread meanwhile would run unforced."""
    calls = []
    real = cpu._C._cpu_force

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(cpu._C, "_cpu_force", spy)
    x, w = torch.randn(2, 8, 13, 11), torch.randn(16, 8, 3, 3)
    with cpu.force("winograd_f4x4"):
        calls.clear()
        assert "winograd_f4x4" not in cpu.algorithms("conv2d", x, w, None, [2, 2], [1, 1], [1, 1], 1)
        assert "winograd_f4x4" in cpu.algorithms("conv2d", x, w, None, [1, 1], [1, 1], [1, 1], 1)
        assert not [c for c in calls if c], calls  # no call set it


def test_algorithms_accepts_the_op_itself_and_checks_arguments():
    x, w = torch.randn(2, 4, 6, 6), torch.randn(6, 4, 3, 3)
    args = [x, w, None, [1, 1], [1, 1], [1, 1], 1]
    assert cpu.algorithms(torch.ops.convpool.conv2d, *args) == cpu.algorithms("conv2d", *args)
    with pytest.raises(RuntimeError, match=r"Input type \(Double\) and weight type \(Float\)"):
        cpu.algorithms("conv2d", x.double(), w, None, [1], [1], [1], 1)
    with pytest.raises(ValueError, match="no op 'conv3d'"):
        cpu.algorithms("conv3d", *args)
    # an empty output runs no kernel
    assert cpu.algorithms("conv2d", torch.randn(0, 4, 6, 6), w, None, [1], [1], [1], 1) == []
    assert cpu.selected("conv2d", torch.randn(0, 4, 6, 6), w, None, [1], [1], [1], 1) is None


def test_query_computes_nothing_and_leaves_no_state():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3)
    cpu.algorithms("conv2d", x, w, None, [1], [1], [1], 1)
    torch.testing.assert_close(convpool.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE,
                          env=dict(os.environ, **env), timeout=300)


def test_env_forces_from_the_start():
    code = ("import torch, convpool; from convpool.backends import cpu; "
            "x, w = torch.randn(1, 16, 12, 12), torch.randn(16, 16, 3, 3); "
            "print(cpu.selected('conv2d', x, w, None, [1], [1], [1], 1))")
    assert run_python(code, CONVPOOL_CPU_ALGO="winograd_f4x4").stdout.split() == ["winograd_f4x4"]
    assert run_python(code, CONVPOOL_CPU_ALGO="gemm_im2col").stdout.split() == ["gemm_im2col"]
    bad = run_python(code, CONVPOOL_CPU_ALGO="nope")
    assert bad.returncode != 0 and "CONVPOOL_CPU_ALGO: unknown CPU algorithm 'nope'" in bad.stderr
