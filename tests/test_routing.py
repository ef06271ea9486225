"""convpool.enable(): torch's functional conv2d / conv_transpose2d / max_pool2d calls (and so
nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d and models calling F.max_pool2d directly) run on
convpool's ops; calls convpool cannot serve stay torch's; leaving the context restores torch.
Calls are counted where they reach the dispatcher."""
import collections

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import convpool
from helpers import TOLERANCES


class OpCounter(TorchDispatchMode):
    """Counts every operator call reaching the dispatcher, by name (e.g. 'convpool.conv2d')."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket._qualified_op_name.replace("::", ".")] += 1
        return func(*args, **(kwargs or {}))

    def torch_conv_pool_calls(self):
        """Calls of torch's own convolution and max-pooling operators."""
        return {name: n for name, n in self.counts.items() if name.startswith("aten.")
                and ("convolution" in name or "max_pool" in name)}

    def convpool_calls(self):
        return {name: n for name, n in self.counts.items() if name.startswith("convpool.")}


def run_counted(fn, *args, routed):
    with OpCounter() as counter:
        if routed:
            with convpool.enable():
                result = fn(*args)
        else:
            result = fn(*args)
    return result, counter


def count_modules(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@torch.no_grad()
def check_model_routed(model, x, expected_convs, expected_pools):
    model.eval()
    expected, unrouted = run_counted(model, x, routed=False)
    actual, routed = run_counted(model, x, routed=True)
    assert unrouted.convpool_calls() == {}
    assert routed.torch_conv_pool_calls() == {}
    # No gradient is needed here, so pooling takes the values-only op (no indices computed).
    assert routed.convpool_calls() == {"convpool.conv2d": expected_convs,
                                       "convpool.max_pool2d_values": expected_pools}
    torch.testing.assert_close(actual, expected, **TOLERANCES[torch.float32])


def test_googlenet_runs_on_convpool():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(init_weights=False, aux_logits=False)
    assert count_modules(model, nn.Conv2d) == 57 and count_modules(model, nn.MaxPool2d) == 13
    check_model_routed(model, torch.randn(2, 3, 64, 64), expected_convs=57, expected_pools=13)


@pytest.mark.parametrize("block", [torchvision.models.inception.InceptionB,
                                   torchvision.models.inception.InceptionD])
def test_inception_blocks_calling_functional_max_pool2d(block):
    # inception_v3's reduction blocks call F.max_pool2d themselves (no nn.MaxPool2d module).
    torch.manual_seed(0)
    model = block(16)
    assert count_modules(model, nn.MaxPool2d) == 0
    check_model_routed(model, torch.randn(2, 16, 11, 13),
                       expected_convs=count_modules(model, nn.Conv2d), expected_pools=1)


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding="same", padding_mode="reflect"),
                                    dict(stride=2, groups=2, bias=False)])
def test_conv2d_module_forward_and_backward(kwargs):
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 6, 3, dtype=torch.float64, **kwargs)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)

    def forward_backward(x):
        out = layer(x)
        return out, torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])

    (expected, expected_grads), _ = run_counted(forward_backward, x, routed=False)
    (actual, grads), routed = run_counted(forward_backward, x, routed=True)
    assert routed.torch_conv_pool_calls() == {}
    calls = routed.convpool_calls()
    assert calls["convpool.conv2d"] == 1
    assert calls["convpool.conv2d_grad_input"] == calls["convpool.conv2d_grad_weight"] == 1
    assert calls.get("convpool.conv2d_grad_bias", 0) == (layer.bias is not None)
    torch.testing.assert_close(actual, expected)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)


def _entry_points():
    x = torch.randn(2, 3, 10, 9)
    w = torch.randn(4, 3, 3, 2)
    wt, bt = torch.randn(3, 1, 3, 2), torch.randn(1)  # conv_transpose2d: (C_in, C_out / groups, ...)
    transposed = nn.ConvTranspose2d(3, 2, 3, 2, 1)
    return [
        ("F.max_pool2d", lambda: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)),
        ("F.max_pool2d return_indices", lambda: F.max_pool2d(x, 3, return_indices=True)),
        ("F.max_pool2d positional", lambda: F.max_pool2d(x, 2, 2, 0, 1, False, True)),
        ("F.max_pool2d_with_indices", lambda: F.max_pool2d_with_indices(x, 2, dilation=2)),
        ("torch.max_pool2d", lambda: torch.max_pool2d(x, [2, 3])),
        ("nn.MaxPool2d", lambda: nn.MaxPool2d(2, return_indices=True)(x)),
        ("integer max_pool2d", lambda: F.max_pool2d((x * 10).to(torch.int32), 2)),
        ("torch.conv2d", lambda: torch.conv2d(x, w, None, 2, 1)),
        ("F.conv2d keywords", lambda: F.conv2d(input=x, weight=w, padding="same", dilation=2)),
        ("F.conv_transpose2d", lambda: F.conv_transpose2d(x, wt, bt, stride=2, output_padding=1)),
        ("torch.conv_transpose2d positional", lambda: torch.conv_transpose2d(x, wt, None, 2, 1, 1, 1, 2)),
        ("F.conv_transpose2d keywords", lambda: F.conv_transpose2d(input=x, weight=wt, groups=3, dilation=2)),
        ("nn.ConvTranspose2d output_size", lambda: transposed(x, output_size=[20, 18])),
    ]


