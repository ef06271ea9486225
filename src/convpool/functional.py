"""torch.nn.functional-compatible entry points: same arguments, same results, our kernels."""
import operator
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ._autocast import cast_lower_precision
from .autograd import call

_ops = torch.ops.convpool
_CONV2D = _ops.conv2d
_MAX_POOL2D = _ops.max_pool2d
_MAX_POOL2D_VALUES = _ops.max_pool2d_values

_IntOrPair = Union[int, Sequence[int]]


def _int_list(value) -> List[int]:
    """An int or a sequence of ints as a list; the op validates the length and the values."""
    if type(value) is int:  # the common case first: this is on every call's path
        return [value]
    if isinstance(value, (list, tuple, torch.Size)):
        return [int(v) if isinstance(v, torch.SymInt) else v for v in value]
    return [value]


def _same_padding(input, weight, dilation):
    """padding='same' as PyTorch: total = dilation * (kernel - 1), the odd extra unit on the
    right/bottom. Returns (input, symmetric padding); the extra unit comes from a zero-padded copy."""
    dilation = dilation * 2 if len(dilation) == 1 else dilation
    totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
    left = [t // 2 for t in totals]
    extra = [t - 2 * l for t, l in zip(totals, left)]
    if any(extra):
        warnings.warn(
            "Using padding='same' with even kernel lengths and odd dilation may require a "
            "zero-padded copy of the input be created")
        input = F.pad(input, [0, extra[1], 0, extra[0]])
    return input, left


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           stride: _IntOrPair = 1, padding: Union[str, _IntOrPair] = 0,
           dilation: _IntOrPair = 1, groups: int = 1) -> torch.Tensor:
    """Same as torch.nn.functional.conv2d, computed by convpool's kernels.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in / groups, kH, kW);
    padding: int, pair, 'valid' or 'same' (stride 1 only)."""
    stride = _int_list(stride)
    dilation = _int_list(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0]
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            if weight.dim() == 4 and len(dilation) in (1, 2):
                input, padding = _same_padding(input, weight, dilation)
            else:
                padding = [0]  # the op reports the malformed weight or dilation
        else:
            raise RuntimeError(f"Invalid padding string: '{padding}'")
    else:
        padding = _int_list(padding)
    return call(_CONV2D, input, weight, bias, stride, padding, dilation, groups)


