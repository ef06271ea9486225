"""torch.nn.functional-compatible entry points: same arguments, same results, our kernels."""
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .autograd import call

_ops = torch.ops.convpool
_CONV2D = _ops.conv2d
_MAX_POOL2D = _ops.max_pool2d
_MAX_POOL2D_VALUES = _ops.max_pool2d_values

_IntOrPair = Union[int, Sequence[int]]


def _int_list(value) -> List[int]:
    """An int or a sequence of ints as a list; the op validates the length and the values."""
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
