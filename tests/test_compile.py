"""torch.compile(fullgraph=True) traces the convpool ops (through their fake kernels) and the
compiled net matches eager, forward and backward."""
import torch
from torch import nn

import convpool


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = convpool.Conv2d(3, 8, 3, padding=1)
        self.pool = convpool.MaxPool2d(3, 2, 1)
        self.conv2 = convpool.Conv2d(8, 4, 3, stride=2, groups=4)

    def forward(self, x):
        return self.conv2(torch.relu(self.pool(self.conv1(x)))).sum(dim=(2, 3))


def test_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    net = SmallNet()
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(net, fullgraph=True)
    expected = net(x)
    grads_eager = torch.autograd.grad(expected.sum(), list(net.parameters()))
    actual = compiled(x)
    grads_compiled = torch.autograd.grad(actual.sum(), list(net.parameters()))
    torch.testing.assert_close(actual, expected)
    for a, b in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(a, b)
