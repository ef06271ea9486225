"""Drop-in modules. Subclassing torch.nn keeps constructor signatures, parameter names,
initialization, repr and state_dict identical; only the computation changes."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from . import functional


class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d computed by convpool.conv2d (padding_mode included)."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return functional.conv2d(input, weight, bias, self.stride, _pair(0), self.dilation,
                                     self.groups)
        return functional.conv2d(input, weight, bias, self.stride, self.padding, self.dilation,
                                 self.groups)


class MaxPool2d(nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by convpool.max_pool2d."""

    def forward(self, input: torch.Tensor):
        return functional.max_pool2d(input, self.kernel_size, self.stride, self.padding,
                                     self.dilation, ceil_mode=self.ceil_mode,
                                     return_indices=self.return_indices)


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d computed by convpool.conv_transpose2d; forward(input,
    output_size=None) derives output_padding from output_size as torch does."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return functional.conv_transpose2d(input, self.weight, self.bias, self.stride,
                                           self.padding, output_padding, self.groups,
                                           self.dilation)
