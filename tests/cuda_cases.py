"""Shared cases and checks of the CUDA parity suites: tests/test_cuda_emulated.py (the kernels
through the CPU emulator) and tests/test_cuda.py (on a GPU). The cases are tests/samples.py's
CUDA samples: tiny on purpose (the emulator runs every GPU thread as a fiber on one CPU core), yet
they cover several tiles in M, N and K, several wgrad splits, groups, depthwise, stride, padding,
dilation, 1x1 and unbatched."""
import torch
import torch.nn.functional as F

import convpool
import samples

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["nchw", "channels_last"]
# Conv precisions: dtype and torch.backends.cudnn.allow_tf32 (float32 on TF32 tensor cores).
PRECISIONS = {
    "float64": (torch.float64, False),
    "float32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "float16": (torch.float16, False),
    "bfloat16": (torch.bfloat16, False),
}

# (atol, rtol) of a result against the float64 reference, per dtype, relative to the scale of the
# inputs (values of order 1, reductions of up to ~100 terms).
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-4, 2e-4),
    "tf32": (3e-2, 1e-2),  # inputs rounded to 10 mantissa bits
    torch.float16: (3e-2, 1e-2),
    torch.bfloat16: (2.5e-1, 5e-2),
}

# The cases, by name: tests/samples.py's CUDA_CONV, CUDA_TRANSPOSE and CUDA_POOL.
CONV_CASES = samples.CUDA_CONV
TRANSPOSE_CASES = samples.CUDA_TRANSPOSE
POOL_CASES = samples.CUDA_POOL


def to_layout(t, layout):
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def make_conv(case, dtype, layout, device="cpu", seed=0):
    s = CONV_CASES[case]
    stride, padding, dilation, groups = s.stride, s.padding, s.dilation, s.groups
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s.input_size, generator=g, dtype=torch.float64)
    w = torch.randn(s.weight_size, generator=g, dtype=torch.float64)
    b = torch.randn(s.k, generator=g, dtype=torch.float64) if s.bias else None
    x, w = to_layout(x, layout), to_layout(w, layout)
    # Values exactly representable in every dtype, so all dtypes see the same problem.
    x, w = x.to(dtype).to(device), w.to(dtype).to(device)
    b = b.to(dtype).to(device) if b is not None else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_results(x, w, b, args, fn):
    """Output and gradients of input, weight, bias for a fixed grad_output."""
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    y = fn(x, w, b, **args)
    g = torch.Generator().manual_seed(1)
    go = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype).to(y.device)
    if y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last):
        go = go.contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], go)
    return [y] + list(grads)


def make_transpose(case, dtype, layout, device="cpu", seed=0):
    s = TRANSPOSE_CASES[case]
    stride, padding, output_padding, dilation, groups = (s.stride, s.padding, s.output_padding,
                                                         s.dilation, s.groups)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s.input_size, generator=g, dtype=torch.float64)
    w = torch.randn(s.weight_size, generator=g, dtype=torch.float64)
    b = torch.randn(s.k, generator=g, dtype=torch.float64) if s.bias else None
    x, w = to_layout(x, layout).to(dtype).to(device), to_layout(w, layout).to(dtype).to(device)
    b = b.to(dtype).to(device) if b is not None else None
    return x, w, b, dict(stride=stride, padding=padding, output_padding=output_padding,
                         dilation=dilation, groups=groups)


def _check_against_float64(case, precision, layout, make, fn, ref_fn, device):
    """fn's output and gradients against ref_fn in float64 on the CPU; the layout as torch's."""
    dtype, tf32 = PRECISIONS[precision]
    x, w, b, args = make(case, dtype, layout, device)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32):
        got = conv_results(x, w, b, args, fn)
    ref = conv_results(x.cpu().double(), w.cpu().double(), b.cpu().double() if b is not None else None,
                       args, ref_fn)
    atol, rtol = TOLERANCES["tf32" if tf32 else dtype]
    names = ["output", "grad_input", "grad_weight", "grad_bias"]
    for name, r, e in zip(names, got, ref):
        assert r.dtype == dtype, name
        # Gradients sum more terms than the output: scale the tolerance with the reduction size.
        scale = 1.0 if name == "output" else 4.0
        torch.testing.assert_close(r.cpu().double(), e, atol=atol * scale, rtol=rtol * scale,
                                   msg=lambda m: f"{case} {dtype} {layout} {name}: {m}")
    # The output layout follows torch's choice.
    y_ref = ref_fn(x.cpu(), w.cpu(), b.cpu() if b is not None else None, **args) \
        if dtype != torch.float16 else None
    if y_ref is not None and y_ref.dim() == 4:
        assert got[0].is_contiguous(memory_format=torch.channels_last) == \
            y_ref.is_contiguous(memory_format=torch.channels_last)


def check_conv(case, precision, layout, device="cpu"):
    _check_against_float64(case, precision, layout, make_conv, convpool.conv2d, F.conv2d, device)


def check_transpose(case, precision, layout, device="cpu"):
    _check_against_float64(case, precision, layout, make_transpose, convpool.conv_transpose2d,
                           F.conv_transpose2d, device)


def make_pool_input(shape, dtype, layout, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    # Small integers: many ties, so the first-tie rule is exercised; a few NaN and -inf.
    x = torch.randint(-3, 4, shape, generator=g).to(torch.float64)
    flat = x.view(-1)
    flat[torch.randint(0, flat.numel(), (3,), generator=g)] = float("nan")
    flat[torch.randint(0, flat.numel(), (3,), generator=g)] = float("-inf")
    return to_layout(x, layout).to(dtype).to(device)


def check_pool(case, dtype, layout, device="cpu"):
    s = POOL_CASES[case]
    x = make_pool_input(s.input_size, dtype, layout, device)
    args = dict(kernel_size=s.kernel, stride=s.stride, padding=s.padding, dilation=s.dilation,
                ceil_mode=s.ceil_mode)
    xg = x.detach().requires_grad_()
    values, indices = convpool.max_pool2d(xg, return_indices=True, **args)
    xr = x.detach().cpu().requires_grad_()
    ref_values, ref_indices = F.max_pool2d(xr, return_indices=True, **args)
    assert torch.equal(indices.cpu(), ref_indices), f"{case} {dtype} {layout} indices"
    torch.testing.assert_close(values.cpu(), ref_values, equal_nan=True, atol=0, rtol=0)
    assert values.stride() == ref_values.stride(), f"{case} {dtype} {layout} layout"
    # No gradient wanted: the values-only kernel (no index work) gives the same values and layout.
    with torch.no_grad():
        values_only = convpool.max_pool2d(x, **args)
    torch.testing.assert_close(values_only.cpu(), ref_values.detach(), equal_nan=True, atol=0, rtol=0)
    assert values_only.stride() == ref_values.stride(), f"{case} {dtype} {layout} values-only layout"
    g = torch.Generator().manual_seed(2)
    go = torch.randn(values.shape, generator=g, dtype=torch.float64).to(dtype)
    (gi,) = torch.autograd.grad(values, xg, go.to(device))
    (gi_ref,) = torch.autograd.grad(ref_values, xr, go)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(gi.cpu().double(), gi_ref.double(), atol=atol, rtol=rtol)
