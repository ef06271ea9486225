"""Shared test helpers: input layouts, tolerances, gradients of a random projection."""
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
