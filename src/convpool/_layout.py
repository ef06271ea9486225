"""Memory-layout decisions shared by the fake kernels and the autograd formulas.

They mirror the C++ side (csrc/shape.h: is_channels_last, conv2d_memory_format)."""
import torch
from torch._prims_common import suggest_memory_format


def is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and suggest_memory_format(t) == torch.channels_last


def conv2d_memory_format(a: torch.Tensor, b: torch.Tensor) -> torch.memory_format:
    """PyTorch's CPU convolution: channels_last out if either operand is channels_last."""
    if is_channels_last(a) or is_channels_last(b):
        return torch.channels_last
    return torch.contiguous_format
