"""The CUDA kernels, run on CPU tensors by the CUDA emulator (convpool.testing.cuda_emulation):
parity with torch.nn.functional (float64 reference) for every kernel, dtype, layout and thread
order; bitwise-deterministic backward; PyTorch's OpInfo samples; the emulator's own checks.

Needs a build with CONVPOOL_BUILD_EMU=1; skipped otherwise, unless CONVPOOL_REQUIRE_EMU=1 (CI),
which makes a build without the emulator an error."""
import os

import pytest
import torch
import torch.nn.functional as F

import convpool
from convpool.testing import ORDERS, cuda_emulation, emulator_available

import cuda_cases as cc

if not emulator_available() and os.environ.get("CONVPOOL_REQUIRE_EMU", "0") == "1":
    raise RuntimeError("CONVPOOL_REQUIRE_EMU=1 but convpool was built without the CUDA emulator "
                       "(build with CONVPOOL_BUILD_EMU=1)")
pytestmark = pytest.mark.skipif(not emulator_available(),
                                reason="convpool built without CONVPOOL_BUILD_EMU=1")

# forward, reverse, and two shuffles.
EMULATION_ORDERS = [("forward", 0), ("reverse", 0), ("shuffle", 1), ("shuffle", 2)]


@pytest.fixture(params=EMULATION_ORDERS, ids=lambda o: f"{o[0]}{o[1] or ''}")
def emulated(request):
    order, seed = request.param
    with cuda_emulation(order=order, seed=seed):
        yield


@pytest.mark.parametrize("layout", cc.LAYOUTS)
@pytest.mark.parametrize("precision", list(cc.PRECISIONS))
@pytest.mark.parametrize("case", list(cc.CONV_CASES))
def test_conv2d(emulated, case, precision, layout):
    cc.check_conv(case, precision, layout)


@pytest.mark.parametrize("layout", cc.LAYOUTS)
@pytest.mark.parametrize("precision", list(cc.PRECISIONS))
@pytest.mark.parametrize("case", list(cc.TRANSPOSE_CASES))
def test_conv_transpose2d(emulated, case, precision, layout):
    cc.check_transpose(case, precision, layout)


@pytest.mark.parametrize("layout", cc.LAYOUTS)
@pytest.mark.parametrize("dtype", cc.DTYPES, ids=str)
@pytest.mark.parametrize("case", list(cc.POOL_CASES))
def test_max_pool2d(emulated, case, dtype, layout):
    cc.check_pool(case, dtype, layout)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8], ids=str)
def test_max_pool2d_integers(emulated, dtype):
    x = torch.randint(0, 5, (2, 3, 6, 6)).to(dtype)
    with torch.no_grad():
        v, i = convpool.max_pool2d(x, 3, 2, 1, return_indices=True)
    rv, ri = F.max_pool2d(x.double(), 3, 2, 1, return_indices=True)
    assert torch.equal(i, ri) and torch.equal(v, rv.to(dtype))


def test_max_pool2d_window_without_input():
    # ceil_mode + dilation: the last window has only padding: -inf and index -1, no gradient.
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    args = (2, 3, 1, 2, True)
    with cuda_emulation():
        v, i = convpool.max_pool2d(x, *args, return_indices=True)
        (gi,) = torch.autograd.grad(v[v.isfinite()].sum(), x)
    cv, ci = convpool.max_pool2d(x, *args, return_indices=True)  # CPU kernels
    assert torch.equal(i, ci) and torch.equal(v, cv)
    (cgi,) = torch.autograd.grad(cv[cv.isfinite()].sum(), x)
    assert torch.equal(gi, cgi)


def test_conv2d_views_and_modules():
    # Non-contiguous views in, nn.Module path, and the same result as the CPU kernels.
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64)[:, ::2, 1:, ::2]
    conv = convpool.Conv2d(3, 5, 3, padding=1, bias=True).double()
    pool = convpool.MaxPool2d(2)
    with cuda_emulation(order="shuffle", seed=7):
        y = pool(conv(x))
    torch.testing.assert_close(y, F.max_pool2d(F.conv2d(x, conv.weight, conv.bias, padding=1), 2))


def _backward_bits(order, seed, dtype):
    x, w, b, args = cc.make_conv("tiles", dtype, "nchw")
    with cuda_emulation(order=order, seed=seed):
        conv = cc.conv_results(x, w, b, args, convpool.conv2d)
        xp = cc.make_pool_input((2, 3, 7, 6), dtype, "nchw").requires_grad_()
        v = convpool.max_pool2d(xp, 3, 1, 1)
        (gp,) = torch.autograd.grad(v, xp, torch.ones_like(v) / 3)
    return conv + [gp]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)  # float32: TF32 on
def test_backward_is_bitwise_deterministic(dtype):
    first = _backward_bits("forward", 0, dtype)
    for order, seed in [("forward", 0), ("reverse", 0), ("shuffle", 5)]:
        for a, b in zip(first, _backward_bits(order, seed, dtype)):
            assert torch.equal(a, b)


def test_routing_is_scoped():
    # Outside the context the CPU kernels run again; nesting restores the outer order.
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with cuda_emulation(order="reverse"):
        with cuda_emulation(order="shuffle", seed=3):
            inner = convpool.conv2d(x, w)
        outer = convpool.conv2d(x, w)
    torch.testing.assert_close(inner, outer)
    with pytest.raises(ValueError):
        with cuda_emulation(order="sideways"):
            pass


