"""Shared cases and checks of the CUDA parity suites: tests/test_cuda_emulated.py (the kernels
through the CPU emulator) and tests/test_cuda.py (on a GPU). Shapes are tiny on purpose: the
emulator runs every GPU thread as a fiber on one CPU core, yet the cases cover several tiles in M,
N and K, several wgrad splits, groups, depthwise, stride, padding, dilation, 1x1 and unbatched."""
import torch
import torch.nn.functional as F

import convpool

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

# input (N, C, H, W) or (C, H, W); out_channels, kernel, stride, padding, dilation, groups, bias
CONV_CASES = {
    "basic": ((2, 3, 6, 5), 4, (3, 3), 1, 1, 1, 1, True),
    "tiles": ((2, 5, 7, 6), 36, (3, 2), 1, (1, 0), 1, 1, True),   # M, N > 32, several K tiles
    "strided": ((1, 4, 9, 8), 6, (3, 3), 2, 1, 1, 1, False),
    "dilated": ((2, 3, 9, 9), 5, (3, 2), (2, 1), (2, 1), (2, 3), 1, True),
    "grouped": ((2, 6, 5, 5), 4, (3, 3), 1, 1, 1, 2, True),
    "depthwise": ((2, 4, 6, 7), 4, (3, 3), (1, 2), 1, 1, 4, True),
    "depthwise_x2": ((1, 3, 7, 5), 6, (2, 3), 2, (1, 0), (1, 2), 3, False),
    "pointwise": ((3, 7, 4, 4), 9, (1, 1), 1, 0, 1, 1, True),
    "unbatched": ((3, 5, 6), 2, (2, 2), 1, 0, 1, 1, True),
}

# conv_transpose2d: input (N, C, H, W) or (C, H, W); out_channels, kernel, stride, padding,
# output_padding, dilation, groups, bias. Its forward is the dgrad kernel, its backward fprop and
# wgrad.
TRANSPOSE_CASES = {
    "unet": ((2, 6, 4, 5), 4, (2, 2), 2, 0, 0, 1, 1, True),
    "dcgan_tiles": ((2, 5, 4, 4), 36, (4, 4), 2, 1, 0, 1, 1, False),  # M, N > 32
    "output_padding": ((1, 4, 5, 4), 6, (3, 3), (2, 3), 1, (1, 2), 1, 2, True),
    "output_padding_over_stride": ((2, 2, 4, 4), 4, (2, 3), 1, 0, (2, 1), (3, 2), 2, True),
    "depthwise": ((2, 4, 5, 5), 4, (3, 3), 2, 1, 1, 1, 4, True),
    "unbatched": ((3, 4, 5), 2, (3, 3), 2, 1, 1, 1, 1, True),
}

# input, kernel, stride, padding, dilation, ceil_mode
POOL_CASES = {
    "basic": ((2, 3, 6, 7), 2, None, 0, 1, False),
    "overlap": ((2, 3, 7, 6), 3, 2, 1, 1, False),
    "ceil": ((1, 4, 7, 7), 3, 2, 1, 1, True),
    "dilated": ((2, 2, 9, 8), (3, 2), (2, 1), (1, 1), (2, 3), True),
    "stride1": ((1, 3, 5, 5), 3, 1, 1, 1, False),
    "unbatched": ((3, 5, 6), 2, 1, 0, 1, False),
}


def to_layout(t, layout):
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def make_conv(case, dtype, layout, device="cpu", seed=0):
    shape, out_ch, kernel, stride, padding, dilation, groups, has_bias = CONV_CASES[case]
    g = torch.Generator().manual_seed(seed)
    in_ch = shape[-3]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn((out_ch, in_ch // groups) + tuple(kernel), generator=g, dtype=torch.float64)
    b = torch.randn(out_ch, generator=g, dtype=torch.float64) if has_bias else None
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
    shape, out_ch, kernel, stride, padding, output_padding, dilation, groups, has_bias = \
        TRANSPOSE_CASES[case]
    g = torch.Generator().manual_seed(seed)
    in_ch = shape[-3]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn((in_ch, out_ch // groups) + tuple(kernel), generator=g, dtype=torch.float64)
    b = torch.randn(out_ch, generator=g, dtype=torch.float64) if has_bias else None
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
    shape, kernel, stride, padding, dilation, ceil_mode = POOL_CASES[case]
    x = make_pool_input(shape, dtype, layout, device)
    args = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=ceil_mode)
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
