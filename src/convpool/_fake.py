"""Fake (meta) kernels: output shapes, dtypes and layouts of every torch.ops.convpool op, so that
FakeTensor, torch.compile and torch.export can trace them without running a kernel.

Shape formulas mirror csrc/shape.h; argument validation stays in C++ (it runs on real calls),
except the device check: a call mixing a meta tensor with real ones dispatches here, not to C++,
and must raise instead of returning an uninitialized tensor (torch's own conv2d returns garbage)."""
import torch

from ._layout import conv2d_memory_format, is_channels_last


def _pair(values):
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _batched_sizes(sizes):
    sizes = list(sizes)
    return [1] + sizes if len(sizes) == 3 else sizes


def _conv2d_output_sizes(input_sizes, weight_sizes, stride, padding, dilation):
    n, c, h, w = _batched_sizes(input_sizes)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = weight_sizes[2], weight_sizes[3]
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    # An input without channels gives (N, 0, H_out, W_out), as in PyTorch.
    out_c = 0 if c == 0 else weight_sizes[0]
    return [n, out_c, out_h, out_w]


def _check_same_device(op, **tensors):
    """Every tensor argument on one device, named as the C++ checks name them."""
    named = [(name, t) for name, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for name, t in named[1:]:
        torch._check(t.device == first.device, lambda: (
            f"{op}: {first_name} and {name} should be on the same device, but got "
            f"{first_name} on {first.device} and {name} on {t.device}"))


def _empty(sizes, like, memory_format=torch.contiguous_format, unbatched=False):
    out = torch.empty(sizes, dtype=like.dtype, device=like.device, memory_format=memory_format)
    return out.squeeze(0) if unbatched else out


def _batched(t):
    return t.unsqueeze(0) if t.dim() == 3 else t


@torch.library.register_fake("convpool::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    _check_same_device("conv2d", input=input, weight=weight, bias=bias)
    torch._check(input.dim() in (3, 4), lambda: f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}")
    x = _batched(input)
    sizes = _conv2d_output_sizes(x.shape, weight.shape, stride, padding, dilation)
    return _empty(sizes, x, conv2d_memory_format(x, weight), unbatched=input.dim() == 3)


@torch.library.register_fake("convpool::conv2d_grad_input")
def _conv2d_grad_input_fake(grad_output, weight, input_size, stride, padding, dilation, groups):
    _check_same_device("conv2d_grad_input", grad_output=grad_output, weight=weight)
    go = _batched(grad_output)
    return _empty(_batched_sizes(input_size), go, conv2d_memory_format(go, weight),
                  unbatched=len(input_size) == 3)


@torch.library.register_fake("convpool::conv2d_grad_weight")
def _conv2d_grad_weight_fake(grad_output, input, weight_size, stride, padding, dilation, groups):
    _check_same_device("conv2d_grad_weight", grad_output=grad_output, input=input)
    return _empty(list(weight_size), input,
                  conv2d_memory_format(_batched(input), _batched(grad_output)))


@torch.library.register_fake("convpool::conv2d_grad_bias")
def _conv2d_grad_bias_fake(grad_output):
    return grad_output.new_empty((grad_output.shape[-3],))


def _pool_output_size(size, kernel, pad, stride, dilation, ceil_mode):
    num = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out = out - 1
    return out


def _max_pool2d_output_sizes(input_sizes, kernel_size, stride, padding, dilation, ceil_mode):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if len(stride) else (kh, kw)
    (ph, pw), (dh, dw) = _pair(padding), _pair(dilation)
    sizes = list(input_sizes)
    sizes[-2] = _pool_output_size(sizes[-2], kh, ph, sh, dh, ceil_mode)
    sizes[-1] = _pool_output_size(sizes[-1], kw, pw, sw, dw, ceil_mode)
    return sizes


def _pool_memory_format(input):
    return torch.channels_last if is_channels_last(input) else torch.contiguous_format


@torch.library.register_fake("convpool::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    sizes = _max_pool2d_output_sizes(input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    fmt = _pool_memory_format(input)
    values = torch.empty(sizes, dtype=input.dtype, device=input.device, memory_format=fmt)
    indices = torch.empty(sizes, dtype=torch.int64, device=input.device, memory_format=fmt)
    return values, indices


@torch.library.register_fake("convpool::max_pool2d_values")
def _max_pool2d_values_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    sizes = _max_pool2d_output_sizes(input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return torch.empty(sizes, dtype=input.dtype, device=input.device,
                       memory_format=_pool_memory_format(input))


@torch.library.register_fake("convpool::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation,
                              ceil_mode):
    _check_same_device("max_pool2d_backward", grad_output=grad_output, input=input, indices=indices)
    return torch.empty(input.shape, dtype=input.dtype, device=input.device,
                       memory_format=_pool_memory_format(input))
