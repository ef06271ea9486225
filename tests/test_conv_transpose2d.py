"""convpool.conv_transpose2d / ConvTranspose2d against torch.nn.functional.conv_transpose2d /
nn.ConvTranspose2d: values, gradients, layouts, dtypes, output_size, and a converted decoder."""
import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convpool
from helpers import LAYOUTS, TOLERANCES, grads, leaf, make_tensor

# (N, C_in, H, W, C_out, kH, kW, stride, padding, output_padding, dilation, groups, bias)
CASES = [
    (2, 3, 5, 6, 4, 3, 3, 1, 0, 0, 1, 1, True),
    (2, 4, 4, 5, 6, 2, 2, 2, 0, 0, 1, 1, True),  # U-Net up-convolution: 2x2 stride 2
    (2, 6, 4, 4, 3, 4, 4, 2, 1, 0, 1, 1, False),  # DCGAN / FCN 2x upsampling: 4x4 s2 p1
    (1, 4, 5, 4, 4, 3, 3, 2, 1, 1, 1, 1, True),  # output_padding 1: odd sizes restored
    (2, 4, 3, 5, 6, 3, 2, (2, 3), (1, 0), (1, 2), 1, 2, True),  # groups, per-axis arguments
    (2, 4, 4, 4, 4, 3, 3, 2, 1, 1, 1, 4, True),  # depthwise
    (1, 6, 4, 5, 3, 3, 3, 1, 1, 0, 2, 3, False),  # dilated, grouped
    (2, 2, 4, 4, 4, 2, 2, 1, 0, (2, 3), 4, 2, True),  # output_padding >= stride (< dilation)
    (2, 2, 4, 5, 2, 4, 3, (3, 2), (1, 2), (2, 3), (4, 4), 2, True),  # the same, OpInfo's shape
    (1, 3, 3, 3, 2, 3, 3, 3, 0, 2, 1, 1, True),  # stride > kernel - 1: gaps between windows
    (2, 3, 1, 1, 5, 4, 4, 1, 0, 0, 1, 1, True),  # DCGAN's first layer: 1x1 noise -> 4x4
    (2, 5, 4, 3, 3, 1, 1, 2, 0, 1, 1, 1, True),  # 1x1 strided
    (1, 2, 6, 6, 2, 3, 3, 1, 2, 0, 1, 1, True),  # padding crops the output
    (2, 3, 3, 4, 4, 5, 5, 2, 4, 1, 1, 1, True),  # padding larger than the stride
]


def _case_id(case):
    n, c, h, w, co, kh, kw, s, p, op, d, g, b = case
    return f"{n}x{c}x{h}x{w}-o{co}k{kh}{kw}s{s}p{p}op{op}d{d}g{g}b{int(b)}"


def _kwargs(case):
    return dict(stride=case[7], padding=case[8], output_padding=case[9], dilation=case[10],
                groups=case[11])


