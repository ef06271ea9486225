"""convpool: conv2d and max_pool2d for PyTorch, computed by our own C++ (and CUDA) kernels.

Drop-in replacements for torch.nn.functional.conv2d / conv_transpose2d / max_pool2d and
torch.nn.Conv2d / ConvTranspose2d / MaxPool2d, plus `convert(model)` to swap them into an
existing model. The ops live in `torch.ops.convpool`.
"""
import torch  # noqa: F401  (libtorch must be loaded before our extension)

from . import _C  # noqa: F401  (registers the torch.ops.convpool schemas and kernels)
from . import _autocast, _fake, _vmap, autograd  # noqa: F401  (fake kernels, autograd, vmap, autocast)
from . import backends, testing  # noqa: F401  (convpool.backends.cpu, convpool.testing.cuda_emulation)
from .convert import convert
from .functional import conv2d, conv_transpose2d, max_pool2d
from .info import build_info
from .modules import Conv2d, ConvTranspose2d, MaxPool2d
from .routing import enable

__version__ = "0.1.0"
__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "Conv2d", "ConvTranspose2d", "MaxPool2d",
           "convert", "build_info", "enable"]
