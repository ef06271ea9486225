"""torch.library.opcheck on every torch.ops.convpool op: schema, fake kernel, autograd
registration and AOT dispatch all consistent with the real kernel, on tests/samples.py's opcheck
problems (every argument off its default) in several layouts, batched and unbatched."""
import pytest
import torch
import torch.nn.functional as F

import samples

ops = torch.ops.convpool
import convpool  # noqa: E402,F401  (registers the ops)


def _conv_samples(requires_grad):
    g = torch.Generator().manual_seed(0)
    s = samples.OPCHECK_CONV

    def t(*shape, cl=False):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.requires_grad_(requires_grad)

    args = tuple(s.args())
    x_size, w_size = list(s.input_size), list(s.weight_size)
    yield ops.conv2d.default, (t(*x_size), t(*w_size), t(s.k), *args)
    yield ops.conv2d.default, (t(*x_size, cl=True), t(*w_size), None, *args)
    yield ops.conv2d.default, (t(*x_size[1:]), t(*w_size), t(s.k), *args)  # unbatched
    out_shape = tuple(F.conv2d(torch.empty(x_size, device="meta"), torch.empty(w_size, device="meta"),
                               None, *args).shape)
    yield ops.conv2d_grad_input.default, (t(*out_shape), t(*w_size), x_size, *args)
    yield ops.conv2d_grad_input.default, (t(*out_shape, cl=True), t(*w_size), x_size, *args)
    yield ops.conv2d_grad_weight.default, (t(*out_shape), t(*x_size), w_size, *args)
    yield ops.conv2d_grad_weight.default, (t(*out_shape), t(*x_size, cl=True), w_size, *args)
    yield ops.conv2d_grad_bias.default, (t(*out_shape),)


def _pool_samples(requires_grad):
    s = samples.OPCHECK_POOL
    x = torch.randperm(s.n * s.c * s.h * s.w, generator=torch.Generator().manual_seed(0)).double()
    x = x.view(s.input_size)
    pool_args = tuple(s.args())
    for inp in (x, x.contiguous(memory_format=torch.channels_last), x[0]):
        yield ops.max_pool2d.default, (inp.clone().requires_grad_(requires_grad), *pool_args)
    values, indices = ops.max_pool2d(x, *pool_args)
    grad = torch.randn(values.shape, dtype=torch.float64).requires_grad_(requires_grad)
    yield ops.max_pool2d_backward.default, (grad, x, indices, *pool_args)
    yield ops.max_pool2d.default, (torch.randint(-5, 5, (2, 3, 6, 6)), [2], [], [0], [1], False)
    for inp in (x, x.contiguous(memory_format=torch.channels_last), x[0]):
        yield ops.max_pool2d_values.default, (inp.clone(), *pool_args)


SAMPLES = [(op, args, rg) for rg in (False, True) for op, args in
           list(_conv_samples(rg)) + list(_pool_samples(rg))]


@pytest.mark.parametrize("op,args,requires_grad", SAMPLES,
                         ids=[f"{op.name()}-{i}-grad{rg}" for i, (op, _, rg) in enumerate(SAMPLES)])
def test_opcheck(op, args, requires_grad):
    torch.library.opcheck(op, args)


def test_every_op_is_checked():
    checked = {op.name() for op, _, _ in SAMPLES}
    registered = {f"convpool::{name}" for name in dir(ops) if not name.startswith("_") and
                  isinstance(getattr(ops, name), torch._ops.OpOverloadPacket)}
    assert registered and registered <= checked
