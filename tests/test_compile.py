"""torch.compile(fullgraph=True) traces the convpool ops (through their fake kernels) without graph
breaks, with dynamic shapes, and the compiled net matches eager, forward and backward;
torch.export keeps them as torch.ops.convpool calls. conv_transpose2d, a composition of convpool
ops, traces to those ops."""
import copy

import pytest
import torch
import torchvision
from functorch.compile import make_boxed_func
from torch import nn
from torch._dynamo.backends.common import aot_autograd

import convpool
from helpers import TOLERANCES


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = convpool.Conv2d(3, 8, 3, padding=1)
        self.pool = convpool.MaxPool2d(3, 2, 1)
        self.conv2 = convpool.Conv2d(8, 4, 3, stride=2, groups=4)

    def forward(self, x):
        return self.conv2(torch.relu(self.pool(self.conv1(x)))).sum(dim=(2, 3))


def forward_backward(model, x):
    """The output and the gradients of the input and of every parameter."""
    x = x.detach().requires_grad_(True)
    out = model(x)
    g = torch.Generator().manual_seed(0)
    projection = torch.rand(out.shape, generator=g, dtype=out.dtype)
    return out, torch.autograd.grad(out, [x, *model.parameters()], projection)


def assert_same_results(actual, expected, **tolerances):
    (out_a, grads_a), (out_e, grads_e) = actual, expected
    torch.testing.assert_close(out_a, out_e, **tolerances)
    assert len(grads_a) == len(grads_e)
    for a, e in zip(grads_a, grads_e):
        torch.testing.assert_close(a, e, **tolerances)


