"""Shared test helpers: input layouts, tolerances, gradients of a random projection, and the
CPU conv ops run with each applicable algorithm forced (convpool.backends.cpu)."""
import torch

LAYOUTS = ["contiguous", "channels_last", "strided_view", "transposed_view"]

# assert_close tolerances vs torch in the same dtype. Reductions run in a different order (and,
# for half/bfloat16, in float), so the low-precision ones are looser than torch's defaults.
TOLERANCES = {
    torch.float64: dict(rtol=1e-7, atol=1e-7),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
}


def make_tensor(shape, dtype=torch.float64, layout="contiguous", low=-1.0, high=1.0, seed=None):
    """A 4-D tensor of `shape` in the given memory layout (values are what matter, not strides)."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    n, c, h, w = shape

    def rand(*s):
        t = torch.rand(*s, generator=g, dtype=torch.float64) * (high - low) + low
        return t.to(dtype) if dtype.is_floating_point else t.round().to(dtype)

    if layout == "contiguous":
        return rand(n, c, h, w)
    if layout == "channels_last":
        return rand(n, c, h, w).contiguous(memory_format=torch.channels_last)
    if layout == "strided_view":  # every other channel and column of a bigger tensor
        return rand(n, 2 * c, h, 2 * w)[:, ::2, :, ::2]
    if layout == "transposed_view":
        return rand(n, c, w, h).transpose(2, 3)
    raise ValueError(layout)


def grads(output, inputs, seed=0):
    """Gradients of <output, R> for a fixed random R (same R for both sides of a comparison)."""
    g = torch.Generator().manual_seed(seed)
    projection = torch.rand(output.shape, generator=g, dtype=torch.float64).to(output.dtype)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    return torch.autograd.grad(output, wanted, projection)


def leaf(t):
    return t.detach().requires_grad_(True)


CONV_OPS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias")


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def conv_op_args(x, w, b, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """{op: the arguments of torch.ops.convpool.<op>} for one convolution and an output gradient
    (conv2d_grad_bias only with a bias)."""
    p = [_pair(stride), _pair(padding), _pair(dilation), groups]
    args = {"conv2d": [x, w, b] + p,
            "conv2d_grad_input": [grad_output, w, list(x.shape)] + p,
            "conv2d_grad_weight": [grad_output, x, list(w.shape)] + p}
    if b is not None:
        args["conv2d_grad_bias"] = [grad_output]
    return args


def every_algorithm(op, args, only=None):
    """[(name, result)]: torch.ops.convpool.<op>(*args) with each CPU algorithm that applies
    (convpool.backends.cpu.algorithms, or those of them named in `only`) forced in turn, so a test
    reaches every kernel whatever the heuristic's thresholds."""
    from convpool.backends import cpu
    results = []
    for name in cpu.algorithms(op, *args):
        if only is not None and name not in only:
            continue
        with cpu.force(name):
            assert cpu.selected(op, *args) == name
            results.append((name, getattr(torch.ops.convpool, op)(*args)))
    return results