def max_pool2d(input: torch.Tensor, kernel_size: _IntOrPair, stride: Optional[_IntOrPair] = None,
               padding: _IntOrPair = 0, dilation: _IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False
               ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Same as torch.nn.functional.max_pool2d, computed by convpool's kernels.

    Indices (return_indices=True) are int64 offsets h * W + w into each input plane, as PyTorch's.
    stride defaults to kernel_size."""
    args = (input, _int_list(kernel_size), [] if stride is None else _int_list(stride),
            _int_list(padding), _int_list(dilation), bool(ceil_mode))
    if not return_indices and not (torch.is_grad_enabled() and input.requires_grad):
        # Nobody needs the indices: the values-only op skips their computation and storage (its
        # Autograd kernel runs max_pool2d when forward-mode AD or torch.func needs them).
        return call(_MAX_POOL2D_VALUES, *args)
    values, indices = call(_MAX_POOL2D, *args)
    return (values, indices) if return_indices else values


# ---- conv_transpose2d: the input-gradient (dgrad) of a convolution --------------------------

def _transpose_pair(value, name: str) -> List[int]:
    """stride / padding / output_padding / dilation of conv_transpose2d as two ints, with torch's
    messages for a non-int (TypeError) and a wrong length."""
    values = _int_list(value)
    try:
        values = [v if isinstance(v, torch.SymInt) else operator.index(v) for v in values]
    except TypeError:
        raise TypeError(f"conv_transpose2d(): argument '{name}' must be tuple of ints, not "
                        f"{type(value).__name__}") from None
    if len(values) not in (1, 2):
        raise RuntimeError(f"expected {name} to be a single integer value or a list of 2 values "
                           f"to match the convolution dimensions, but got {name}={values}")
    return values * 2 if len(values) == 1 else values


def _type_name(t: torch.Tensor) -> str:
    """The scalar type as ATen names it in messages: 'Float', 'BFloat16', 'ComplexFloat', ..."""
    return t.type().rsplit(".", 1)[-1][:-len("Tensor")]


_CONV_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INT64_MAX = 2**63 - 1


def _check_conv_transpose2d_tensors(input, weight, bias):
    """Layout, dtype and device of the operands, in convpool.conv2d's wording."""
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.layout != torch.strided:
            raise RuntimeError(f"convpool.conv_transpose2d: {name} must be a dense (strided) "
                               f"tensor, but got layout {t.layout}")
        if t.dtype != input.dtype:
            raise RuntimeError(f"Input type ({_type_name(input)}) and {name} type "
                               f"({_type_name(t)}) should be the same")
        if t.device != input.device:
            raise RuntimeError(f"conv_transpose2d: input and {name} should be on the same device, "
                               f"but got input on {input.device} and {name} on {t.device}")
    if input.dtype not in _CONV_DTYPES:
        raise NotImplementedError(
            f"convpool.conv_transpose2d: \"conv_transpose2d\" not implemented for "
            f"'{_type_name(input)}' (supported: Float, Double, Half, BFloat16)")


def _conv_transpose2d_output_sizes(input, weight, bias, stride, padding, output_padding, groups,
                                   dilation):
    """Validates a conv_transpose2d call (torch's checks, in torch's order and wording) and returns
    its output sizes (batched: N, C_out, H_out, W_out), with
    H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1."""
    if input.dim() not in (3, 4):
        raise RuntimeError("Expected 3D (unbatched) or 4D (batched) input to conv_transpose2d, "
                           f"but got input of size: {list(input.shape)}")
    if weight.dim() != 4:
        raise RuntimeError("conv_transpose2d: expected a 4-dimensional weight (in_channels, "
                           "out_channels / groups, kH, kW), but got weight of size "
                           f"{list(weight.shape)}")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(p < 0 for p in output_padding):
        raise RuntimeError("negative output_padding is not supported")
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(d <= 0 for d in dilation):
        raise RuntimeError("non-positive dilation is not supported: dilation should be greater "
                           f"than zero, but got dilation={dilation}")
    w_sizes = list(weight.shape)
    if w_sizes[0] < groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be at least {groups} at "
                           f"dimension 0, but got weight of size {w_sizes} instead")
    if w_sizes[0] % groups != 0:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size [{w_sizes}] instead")
    sizes = list(input.shape) if input.dim() == 4 else [1] + list(input.shape)
    if sizes[1] != w_sizes[0]:
        raise RuntimeError(f"Given transposed=1, weight of size {w_sizes}, expected input{sizes} "
                           f"to have {w_sizes[0]} channels, but got {sizes[1]} channels instead")
    out_channels = w_sizes[1] * groups
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(f"Given transposed=1, weight of size {w_sizes}, expected bias to be "
                           f"1-dimensional with {out_channels} elements, but got bias of size "
                           f"{list(bias.shape)} instead")
    if input.numel() == 0 and sizes[0] != 0 and sizes[1] != 0:
        raise RuntimeError("Only zero batch or zero channel inputs are supported, but got input "
                           f"shape: {sizes}")
    # The checks of torch's slow_conv_transpose2d (its oneDNN path reports internal errors).
    if w_sizes[2] <= 0 or w_sizes[3] <= 0:
        raise RuntimeError("kernel size should be greater than zero, but got kernel_height: "
                           f"{w_sizes[2]} kernel_width: {w_sizes[3]}")
    if w_sizes[1] == 0:
        raise RuntimeError(f"non-empty 2D or 4D weight tensor expected, but got: {w_sizes}")
    if not all(op < s or op < d for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding_height: {output_padding[0]} output_padding_width: "
            f"{output_padding[1]} stride_height: {stride[0]} stride_width: {stride[1]} "
            f"dilation_height: {dilation[0]} dilation_width: {dilation[1]}")
    out_hw = [(size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, s, p, d, k, op in
              zip(sizes[2:], stride, padding, dilation, w_sizes[2:], output_padding)]
    if max(out_hw) > _INT64_MAX:
        raise RuntimeError(f"conv_transpose2d: size arithmetic overflows int64 (output size per "
                           f"channel: ({out_hw[0]} x {out_hw[1]}))")
    if out_hw[0] < 1 or out_hw[1] < 1:
        raise RuntimeError(f"Given input size per channel: ({sizes[2]} x {sizes[3]}). Calculated "
                           f"output size per channel: ({out_hw[0]} x {out_hw[1]}). Output size "
                           "is too small")
    return [sizes[0], out_channels] + out_hw


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor] = None, stride: _IntOrPair = 1,
                     padding: _IntOrPair = 0, output_padding: _IntOrPair = 0, groups: int = 1,
                     dilation: _IntOrPair = 1) -> torch.Tensor:
    """Same as torch.nn.functional.conv_transpose2d, computed by convpool's kernels.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_in, C_out / groups, kH, kW);
    bias: (C_out,) or None. Returns (N, C_out, H_out, W_out) (unbatched: (C_out, H_out, W_out)),
    H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1 (W alike),
    channels_last when input or weight is (as torch). stride, padding, output_padding, dilation:
    an int or a pair; output_padding must be smaller than stride or dilation. dtypes float32,
    float64, float16, bfloat16 (others raise NotImplementedError; torch also computes int64 and
    complex, and convpool.enable() leaves those calls to it). Bad arguments raise torch's
    RuntimeError / TypeError messages. Under torch.autocast the operands are cast as torch
    casts them (conv_transpose2d is in its lower-precision list). float16 / bfloat16 with a bias:
    the sum is rounded to the dtype before the bias is added (torch rounds once), so a result
    can differ from torch's by up to an ulp of the sum before the bias.

    How: a transposed convolution is the input-gradient of the convolution that maps its output
    to its input (Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016,
    section 4), so this is torch.ops.convpool.conv2d_grad_input(input, weight, output sizes,
    stride, padding, dilation, groups) plus the bias: a composition of convpool ops, with no op
    of its own. Autograd (any order), torch.compile and torch.export follow from that op's
    formula and fake kernel: the backward is convpool.conv2d (input) and conv2d_grad_weight.
    When output_padding >= stride (allowed while it is < dilation) the convolution of the output
    has output_padding // stride more rows than the input: the input is zero-padded to that size
    (the added rows contribute nothing), which is exact."""
    stride = _transpose_pair(stride, "stride")
    padding = _transpose_pair(padding, "padding")
    output_padding = _transpose_pair(output_padding, "output_padding")
    dilation = _transpose_pair(dilation, "dilation")
    input, weight, bias = cast_lower_precision(input.device.type, input, weight, bias)
    out_sizes = _conv_transpose2d_output_sizes(input, weight, bias, stride, padding,
                                               output_padding, groups, dilation)
    _check_conv_transpose2d_tensors(input, weight, bias)
    unbatched = input.dim() == 3
    # Batched here, so that the op's output is not a view (its in-place bias add is allowed).
    x = input.unsqueeze(0) if unbatched else input
    extra = [op // s for op, s in zip(output_padding, stride)]
    if x.numel() == 0 and 0 in x.shape[2:]:
        # An empty batch of empty images (torch accepts it): nothing to compute, and the
        # convolution geometry of conv2d_grad_input does not exist; as torch's "empty" backend,
        # the result is tied to both operands so autograd returns (zero) gradients for them.
        out = x.new_zeros(out_sizes) * (x.sum() * weight.reshape(-1)[0])
    else:
        if any(extra):
            x = F.pad(x, [0, extra[1], 0, extra[0]])
        out = call(_ops.conv2d_grad_input, x, weight, out_sizes, stride, padding, dilation,
                   groups)
    if bias is not None:
        out = out.add_(bias.view(-1, 1, 1))
    return out.squeeze(0) if unbatched else out
