"""convert(model): swap every torch.nn.Conv2d / ConvTranspose2d / MaxPool2d for convpool's, keeping
everything else."""
from torch import nn

from .modules import Conv2d, ConvTranspose2d, MaxPool2d

_REPLACEMENTS = {nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d,
                 nn.MaxPool2d: MaxPool2d}


def _swap_class(module: nn.Module, cls) -> nn.Module:
    """A new `cls` module with the same state: the same Parameter objects (weights are shared, not
    copied, so device, dtype, requires_grad and optimizer references stay valid), buffers, hooks,
    train/eval mode and any attribute the user added."""
    new = cls.__new__(cls)
    for key, value in module.__dict__.items():
        # Own containers (a later change to one module must not show up in the other).
        new.__dict__[key] = value.copy() if isinstance(value, dict) else value
    return new


def convert(module: nn.Module) -> nn.Module:
    """Returns `module` with every nn.Conv2d, nn.ConvTranspose2d and nn.MaxPool2d (exact type;
    subclasses are left alone) replaced by convpool.Conv2d / ConvTranspose2d / MaxPool2d,
    recursively. Like torch.nn.SyncBatchNorm.convert_sync_batchnorm, children are replaced in
    place and the (possibly new) root is returned."""
    replacement = _REPLACEMENTS.get(type(module))
    result = _swap_class(module, replacement) if replacement is not None else module
    for name, child in list(result.named_children()):
        converted = convert(child)
        if converted is not child:
            setattr(result, name, converted)
    return result
