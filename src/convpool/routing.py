"""convpool.enable(): run torch's own conv2d / conv_transpose2d / max_pool2d calls on convpool's
kernels.

    with convpool.enable():
        out = torchvision.models.inception_v3(init_weights=False)(x)   # unchanged model code

A torch.overrides.TorchFunctionMode intercepts the functional entry points that models call —
torch.conv2d (which is torch.nn.functional.conv2d, and what nn.Conv2d.forward calls),
torch.conv_transpose2d (likewise F.conv_transpose2d, called by nn.ConvTranspose2d.forward),
torch.max_pool2d, torch.nn.functional.max_pool2d and max_pool2d_with_indices — and sends them to
convpool.conv2d / conv_transpose2d / max_pool2d. A call convpool cannot serve (a dtype, device,
layout or tensor subclass its ops do not take, or arguments that do not bind) goes to torch
unchanged, so the mode never turns a call torch accepts into an error. Every other function
passes through.

torch pops the mode while its handler runs, so convpool's own torch calls (F.pad, torch.ops) are
not intercepted again: no recursion."""
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import functional

_CONV_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})
_POOL_DTYPES = _CONV_DTYPES | {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def _device_types_with_kernel(op_name: str) -> frozenset:
    # Decided once, at import: a set lookup is all the mode does per call (and all torch.compile
    # has to trace through).
    return frozenset(
        device_type for device_type in ("cpu", "cuda", "meta")
        if torch._C._dispatch_has_kernel_for_dispatch_key(
            f"convpool::{op_name}", torch._C._dispatch_key_for_device(device_type)))


_CONV_DEVICE_TYPES = _device_types_with_kernel("conv2d")
_POOL_DEVICE_TYPES = _device_types_with_kernel("max_pool2d")


def _servable(tensor, dtypes, device_types) -> bool:
    """A plain dense tensor (no __torch_function__ subclass, which expects torch's ops) of a dtype
    and on a device that the convpool op handles."""
    return (isinstance(tensor, torch.Tensor)
            and (type(tensor) is torch.Tensor
                 or type(tensor).__torch_function__ is torch._C._disabled_torch_function_impl)
            and tensor.layout == torch.strided
            and tensor.dtype in dtypes
            and tensor.device.type in device_types)


# The signatures of the intercepted torch functions: calling a route binds the call's arguments
# (in C, no inspect.signature per call); a call that does not bind raises TypeError and goes to
# torch, for torch's error message.

def _conv2d_route(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    tensors = (input, weight) if bias is None else (input, weight, bias)
    if not all(_servable(t, _CONV_DTYPES, _CONV_DEVICE_TYPES) for t in tensors):
        return NotImplemented
    return functional.conv2d(input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose2d_route(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                            groups=1, dilation=1):
    tensors = (input, weight) if bias is None else (input, weight, bias)
    if not all(_servable(t, _CONV_DTYPES, _CONV_DEVICE_TYPES) for t in tensors):
        return NotImplemented
    return functional.conv_transpose2d(input, weight, bias, stride, padding, output_padding,
                                       groups, dilation)


def _max_pool2d_route(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                      return_indices=False):
    if not _servable(input, _POOL_DTYPES, _POOL_DEVICE_TYPES):
        return NotImplemented
    return functional.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode,
                                 return_indices)


def _max_pool2d_with_indices_route(input, kernel_size, stride=None, padding=0, dilation=1,
                                   ceil_mode=False, return_indices=False):
    # torch's max_pool2d_with_indices returns (values, indices) whatever return_indices says.
    return _max_pool2d_route(input, kernel_size, stride, padding, dilation, ceil_mode,
                             return_indices=True)


def _torch_max_pool2d_route(input, kernel_size, stride=(), padding=0, dilation=1,
                            ceil_mode=False):
    # torch.max_pool2d: values only; its stride default is an empty list, "the kernel size".
    return _max_pool2d_route(input, kernel_size, stride, padding, dilation, ceil_mode)


# Function objects as the mode sees them: F.conv2d is torch.conv2d itself, F.conv_transpose2d
# torch.conv_transpose2d; F.max_pool2d is a boolean_dispatch wrapper whose two branches report
# themselves as F.max_pool2d (values) and F.max_pool2d_with_indices (return_indices=True).
_ROUTES = {
    torch.conv2d: _conv2d_route,
    torch.conv_transpose2d: _conv_transpose2d_route,
    torch.max_pool2d: _torch_max_pool2d_route,
    F.max_pool2d: _max_pool2d_route,
    F.max_pool2d_with_indices: _max_pool2d_with_indices_route,
}


class ConvPoolRouting(TorchFunctionMode):
    """The mode behind convpool.enable(); see the module docstring."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        route = _ROUTES.get(func)
        if route is not None:
            try:
                result = route(*args, **kwargs)
            except TypeError:
                # Arguments that do not bind, or of a type convpool's ops reject: torch decides
                # (it may accept what convpool cannot serve, or raises its own error).
                result = NotImplemented
            if result is not NotImplemented:
                return result
        return func(*args, **kwargs)


def enable() -> ConvPoolRouting:
    """A context manager under which torch.nn.functional.conv2d / conv_transpose2d / max_pool2d
    (and torch.conv2d, torch.conv_transpose2d, torch.max_pool2d, F.max_pool2d_with_indices), hence
    nn.Conv2d, nn.ConvTranspose2d and nn.MaxPool2d too, run on convpool's kernels; calls
    convpool cannot serve (e.g. integer or complex conv) stay torch's.

        with convpool.enable():
            y = model(x)
    """
    return ConvPoolRouting()