def _run(case, dtype, layout, weight_layout="contiguous"):
    n, c, h, w, co, kh, kw, _, _, _, _, groups, has_bias = case
    x = leaf(make_tensor((n, c, h, w), dtype, layout, seed=1))
    weight = leaf(make_tensor((c, co // groups, kh, kw), dtype, weight_layout, seed=2))
    bias = leaf(make_tensor((1, 1, 1, co), dtype, seed=3).flatten()) if has_bias else None
    ours = convpool.conv_transpose2d(x, weight, bias, **_kwargs(case))
    ref = F.conv_transpose2d(x, weight, bias, **_kwargs(case))
    return x, weight, bias, ours, ref


def _check(case, dtype, layout, weight_layout="contiguous"):
    tol = TOLERANCES[dtype]
    x, weight, bias, ours, ref = _run(case, dtype, layout, weight_layout)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, **tol)
    assert ours.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(
        memory_format=torch.channels_last)
    assert ours.is_contiguous() == ref.is_contiguous()
    for a, b in zip(grads(ours, (x, weight, bias)), grads(ref, (x, weight, bias))):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torch(case, dtype, layout):
    _check(case, dtype, layout)


@pytest.mark.parametrize("case", CASES[:6], ids=_case_id)
@pytest.mark.parametrize("weight_layout", ["channels_last", "strided_view"])
def test_weight_layouts(case, weight_layout):
    _check(case, torch.float64, "contiguous", weight_layout)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_reduced_precision_close_to_float64(case, dtype, layout):
    """Half/bfloat16 accumulate in float: compare with a float64 run on the same rounded inputs.
    Two roundings to the storage type when there is a bias (the sum, then the bias add)."""
    x, weight, bias, ours, _ = _run(case, dtype, layout)
    ref = F.conv_transpose2d(x.double(), weight.double(),
                             None if bias is None else bias.double(), **_kwargs(case))
    assert ours.dtype == dtype
    eps = torch.finfo(dtype).eps * (2 if bias is not None else 1)
    torch.testing.assert_close(ours.double(), ref, rtol=eps,
                               atol=eps * max(1.0, ref.abs().max().item()))
    ours_grads = grads(ours, (x, weight, bias))
    ref_grads = grads(ref.to(dtype), (x, weight, bias))  # torch in the same dtype
    for a, b in zip(ours_grads, ref_grads):
        scale = max(1.0, b.double().abs().max().item())
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(a.double(), b.double(), rtol=4 * eps, atol=4 * eps * scale)


@pytest.mark.parametrize("case", [CASES[3], CASES[7]], ids=_case_id)
def test_unbatched_input(case):
    x = leaf(make_tensor((1,) + case[1:4], torch.float64, seed=1).squeeze(0))
    weight = leaf(make_tensor((case[1], case[4] // case[11], case[5], case[6]), torch.float64))
    bias = leaf(torch.randn(case[4], dtype=torch.float64))
    ours = convpool.conv_transpose2d(x, weight, bias, **_kwargs(case))
    ref = F.conv_transpose2d(x, weight, bias, **_kwargs(case))
    assert ours.dim() == 3
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads(ours, (x, weight, bias)), grads(ref, (x, weight, bias))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("height", [5, 0])
def test_empty_batch(height):
    # torch accepts an empty batch, even of empty images (then the output has (H-1)*s + ... rows).
    x = leaf(torch.randn(0, 4, height, 5, dtype=torch.float64))
    weight = leaf(torch.randn(4, 3, 3, 3, dtype=torch.float64))
    bias = leaf(torch.randn(3, dtype=torch.float64))
    ours = convpool.conv_transpose2d(x, weight, bias, stride=2)
    ref = F.conv_transpose2d(x, weight, bias, stride=2)
    assert ours.shape == ref.shape
    gx, gw, gb = torch.autograd.grad(ours.sum(), (x, weight, bias))
    assert gx.shape == x.shape
    assert torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gb, torch.zeros_like(gb))


def test_argument_forms():
    """int, 1-tuple, pair, list and keywords, as torch takes them."""
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for kwargs in [dict(stride=2, padding=1, output_padding=1),
                   dict(stride=(2,), padding=[1], output_padding=(1,), dilation=(1,)),
                   dict(stride=[2, 3], padding=(1, 0), output_padding=[1, 2], dilation=(1, 1)),
                   dict(stride=torch.Size([2, 1]), groups=2)]:
        torch.testing.assert_close(convpool.conv_transpose2d(x, weight, **kwargs),
                                   F.conv_transpose2d(x, weight, **kwargs))
    torch.testing.assert_close(
        convpool.conv_transpose2d(input=x, weight=weight, bias=None, stride=2, padding=1,
                                  output_padding=1, groups=1, dilation=1),
        F.conv_transpose2d(x, weight, None, 2, 1, 1, 1, 1))
    assert list(inspect.signature(convpool.conv_transpose2d).parameters) == [
        "input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"]


def test_deterministic():
    x = leaf(torch.randn(2, 8, 7, 7))
    weight = leaf(torch.randn(8, 4, 4, 4))
    runs = []
    for _ in range(2):
        out = convpool.conv_transpose2d(x, weight, None, stride=2, padding=1, groups=2)
        runs.append((out, *torch.autograd.grad(out, (x, weight), torch.ones_like(out))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_is_the_dgrad_of_conv2d():
    """The identity the implementation rests on: <conv2d(y, w), x> = <y, conv_transpose2d(x, w)>."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 11, 9, dtype=torch.float64, generator=g)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g)
    args = dict(stride=2, padding=1, dilation=1)
    x = torch.randn(convpool.conv2d(y, w, **args).shape, dtype=torch.float64, generator=g)
    lhs = (convpool.conv2d(y, w, **args) * x).sum()
    rhs = (y * convpool.conv_transpose2d(x, w, output_padding=0, **args)).sum()
    torch.testing.assert_close(lhs, rhs)


# ---- the module ----------------------------------------------------------------------------

def test_module_signature_is_torchs():
    assert inspect.signature(convpool.ConvTranspose2d) == inspect.signature(nn.ConvTranspose2d)
    assert (inspect.signature(convpool.ConvTranspose2d.forward)
            == inspect.signature(nn.ConvTranspose2d.forward))


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=8, out_channels=4, kernel_size=2, stride=2),
    dict(in_channels=4, out_channels=6, kernel_size=4, stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
         output_padding=(1, 0), dilation=(1, 2), groups=2),
])
def test_module_matches_and_shares_state(kwargs):
    torch.manual_seed(0)
    theirs = nn.ConvTranspose2d(**kwargs, dtype=torch.float64)
    torch.manual_seed(0)
    ours = convpool.ConvTranspose2d(**kwargs, dtype=torch.float64)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b)  # same initialization from the same seed
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, kwargs["in_channels"], 7, 6, dtype=torch.float64, requires_grad=True)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs)
    grad = torch.randn_like(out_theirs)
    g_ours = torch.autograd.grad(out_ours, [x, *ours.parameters()], grad)
    g_theirs = torch.autograd.grad(out_theirs, [x, *theirs.parameters()], grad)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def test_module_output_size():
    """forward(input, output_size): output_padding chosen so the output has the requested size,
    e.g. to undo a stride-2 convolution of an odd-sized map."""
    torch.manual_seed(0)
    down = nn.Conv2d(3, 6, 3, stride=2, padding=1, dtype=torch.float64)
    ours = convpool.ConvTranspose2d(6, 3, 3, stride=2, padding=1, dtype=torch.float64)
    theirs = nn.ConvTranspose2d(6, 3, 3, stride=2, padding=1, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    for output_size in [x.shape, x.shape[2:], [9, 10], torch.Size([9, 10])]:
        out = ours(down(x), output_size=output_size)
        assert out.shape == x.shape
        torch.testing.assert_close(out, theirs(down(x), output_size=output_size))
    with pytest.raises(ValueError, match="requested an output size of"):
        ours(down(x), output_size=[30, 30])
    ours.padding_mode = "reflect"
    with pytest.raises(ValueError, match="Only `zeros` padding mode is supported"):
        ours(down(x))


def test_convert_replaces_exact_conv_transpose2d():
    model = nn.Sequential(nn.ConvTranspose2d(4, 2, 2, stride=2), nn.ReLU())
    weight = model[0].weight
    assert convpool.convert(model) is model
    assert type(model[0]) is convpool.ConvTranspose2d and model[0].weight is weight

    class MyTranspose(nn.ConvTranspose2d):
        pass
    assert type(convpool.convert(MyTranspose(1, 1, 1))) is MyTranspose
    assert type(convpool.convert(nn.ConvTranspose2d(1, 1, 1))) is convpool.ConvTranspose2d


# ---- converted decoders --------------------------------------------------------------------

class UNetSmall(nn.Module):
    """A two-level U-Net (Ronneberger et al. 2015): 3x3 conv blocks, max-pool down, 2x2 stride-2
    up-convolutions, skip connections by concatenation; padded convs so odd sizes need
    output_size."""

    def __init__(self, channels=3, width=8, classes=2):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())
        self.enc1, self.enc2 = block(channels, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = block(2 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b, output_size=e2.shape), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2, output_size=e1.shape), e1], 1))
        return self.head(d1)


def dcgan_generator(nz=16, ngf=8, channels=3):
    """The DCGAN generator (Radford et al. 2016) as in pytorch/examples dcgan: 4x4 kernels, the
    first on the 1x1 noise, then stride 2 padding 1, BatchNorm + ReLU, Tanh; 1x1 -> 32x32."""
    layers = [nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
              nn.ReLU(True)]
    for cin, cout in [(ngf * 8, ngf * 4), (ngf * 4, ngf * 2), (ngf * 2, ngf)]:
        layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def _count(model, cls):
    return sum(type(m) is cls for m in model.modules())


@pytest.mark.parametrize("name, build, input_shape", [
    ("unet", UNetSmall, (2, 3, 19, 22)),
    ("dcgan", dcgan_generator, (3, 16, 1, 1)),
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_converted_decoder_matches_stock(name, build, input_shape, channels_last):
    """Random weights: train-mode outputs and every parameter's gradient equal the stock model's
    (float64, so only summation order differs), in both layouts."""
    torch.manual_seed(0)
    stock = build().double()
    ours = convpool.convert(copy.deepcopy(stock))
    n_transposed = _count(stock, nn.ConvTranspose2d)
    assert n_transposed > 0 and _count(ours, nn.ConvTranspose2d) == 0
    assert _count(ours, convpool.ConvTranspose2d) == n_transposed
    x = torch.randn(input_shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        stock, ours = (m.to(memory_format=torch.channels_last) for m in (stock, ours))
    outputs, gradients = [], []
    for model in (stock, ours):
        xi = leaf(x)
        out = model(xi)
        outputs.append(out)
        projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                                 dtype=out.dtype)
        gradients.append(torch.autograd.grad(out, [xi, *model.parameters()], projection))
    torch.testing.assert_close(outputs[1], outputs[0])
    assert (outputs[1].is_contiguous(memory_format=torch.channels_last)
            == outputs[0].is_contiguous(memory_format=torch.channels_last))
    for a, b in zip(gradients[1], gradients[0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    stock.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), stock(x))


# Forward-mode AD and torch.func come from the formulas of the ops conv_transpose2d is made of
# (conv2d_grad_input, conv2d, conv2d_grad_weight).


def test_forward_mode_ad_matches_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, generator=g)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g)
    vx, vw = torch.randn_like(x), torch.randn_like(w)
    kwargs = dict(stride=2, padding=1, output_padding=1)
    ours = torch.func.jvp(lambda x, w: convpool.conv_transpose2d(x, w, **kwargs), (x, w), (vx, vw))
    ref = torch.func.jvp(lambda x, w: F.conv_transpose2d(x, w, **kwargs), (x, w), (vx, vw))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_torch_func_grad_matches_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, generator=g)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g)
    ours = torch.func.grad(lambda x: convpool.conv_transpose2d(x, w, stride=2).square().sum())(x)
    ref = torch.func.grad(lambda x: F.conv_transpose2d(x, w, stride=2).square().sum())(x)
    torch.testing.assert_close(ours, ref)
