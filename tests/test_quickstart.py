"""The README's API snippet runs and every result equals torch's."""
import copy

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import convpool


def test_readme_snippet():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 17, 15, dtype=torch.float64)
    w = torch.randn(16, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(16, dtype=torch.float64)
    for stride, padding in [(2, 1), (2, (1, 2)), (1, "same")]:
        kwargs = dict(stride=stride, padding=padding, dilation=2, groups=4)
        torch.testing.assert_close(convpool.conv2d(x, w, b, **kwargs), F.conv2d(x, w, b, **kwargs))

    wt = torch.randn(8, 3, 3, 3, dtype=torch.float64)  # (C_in, C_out / groups, kH, kW)
    bt = torch.randn(6, dtype=torch.float64)
    kwargs = dict(stride=2, padding=1, output_padding=1, groups=2)
    torch.testing.assert_close(convpool.conv_transpose2d(x, wt, bt, **kwargs),
                               F.conv_transpose2d(x, wt, bt, **kwargs))

    y, idx = convpool.max_pool2d(x, 3, stride=2, padding=1, dilation=1, ceil_mode=True, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(x, 3, stride=2, padding=1, dilation=1, ceil_mode=True, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)

    layer = convpool.Conv2d(3, 64, 7, stride=2, padding=3, bias=False, padding_mode="reflect")
    stock_layer = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False, padding_mode="reflect")
    stock_layer.load_state_dict(layer.state_dict())
    image = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(layer(image), stock_layer(image))

    up = convpool.ConvTranspose2d(128, 64, 2, stride=2)
    stock_up = nn.ConvTranspose2d(128, 64, 2, stride=2)
    stock_up.load_state_dict(up.state_dict())
    features = torch.randn(1, 128, 5, 4)
    torch.testing.assert_close(up(features), stock_up(features))

    pool = convpool.MaxPool2d(3, 2, 1)
    assert torch.equal(pool(image), nn.MaxPool2d(3, 2, 1)(image))

    stock = torchvision.models.resnet18().eval()
    model = convpool.convert(copy.deepcopy(stock)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(image), stock(image), rtol=1e-4, atol=1e-4)