# ---- PyTorch's OpInfo samples -------------------------------------------------------------

def _opinfo_samples(name, dtype):
    from torch.testing._internal.common_methods_invocations import op_db

    (op,) = [o for o in op_db if o.name == name and o.variant_test_name == ""]
    return list(op.sample_inputs("cpu", dtype, requires_grad=True))


def _run_sample(fn, sample):
    args = [sample.input] + list(sample.args)
    out = fn(*args, **sample.kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    diff = [o for o in outs if o.is_floating_point() and o.requires_grad]
    inputs = [t for t in [sample.input] + list(sample.args) + list(sample.kwargs.values())
              if isinstance(t, torch.Tensor) and t.requires_grad]
    grads_out = [torch.ones_like(o) * 0.5 for o in diff]
    grads = torch.autograd.grad(diff, inputs, grads_out, allow_unused=True) if diff else []
    return list(outs), list(grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op_name, fn, ref", [
    ("nn.functional.conv2d", convpool.conv2d, F.conv2d),
    ("nn.functional.conv_transpose2d", convpool.conv_transpose2d, F.conv_transpose2d),
    ("nn.functional.max_pool2d", convpool.max_pool2d, F.max_pool2d),
])
def test_opinfo_samples(op_name, fn, ref, dtype):
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    samples = _opinfo_samples(op_name, dtype)
    checked = 0
    for sample in samples:
        try:
            expected = _run_sample(ref, sample)
        except Exception:  # torch itself rejects it: nothing to compare
            continue
        try:
            _run_sample(fn, sample)  # the CPU path must take it too
        except Exception:
            continue
        # Full fp32 (no TF32), as torch on CPU.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), \
                cuda_emulation(order="shuffle", seed=checked):
            got = _run_sample(fn, sample)
        for g, e in zip(got[0] + got[1], expected[0] + expected[1]):
            if e is None:
                assert g is None
                continue
            torch.testing.assert_close(g, e, equal_nan=True, **tol,
                                       msg=lambda m: f"{op_name} sample {sample}: {m}")
        checked += 1
    assert checked > 0


# ---- the emulator itself ------------------------------------------------------------------

def _self_test(name):
    return torch.ops.convpool._cuda_emulator_self_test(name)


@pytest.mark.parametrize("order", EMULATION_ORDERS, ids=lambda o: f"{o[0]}{o[1] or ''}")
def test_emulator_missing_barrier_is_detected(order):
    expected = [b * 128 + 127 - t for b in range(3) for t in range(128)]
    with cuda_emulation(order=order[0], seed=order[1]):
        assert _self_test("reverse") == expected
        assert _self_test("reverse_no_barrier") != expected


@pytest.mark.parametrize("name, message", [
    ("too_many_threads", "too many threads per block"),
    ("block_z_too_large", "too many threads per block"),
    ("grid_y_too_large", "exceeds the grid limits"),
    ("grid_z_too_large", "exceeds the grid limits"),
    ("shared_over_default", "dynamic shared memory of 49153 bytes exceeds the 49152"),
    ("shared_opt_in", "dynamic shared memory of 102401 bytes exceeds the 102400"),
    ("shared_opt_in_over_max", "exceed the opt-in maximum"),
    ("warp_divergent", "never reaches it"),
    ("static_shared_over_limit", "static shared memory of 65536 bytes exceeds"),
    ("wmma_misaligned", "load_matrix_sync: pointer not 256-bit aligned"),
])
def test_emulator_limits_raise(name, message):
    with pytest.raises(RuntimeError, match=message):
        _self_test(name)


def test_emulator_limits_at_the_edge_pass():
    assert _self_test("grid_y_max") == []


@pytest.mark.parametrize("order", EMULATION_ORDERS, ids=lambda o: f"{o[0]}{o[1] or ''}")
def test_emulator_warp_collectives(order):
    with cuda_emulation(order=order[0], seed=order[1]):
        out = _self_test("warp")
        assert _self_test("atomic") == [4 * sum(range(256))]
    for t in range(64):
        lane, warp = t % 32, t // 32
        sum_, ballot, down, from0 = out[4 * t: 4 * t + 4]
        assert sum_ == sum(range(warp * 32, warp * 32 + 32))
        assert ballot == sum(1 << l for l in range(32) if l % 3 == 0)
        assert down == ((lane + 1) * 10 if lane < 31 else lane * 10)
        assert from0 == 2 * (warp * 32) + 1


def test_emulator_wmma():
    # D = A (row-major) x B (col-major) + 1 on m16n16k16 half fragments.
    a = torch.tensor([i % 7 - 3 for i in range(256)], dtype=torch.float64).view(16, 16)
    b = torch.tensor([i % 5 - 2 for i in range(256)], dtype=torch.float64).view(16, 16).t()
    expected = (a @ b + 1).flatten().long().tolist()
    assert _self_test("wmma") == expected
    # tf32 inputs keep 10 mantissa bits: (1 + 2^-12) * 1 summed over k = 8 gives exactly 8.
    assert _self_test("wmma_tf32") == [8 * 4096] * 256


def test_cuda_emulation_requires_the_emulator(monkeypatch):
    import convpool.testing as t

    monkeypatch.setattr(t, "emulator_available", lambda: False)
    with pytest.raises(RuntimeError, match="CONVPOOL_BUILD_EMU=1"):
        with t.cuda_emulation():
            pass