@pytest.mark.parametrize("name, call", _entry_points(), ids=[n for n, _ in _entry_points()])
def test_every_entry_point_is_routed(name, call):
    expected, _ = run_counted(call, routed=False)
    actual, routed = run_counted(call, routed=True)
    assert routed.torch_conv_pool_calls() == {}
    assert sum(routed.convpool_calls().values()) == 1
    if isinstance(expected, tuple):  # values and indices
        torch.testing.assert_close(actual[0], expected[0])
        assert torch.equal(actual[1], expected[1])
    else:
        torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64])
def test_conv2d_convpool_cannot_serve_goes_to_torch(dtype):
    x = (torch.randn(1, 2, 5, 5) * 4).to(dtype)
    w = (torch.randn(3, 2, 3, 3) * 4).to(dtype)
    expected = F.conv2d(x, w)
    with pytest.raises(NotImplementedError):
        convpool.conv2d(x, w)  # convpool's kernels are floating point
    actual, routed = run_counted(F.conv2d, x, w, routed=True)
    assert routed.convpool_calls() == {}
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64])
def test_conv_transpose2d_convpool_cannot_serve_goes_to_torch(dtype):
    x = (torch.randn(1, 2, 5, 5) * 4).to(dtype)
    w = (torch.randn(2, 3, 3, 3) * 4).to(dtype)
    expected = F.conv_transpose2d(x, w, stride=2)
    with pytest.raises(NotImplementedError):
        convpool.conv_transpose2d(x, w, stride=2)
    actual, routed = run_counted(lambda: F.conv_transpose2d(x, w, stride=2), routed=True)
    assert routed.convpool_calls() == {}
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1, output_padding=1),
                                    dict(stride=2, groups=2, bias=False)])
def test_conv_transpose2d_module_forward_and_backward(kwargs):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 6, 3, dtype=torch.float64, **kwargs)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)

    def forward_backward(x):
        out = layer(x)
        return out, torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])

    (expected, expected_grads), _ = run_counted(forward_backward, x, routed=False)
    (actual, grads), routed = run_counted(forward_backward, x, routed=True)
    assert routed.torch_conv_pool_calls() == {}
    # Forward: the dgrad op; backward: fprop (input) and wgrad (weight); the bias gradient is the
    # sum of the bias add's backward.
    assert routed.convpool_calls() == {"convpool.conv2d_grad_input": 1, "convpool.conv2d": 1,
                                       "convpool.conv2d_grad_weight": 1}
    torch.testing.assert_close(actual, expected)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)


def test_rejected_calls_get_torchs_errors():
    x = torch.randn(1, 1, 4, 4)
    with convpool.enable():
        with pytest.raises(TypeError):
            F.conv2d(x)  # does not bind: torch reports it
        with pytest.raises(NotImplementedError, match="Bool"):
            F.max_pool2d(x > 0, 2)  # a dtype neither supports: torch's error
        with pytest.raises(RuntimeError):
            F.conv2d(x, torch.randn(1, 2, 3, 3))  # convpool's op validates as torch does


def test_nesting_and_exit_restore_torch():
    x = torch.randn(1, 2, 6, 6)
    w = torch.randn(3, 2, 3, 3)
    mode = convpool.enable()
    with OpCounter() as counter:
        with mode:
            F.conv2d(x, w)
            with convpool.enable():
                F.conv2d(x, w)  # routed once, not once per active mode
                convpool.conv2d(x, w, padding="same")  # convpool's own calls are not re-routed
            F.max_pool2d(x, 2)
        F.conv2d(x, w)
        F.max_pool2d(x, 2)
    # x needs no gradient: the values-only pooling op.
    assert counter.convpool_calls() == {"convpool.conv2d": 3, "convpool.max_pool2d_values": 1}
    assert sum(counter.torch_conv_pool_calls().values()) == 2  # after exit: torch again

    with pytest.raises(ValueError):
        with convpool.enable():
            raise ValueError  # an exception leaves the mode too
    _, after = run_counted(F.conv2d, x, w, routed=False)
    assert after.convpool_calls() == {}


def test_enable_is_public():
    assert "enable" in convpool.__all__
    with convpool.enable() as mode:
        assert isinstance(mode, torch.overrides.TorchFunctionMode)


def test_routing_inside_torch_compile():
    # Dynamo traces the mode: the compiled graph calls convpool's ops; leaving the mode recompiles
    # (Dynamo guards on the active modes) back to torch's.
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))
    x = torch.randn(2, 3, 9, 9)
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    compiled = torch.compile(model, fullgraph=True, backend=capture)
    with convpool.enable():
        actual = compiled(x)
    expected = compiled(x)
    torch.testing.assert_close(actual, expected, **TOLERANCES[torch.float32])
    routed_targets, unrouted_targets = ({str(node.target) for node in graph.graph.nodes
                                         if node.op == "call_function"} for graph in graphs)
    assert {"convpool.conv2d", "convpool.max_pool2d"} <= routed_targets
    assert not any("conv" in t and not t.startswith("convpool.") for t in routed_targets)
    assert not any(t.startswith("convpool.") for t in unrouted_targets)
    torch._dynamo.reset()