@pytest.fixture
def fresh_dynamo():
    """A clean compile cache (a new model of an already-compiled class is not a recompile), and any
    recompilation is an error: with dynamic=True one graph must serve every input size."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    assert not torch._dynamo.utils.counters["graph_break"]
    torch._dynamo.reset()


def test_compile_fullgraph_matches_eager(fresh_dynamo):
    torch.manual_seed(0)
    net = SmallNet()
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(net, fullgraph=True)
    assert_same_results(forward_backward(compiled, x), forward_backward(net, x))


def test_compile_dynamic_small_net_matches_eager(fresh_dynamo):
    torch.manual_seed(0)
    net = SmallNet()
    compiled = torch.compile(net, fullgraph=True, dynamic=True)  # inductor
    for shape in [(2, 3, 17, 16), (3, 3, 21, 19)]:  # not square: duck sizing would tie H to W
        x = torch.randn(shape)
        assert_same_results(forward_backward(compiled, x), forward_backward(net, x))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_compile_dynamic_resnet18_matches_eager(fresh_dynamo):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=10).double()
    model = convpool.convert(copy.deepcopy(reference))  # train mode: batch norm uses batch stats
    # aot_eager: the same Dynamo + AOTAutograd graphs (and fake-kernel shape propagation) as
    # inductor, without a minute of C++ code generation for ResNet-18 on a small CPU.
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    # Both sizes end in a 2x2 map after layer4; a 1x1 map would specialize (0/1 specialization),
    # for torch's own layers as for ours.
    for shape in [(2, 3, 40, 36), (3, 3, 48, 44)]:
        x = torch.randn(shape, dtype=torch.float64)
        compiled_results = forward_backward(compiled, x)
        assert_same_results(compiled_results, forward_backward(model, x))
        assert_same_results(compiled_results, forward_backward(reference, x),
                            **TOLERANCES[torch.float64])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_compile_fullgraph_raises_on_graph_break(fresh_dynamo):
    # The fixture's graph-break check and fullgraph=True do detect breaks: a net with one.
    def breaks(x):
        y = convpool.conv2d(x, torch.ones(1, 1, 1, 1))
        torch._dynamo.graph_break()
        return convpool.max_pool2d(y, 2)

    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch.compile(breaks, fullgraph=True)(torch.randn(1, 1, 4, 4))
    torch.compile(breaks, backend="eager")(torch.randn(1, 1, 4, 4))
    assert torch._dynamo.utils.counters["graph_break"]
    torch._dynamo.utils.counters["graph_break"].clear()


def _convpool_targets(graph_module):
    return [node.target for node in graph_module.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("convpool.")]


def test_export_resnet18_calls_convpool_ops(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=10).eval()
    model = convpool.convert(copy.deepcopy(reference))
    x = torch.randn(2, 3, 64, 64)
    batch = torch.export.Dim("batch", min=1, max=16)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    expected_targets = ([torch.ops.convpool.conv2d.default] * 20
                        + [torch.ops.convpool.max_pool2d.default])
    for graph_module in (program.graph_module, program.run_decompositions().graph_module):
        targets = _convpool_targets(graph_module)
        assert sorted(targets, key=str) == sorted(expected_targets, key=str)
        assert not [node for node in graph_module.graph.nodes
                    if "convolution" in str(node.target) or "max_pool2d" in str(node.target)
                    and not str(node.target).startswith("convpool.")]
    torch.export.save(program, tmp_path / "resnet18.pt2")
    exported = torch.export.load(tmp_path / "resnet18.pt2").module()
    for n in (2, 5):
        x = torch.randn(n, 3, 64, 64)
        expected = model(x)
        torch.testing.assert_close(exported(x), expected)
        torch.testing.assert_close(expected, reference(x), **TOLERANCES[torch.float32])


class Decoder(nn.Module):
    """Transposed convolutions: a DCGAN-style 4x4 s2 p1 up-sampling, then a grouped one whose
    output_padding reaches the stride (below the dilation), which zero-pads its input."""

    def __init__(self):
        super().__init__()
        self.up1 = convpool.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.up2 = convpool.ConvTranspose2d(4, 2, 3, stride=(2, 1), padding=1,
                                            output_padding=(1, 1), dilation=(1, 2), groups=2,
                                            bias=False)

    def forward(self, x):
        return self.up2(torch.relu(self.up1(x)))


def test_compile_dynamic_decoder_matches_eager(fresh_dynamo):
    torch.manual_seed(0)
    net = Decoder()
    compiled = torch.compile(net, fullgraph=True, dynamic=True)  # inductor
    for shape in [(2, 8, 5, 4), (3, 8, 7, 6)]:
        x = torch.randn(shape)
        assert_same_results(forward_backward(compiled, x), forward_backward(net, x))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_compile_decoder_traces_to_convpool_ops(fresh_dynamo):
    """Forward and backward graphs (AOTAutograd) call convpool's dgrad, fprop and wgrad ops and
    no torch convolution: F.conv_transpose2d's work is all convpool's."""
    torch.manual_seed(0)
    net = Decoder()
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return make_boxed_func(graph_module.forward)

    compiled = torch.compile(net, fullgraph=True, backend=aot_autograd(fw_compiler=capture,
                                                                       bw_compiler=capture))
    x = torch.randn(2, 8, 5, 4)
    assert_same_results(forward_backward(compiled, x), forward_backward(net, x))
    forward_graph, backward_graph = graphs
    assert _convpool_targets(forward_graph) == [torch.ops.convpool.conv2d_grad_input.default] * 2
    assert sorted(map(str, _convpool_targets(backward_graph))) == sorted(
        ["convpool.conv2d.default"] * 2 + ["convpool.conv2d_grad_weight.default"] * 2)
    for graph in graphs:
        assert not [node for node in graph.graph.nodes if "conv" in str(node.target)
                    and not str(node.target).startswith("convpool.")]


def test_export_decoder_calls_convpool_ops(tmp_path):
    torch.manual_seed(0)
    reference = nn.Sequential(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.ReLU(),
                              nn.ConvTranspose2d(4, 2, 2, stride=2)).eval()
    model = convpool.convert(copy.deepcopy(reference))
    x = torch.randn(2, 8, 6, 5)
    batch = torch.export.Dim("batch", min=1, max=16)
    program = torch.export.export(model, (x,), dynamic_shapes={"input": {0: batch}})
    for graph_module in (program.graph_module, program.run_decompositions().graph_module):
        assert _convpool_targets(graph_module) == [torch.ops.convpool.conv2d_grad_input.default] * 2
        assert not [node for node in graph_module.graph.nodes if "conv" in str(node.target)
                    and not str(node.target).startswith("convpool.")]
    torch.export.save(program, tmp_path / "decoder.pt2")
    exported = torch.export.load(tmp_path / "decoder.pt2").module()
    for n in (2, 5):
        x = torch.randn(n, 8, 6, 5)
        expected = model(x)
        torch.testing.assert_close(exported(x), expected)
        torch.testing.assert_close(expected, reference(x), **TOLERANCES[torch.float32])
