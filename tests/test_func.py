"""Every PyTorch autodiff mode through convpool, against torch in float64, by value: forward-mode
AD (dual tensors, torch.func.jvp, jacfwd, autograd.functional.jacobian forward-mode, hvp), the
torch.func transforms (grad, vjp, jacrev, hessian, vmap) and their compositions (vmap(grad)
per-sample gradients, jacrev(jacrev), forward over reverse), on convpool.conv2d / max_pool2d,
under convpool.enable(), and the ops' jvp under the CUDA emulator."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import convpool
from convpool.testing import cuda_emulation, emulator_available

TOL = dict(rtol=1e-7, atol=1e-7)

# (input shape, weight shape, bias?, stride, padding, dilation, groups)
CONV_CASES = {
    "plain": ((2, 2, 5, 5), (3, 2, 3, 3), True, 1, 0, 1, 1),
    "stride_padding": ((2, 2, 6, 5), (3, 2, 3, 2), True, (2, 1), (1, 0), 1, 1),
    "dilation": ((1, 2, 7, 6), (2, 2, 2, 3), False, 1, 1, (2, 1), 1),
    "groups": ((2, 4, 5, 5), (6, 2, 3, 3), True, 1, 1, 1, 2),
    "unbatched": ((2, 5, 4), (3, 2, 2, 2), True, 1, (1, 0), 1, 1),
}
# (input shape, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = {
    "plain": ((2, 2, 6, 6), 2, None, 0, 1, False),
    "ceil_mode": ((1, 2, 7, 5), 3, 2, 1, 1, True),
    "dilation": ((2, 1, 8, 7), (2, 3), (2, 1), (1, 1), (2, 1), False),
    "unbatched": ((2, 5, 6), 2, 1, 0, 1, True),
}


def _rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def conv_setup(name):
    x_shape, w_shape, has_bias, *args = CONV_CASES[name]
    x, w = _rand(*x_shape, seed=1), _rand(*w_shape, seed=2)
    b = _rand(w_shape[0], seed=3) if has_bias else None

    def make(conv):
        return lambda x, w, b=b: conv(x, w, b, *args)

    return (x, w, b), make(convpool.conv2d), make(F.conv2d)


def pool_setup(name):
    shape, *args = POOL_CASES[name]
    # Distinct values: no ties, so the argmax (and every derivative) is torch's.
    n = torch.Size(shape).numel()
    x = (torch.randperm(n, generator=torch.Generator().manual_seed(4)).double() / n).view(shape)
    return x, (lambda x: convpool.max_pool2d(x, *args)), (lambda x: F.max_pool2d(x, *args))


def assert_same(ours, theirs):
    torch.testing.assert_close(ours, theirs, **TOL)


# ---- forward mode ------------------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_jvp(case):
    (x, w, b), ours, torchs = conv_setup(case)
    primals = (x, w) if b is None else (x, w, b)
    tangents = tuple(_rand(*p.shape, seed=10 + i) for i, p in enumerate(primals))
    assert_same(jvp(ours, primals, tangents), jvp(torchs, primals, tangents))
    # One tangent at a time: the others' contributions must not leak in, nor be lost.
    for i in range(len(primals)):
        one = tuple(t if j == i else torch.zeros_like(t) for j, t in enumerate(tangents))
        assert_same(jvp(ours, primals, one)[1], jvp(torchs, primals, one)[1])


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_dual_tensors(case):
    (x, w, b), ours, torchs = conv_setup(case)
    tx, tw = _rand(*x.shape, seed=11), _rand(*w.shape, seed=12)
    results = []
    for f in (ours, torchs):
        with fwAD.dual_level():
            out = f(fwAD.make_dual(x, tx), fwAD.make_dual(w, tw))
            primal, tangent = fwAD.unpack_dual(out)
            assert tangent is not None
            results.append((primal, tangent))
    assert_same(*results)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_jacfwd_and_forward_mode_jacobian(case):
    (x, w, _), ours, torchs = conv_setup(case)
    assert_same(jacfwd(ours, argnums=(0, 1))(x, w), jacfwd(torchs, argnums=(0, 1))(x, w))
    # autograd.functional's forward mode needs vectorize=True (it vmaps the dual tensors).
    assert_same(torch.autograd.functional.jacobian(ours, (x, w), strategy="forward-mode",
                                                   vectorize=True),
                torch.autograd.functional.jacobian(torchs, (x, w), strategy="forward-mode",
                                                   vectorize=True))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_hvp_forward_over_reverse(case):
    # The jvp of the backward ops (dgrad, wgrad): Hessian-vector products of a loss in w.
    (x, w, b), ours, torchs = conv_setup(case)
    v = _rand(*w.shape, seed=13)

    def loss(conv):
        return lambda w: conv(x, w).tanh().sum()

    expected = jvp(grad(loss(torchs)), (w,), (v,))
    assert_same(jvp(grad(loss(ours)), (w,), (v,)), expected)
    assert_same(torch.autograd.functional.hvp(loss(ours), w, v),
                torch.autograd.functional.hvp(loss(torchs), w, v))
    with fwAD.dual_level():  # the same with dual tensors through torch.autograd.grad
        dual = fwAD.make_dual(w, v).requires_grad_()
        (g,) = torch.autograd.grad(loss(ours)(dual), dual, create_graph=True)
        assert_same(fwAD.unpack_dual(g).tangent, expected[1])


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_forward_mode(case):
    x, ours, torchs = pool_setup(case)
    t = _rand(*x.shape, seed=14)
    assert_same(jvp(ours, (x,), (t,)), jvp(torchs, (x,), (t,)))
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(ours(fwAD.make_dual(x, t))).tangent
    assert_same(tangent, jvp(torchs, (x,), (t,))[1])
    assert_same(jacfwd(ours)(x), jacfwd(torchs)(x))
    # Forward over reverse through max_pool2d_backward's jvp.
    v = _rand(*x.shape, seed=15)

    def loss(pool):
        return lambda x: (pool(x) ** 3).sum()

    assert_same(jvp(grad(loss(ours)), (x,), (v,)), jvp(grad(loss(torchs)), (x,), (v,)))


# ---- torch.func: reverse mode and vmap --------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_grad_vjp_jacrev_hessian(case):
    (x, w, b), ours, torchs = conv_setup(case)

    def loss(conv):
        return lambda x, w: conv(x, w).tanh().sum()

    assert_same(grad(loss(ours), argnums=(0, 1))(x, w), grad(loss(torchs), argnums=(0, 1))(x, w))
    cot = _rand(*torchs(x, w).shape, seed=16)
    assert_same(vjp(ours, x, w)[1](cot), vjp(torchs, x, w)[1](cot))
    assert_same(jacrev(ours, argnums=(0, 1))(x, w), jacrev(torchs, argnums=(0, 1))(x, w))
    assert_same(hessian(loss(ours), argnums=1)(x, w), hessian(loss(torchs), argnums=1)(x, w))
    assert_same(jacrev(jacrev(loss(ours)))(x, w), jacrev(jacrev(loss(torchs)))(x, w))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_vmap(case):
    (x, w, b), ours, torchs = conv_setup(case)
    xs = torch.stack([x, x.flip(-1) * 0.5, x + 1])
    ws = torch.stack([w, -w, w * 2])
    # vmapped input only; weight only; both; along a dimension other than the first.
    for in_dims, args in [((0, None), (xs, w)), ((None, 0), (x, ws)), ((0, 0), (xs, ws)),
                          ((1, 2), (xs.movedim(0, 1), ws.movedim(0, 2)))]:
        assert_same(vmap(ours, in_dims)(*args), vmap(torchs, in_dims)(*args))
    if b is not None:
        bs = torch.stack([b, b * 3, -b])
        assert_same(vmap(ours, (None, None, 0))(x, w, bs), vmap(torchs, (None, None, 0))(x, w, bs))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_per_sample_gradients(case):
    # vmap(grad): the pattern of differential-privacy training, with respect to weight and bias.
    (x, w, b), ours, torchs = conv_setup(case)
    if x.dim() == 3:
        x = torch.stack([x, x * 2])

    def loss(conv):
        def f(w, b, sample):
            return conv(sample.unsqueeze(0), w, b).tanh().sum()
        return f

    argnums = (0,) if b is None else (0, 1)
    per_sample = vmap(grad(loss(ours), argnums=argnums), in_dims=(None, None, 0))
    expected = vmap(grad(loss(torchs), argnums=argnums), in_dims=(None, None, 0))
    assert_same(per_sample(w, b, x), expected(w, b, x))
    # And with respect to the input, batched weights too (grad of vmapped dgrad and wgrad).
    assert_same(vmap(grad(lambda x, w: ours(x, w).sin().sum(), argnums=(0, 1)))(
        torch.stack([x, -x]), torch.stack([w, w * 0.5])),
        vmap(grad(lambda x, w: torchs(x, w).sin().sum(), argnums=(0, 1)))(
        torch.stack([x, -x]), torch.stack([w, w * 0.5])))


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_func_transforms(case):
    x, ours, torchs = pool_setup(case)

    def loss(pool):
        return lambda x: (pool(x) ** 2).sum()

    assert_same(grad(loss(ours))(x), grad(loss(torchs))(x))
    assert_same(jacrev(ours)(x), jacrev(torchs)(x))
    assert_same(hessian(loss(ours))(x), hessian(loss(torchs))(x))
    xs = torch.stack([x, x.flip(-1), x.flip(-2)])
    assert_same(vmap(ours)(xs), vmap(torchs)(xs))
    assert_same(vmap(grad(loss(ours)))(xs), vmap(grad(loss(torchs)))(xs))
    # vmap over the indices too (return_indices=True): bit-identical to torch's.
    _, *args = POOL_CASES[case]
    values, indices = vmap(lambda x: convpool.max_pool2d(x, *args, return_indices=True))(xs)
    ref_values, ref_indices = vmap(lambda x: F.max_pool2d(x, *args, return_indices=True))(xs)
    assert torch.equal(indices, ref_indices) and torch.equal(values, ref_values)


def test_max_pool2d_backward_vmap():
    # vmap of the gradient with respect to a batch of cotangents (jacrev's own pattern).
    x, ours, torchs = pool_setup("ceil_mode")
    cots = _rand(4, *ours(x).shape, seed=17)
    assert_same(vmap(vjp(ours, x)[1])(cots), vmap(vjp(torchs, x)[1])(cots))


# ---- the examples of issue 13 --------------------------------------------------------------

def _issue_tensors():
    torch.manual_seed(0)
    return torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3)


def test_issue_jvp_is_not_zero():
    x, w = _issue_tensors()
    _, tangent = jvp(lambda a: convpool.conv2d(a, w), (x,), (torch.ones_like(x),))
    expected = F.conv2d(torch.ones_like(x), w)
    torch.testing.assert_close(tangent, expected)
    assert torch.allclose(tangent, torch.full_like(tangent, -2.808), atol=1e-3)
    _, pool_tangent = jvp(lambda a: convpool.max_pool2d(a, 2), (x,), (torch.arange(16.).view_as(x),))
    torch.testing.assert_close(pool_tangent,
                               jvp(lambda a: F.max_pool2d(a, 2), (x,),
                                   (torch.arange(16.).view_as(x),))[1])


def test_issue_dual_tangent_is_not_none():
    x, w = _issue_tensors()
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(convpool.conv2d(fwAD.make_dual(x, torch.ones_like(x)), w)).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, F.conv2d(torch.ones_like(x), w))


def test_issue_jacobians_are_not_zero():
    x, w = _issue_tensors()
    expected = jacrev(lambda a: F.conv2d(a, w))(x)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(jacfwd(lambda a: convpool.conv2d(a, w))(x), expected)
    torch.testing.assert_close(torch.autograd.functional.jacobian(
        lambda a: convpool.conv2d(a, w), x, strategy="forward-mode", vectorize=True), expected)
    torch.testing.assert_close(jacrev(lambda a: convpool.conv2d(a, w))(x), expected)


def test_issue_grad_and_per_sample_grad():
    x, w = _issue_tensors()
    torch.testing.assert_close(grad(lambda a: convpool.conv2d(a, w).sum())(x),
                               grad(lambda a: F.conv2d(a, w).sum())(x))
    xs = torch.randn(5, 1, 1, 4, 4)

    def per_sample(conv):
        return vmap(grad(lambda w, s: conv(s, w).pow(2).sum()), in_dims=(None, 0))(w, xs)

    torch.testing.assert_close(per_sample(convpool.conv2d), per_sample(F.conv2d))


# ---- unchanged torch code under convpool.enable() -----------------------------------------

def _torch_model_code(x, w, b):
    return F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2, ceil_mode=True)


def _run_modes(x, w, b):
    loss = lambda x, w: _torch_model_code(x, w, b).tanh().sum()  # noqa: E731
    tx, tw = torch.ones_like(x), torch.full_like(w, 0.5)
    return [
        jvp(lambda x, w: _torch_model_code(x, w, b), (x, w), (tx, tw)),
        jacfwd(loss, argnums=(0, 1))(x, w),
        grad(loss, argnums=(0, 1))(x, w),
        jacrev(lambda x: _torch_model_code(x, w, b))(x),
        hessian(loss, argnums=1)(x, w),
        vmap(grad(loss, argnums=1), in_dims=(0, None))(x.unsqueeze(1), w),
        jvp(grad(loss, argnums=1), (x, w), (tx, tw)),
    ]


def test_enable_routes_every_mode():
    x, w, b = _rand(3, 2, 6, 6, seed=20), _rand(4, 2, 3, 3, seed=21), _rand(4, seed=22)
    expected = _run_modes(x, w, b)
    calls = []
    original = torch.ops.convpool.conv2d.default

    with convpool.enable():
        ours = _run_modes(x, w, b)
        with fwAD.dual_level():
            out = F.conv2d(fwAD.make_dual(x, torch.ones_like(x)), w)
            calls.append(fwAD.unpack_dual(out).tangent)
    assert original is torch.ops.convpool.conv2d.default
    for got, want in zip(ours, expected):
        assert_same(got, want)
    assert_same(calls[0], F.conv2d(torch.ones_like(x), w))


def test_enable_routes_to_convpool_under_transforms():
    # The modes above really run convpool's ops (not torch's fall-through).
    x, w = _issue_tensors()
    with torch.profiler.profile() as prof:
        with convpool.enable():
            grad(lambda a: F.conv2d(a, w).sum())(x)
            jvp(lambda a: F.conv2d(a, w), (x,), (torch.ones_like(x),))
    names = {e.name for e in prof.events()}
    assert "convpool::conv2d" in names and "convpool::conv2d_grad_input" in names
    assert "aten::convolution" not in names


def test_enable_issue_example():
    x, w = _issue_tensors()
    with convpool.enable():
        got = grad(lambda a: F.conv2d(a, w).sum())(x)
        dual_tangent = None
        with fwAD.dual_level():
            dual_tangent = fwAD.unpack_dual(F.conv2d(fwAD.make_dual(x, torch.ones_like(x)), w)).tangent
    torch.testing.assert_close(got, grad(lambda a: F.conv2d(a, w).sum())(x))
    torch.testing.assert_close(dual_tangent, F.conv2d(torch.ones_like(x), w))


# ---- the ops' jvp under the CUDA emulator --------------------------------------------------

@pytest.mark.skipif(not emulator_available(), reason="convpool built without CONVPOOL_BUILD_EMU=1")
@pytest.mark.parametrize("case", ["stride_padding", "groups"])
def test_emulated_cuda_jvp(case):
    (x, w, b), ours, torchs = conv_setup(case)
    tangents = (_rand(*x.shape, seed=30), _rand(*w.shape, seed=31))
    v = _rand(*w.shape, seed=32)
    pool_x, pool_ours, pool_torchs = pool_setup("ceil_mode")
    pool_t = _rand(*pool_x.shape, seed=33)

    def loss(conv):
        return lambda w: conv(x, w).tanh().sum()

    with cuda_emulation(order="shuffle", seed=1):
        conv_jvp = jvp(ours, (x, w), tangents)
        conv_hvp = jvp(grad(loss(ours)), (w,), (v,))
        pool_jvp = jvp(pool_ours, (pool_x,), (pool_t,))
        pool_hvp = jvp(grad(lambda x: (pool_ours(x) ** 3).sum()), (pool_x,), (pool_t,))
    assert_same(conv_jvp, jvp(torchs, (x, w), tangents))
    assert_same(conv_hvp, jvp(grad(loss(torchs)), (w,), (v,)))
    assert_same(pool_jvp, jvp(pool_torchs, (pool_x,), (pool_t,)))
    assert_same(pool_hvp, jvp(grad(lambda x: (pool_torchs(x) ** 3).sum()), (pool_x,), (pool_t,)))


# ---- every op directly: forward-mode gradcheck, batched (vmapped) gradients too ----------------

def _op_cases():
    ops = torch.ops.convpool
    args = ([2, 1], [1, 0], [1, 2], 2)
    x, w, go = _rand(2, 4, 7, 6, seed=40), _rand(6, 2, 3, 2, seed=41), _rand(2, 6, 4, 4, seed=42)
    b = _rand(6, seed=43)
    pool_x, _, _ = pool_setup("ceil_mode")
    pool_args = ([3], [2], [1], [1], True)
    indices = ops.max_pool2d(pool_x, *pool_args)[1]
    pool_go = _rand(*indices.shape, seed=44)
    return {
        "conv2d": (lambda x, w, b: ops.conv2d(x, w, b, *args), (x, w, b)),
        "conv2d_grad_input": (lambda go, w: ops.conv2d_grad_input(go, w, list(x.shape), *args),
                              (go, w)),
        "conv2d_grad_weight": (lambda go, x: ops.conv2d_grad_weight(go, x, list(w.shape), *args),
                               (go, x)),
        "conv2d_grad_bias": (lambda go: ops.conv2d_grad_bias(go), (go,)),
        "max_pool2d": (lambda x: ops.max_pool2d(x, *pool_args)[0], (pool_x,)),
        "max_pool2d_values": (lambda x: ops.max_pool2d_values(x, *pool_args), (pool_x,)),
        "max_pool2d_backward": (lambda go: ops.max_pool2d_backward(go, pool_x, indices, *pool_args),
                                (pool_go,)),
    }


@pytest.mark.parametrize("name", list(_op_cases()))
def test_op_forward_and_batched_gradcheck(name):
    fn, inputs = _op_cases()[name]
    inputs = tuple(t.clone().requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(fn, inputs, check_forward_ad=True, check_batched_grad=True,
                                    check_batched_forward_grad=True)
