"""Automatic mixed precision (torch.autocast) for the torch.ops.convpool ops, as PyTorch treats its own.

torch.autocast puts conv2d in its lower-precision list: floating-point inputs (not float64) on the
autocast device are cast to the region's dtype (torch.get_autocast_dtype) and the op runs there.
convpool.conv2d gets the same rule, and so does convpool.conv_transpose2d (torch's is in the same
list): it is a composition of ops, so it casts its operands itself (cast_lower_precision). The
other ops need none:
  - max_pool2d is in no autocast list in PyTorch: it runs in its input's dtype (autocast falls
    through for ops without a rule);
  - the backward ops receive the already-cast tensors the forward saved, and the gradients of fp32
    leaves come back in fp32 through the autograd of the casts themselves, as for torch's conv.

torch.library.register_autocast would fix one cast dtype per device at registration time; the
region's dtype (float16 or bfloat16, chosen by the user) is read at call time instead."""
import torch

_LOWER_PRECISION_OPS = ("conv2d",)
_DEVICE_TYPES = ("cpu", "cuda")

_lib = torch.library.Library("convpool", "IMPL")  # kept alive: the registrations live with it


def _cast_for_autocast(value, device_type: str, dtype: torch.dtype):
    """As PyTorch's autocast: floating-point tensors on the device, float64 excepted."""
    if (isinstance(value, torch.Tensor) and value.is_floating_point()
            and value.device.type == device_type and value.dtype != torch.float64):
        return value.to(dtype)
    return value


def cast_lower_precision(device_type: str, *args):
    """args cast as autocast casts those of an op in its lower-precision list, when an autocast
    region is active for device_type (else unchanged): for functions that are compositions of
    convpool ops rather than one op with the rule above."""
    if device_type not in _DEVICE_TYPES or not torch.is_autocast_enabled(device_type):
        return args
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(_cast_for_autocast(a, device_type, dtype) for a in args)


def _lower_precision_kernel(op, device_type: str):
    autocast_key = torch._C.DispatchKeySet(_autocast_dispatch_key(device_type))

    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(autocast_key):
            return op(*(_cast_for_autocast(a, device_type, dtype) for a in args))

    return kernel


def _autocast_dispatch_key(device_type: str):
    return getattr(torch._C.DispatchKey, _autocast_key_name(device_type))


def _autocast_key_name(device_type: str) -> str:
    return "Autocast" + torch._C._dispatch_key_for_device(device_type)


def _register():
    for device_type in _DEVICE_TYPES:
        if not torch.amp.is_autocast_available(device_type):
            continue
        for name in _LOWER_PRECISION_OPS:
            op = getattr(torch.ops.convpool, name).default
            _lib.impl(name, _lower_precision_kernel(op, device_type),
                      _autocast_key_name(device_type), with_keyset=True)


_register()
