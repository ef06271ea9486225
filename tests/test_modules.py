"""convpool.Conv2d / MaxPool2d as drop-ins for torch.nn, and convert() on torchvision models."""
import copy
import inspect

import pytest
import torch
import torchvision
from torch import nn

import convpool


def test_signatures_are_torchs():
    assert inspect.signature(convpool.Conv2d) == inspect.signature(nn.Conv2d)
    assert inspect.signature(convpool.MaxPool2d) == inspect.signature(nn.MaxPool2d)
    # torch.nn.functional's are builtins without introspectable signatures: its documented ones.
    assert list(inspect.signature(convpool.conv2d).parameters) == [
        "input", "weight", "bias", "stride", "padding", "dilation", "groups"]
    assert list(inspect.signature(convpool.max_pool2d).parameters) == [
        "input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=8, kernel_size=7, stride=2, padding=3, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(1, 2), dilation=2, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", groups=4),
])
def test_conv2d_module_matches_and_shares_state(kwargs, padding_mode):
    torch.manual_seed(0)
    theirs = nn.Conv2d(**kwargs, padding_mode=padding_mode, dtype=torch.float64)
    torch.manual_seed(0)
    ours = convpool.Conv2d(**kwargs, padding_mode=padding_mode, dtype=torch.float64)
    assert repr(ours) == repr(theirs)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b)  # same initialization from the same seed
    # state_dict round trip both ways
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(2, kwargs["in_channels"], 11, 10, dtype=torch.float64, requires_grad=True)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs)
    grad = torch.randn_like(out_theirs)
    g_ours = torch.autograd.grad(out_ours, [x, *ours.parameters()], grad)
    g_theirs = torch.autograd.grad(out_theirs, [x, *theirs.parameters()], grad)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def test_max_pool2d_module():
    for args, kwargs in [((3, 2, 1), {}), ((2,), dict(return_indices=True)),
                         ((3,), dict(stride=2, ceil_mode=True, dilation=1))]:
        ours, theirs = convpool.MaxPool2d(*args, **kwargs), nn.MaxPool2d(*args, **kwargs)
        assert repr(ours) == repr(theirs) and ours.state_dict() == theirs.state_dict() == {}
        x = torch.randn(2, 3, 9, 9)
        a, b = ours(x), theirs(x)
        if isinstance(a, tuple):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        else:
            assert torch.equal(a, b)


def test_convert_keeps_state_and_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Sequential(nn.Conv2d(4, 4, 1, bias=False)))
    model.eval()
    model[0].weight.requires_grad_(False)
    model[0].custom_attribute = "kept"
    hook_calls = []
    model[0].register_forward_hook(lambda *args: hook_calls.append(1))
    weight = model[0].weight
    converted = convpool.convert(model)
    assert converted is model  # children are replaced in place, as convert_sync_batchnorm
    assert type(converted[0]) is convpool.Conv2d and type(converted[2]) is convpool.MaxPool2d
    assert type(converted[3][0]) is convpool.Conv2d
    assert converted[0].weight is weight and not converted[0].weight.requires_grad
    assert not converted[0].training and converted[0].custom_attribute == "kept"
    converted(torch.randn(1, 3, 8, 8))
    assert hook_calls == [1]
    # A root that is itself a conv is returned converted; subclasses are left alone.
    assert type(convpool.convert(nn.Conv2d(1, 1, 1))) is convpool.Conv2d

    class MyConv(nn.Conv2d):
        pass
    assert type(convpool.convert(MyConv(1, 1, 1))) is MyConv


def _count(model, cls):
    return sum(type(m) is cls for m in model.modules())


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("vgg11_bn", 32), ("mobilenet_v2", 64),
                                       ("squeezenet1_0", 64)])
def test_convert_torchvision_models(name, size):
    """Random weights (no download): eval outputs and one training step's gradients equal the
    stock model's (float64, so only summation order differs)."""
    torch.manual_seed(0)
    stock = getattr(torchvision.models, name)(weights=None).double()
    ours = convpool.convert(copy.deepcopy(stock))
    n_conv, n_pool = _count(stock, nn.Conv2d), _count(stock, nn.MaxPool2d)
    assert n_conv > 0
    assert _count(ours, nn.Conv2d) == 0 and _count(ours, nn.MaxPool2d) == 0
    assert _count(ours, convpool.Conv2d) == n_conv and _count(ours, convpool.MaxPool2d) == n_pool
    x = torch.randn(2, 3, size, size, dtype=torch.float64)

    stock.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), stock(x))

    stock.train(), ours.train()
    target = torch.randint(0, 1000, (2,))
    for model in (stock, ours):
        torch.manual_seed(1)  # same dropout masks
        nn.functional.cross_entropy(model(x), target).backward()
    for (name_a, a), (name_b, b) in zip(stock.named_parameters(), ours.named_parameters()):
        assert name_a == name_b
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-9, msg=name_a)
