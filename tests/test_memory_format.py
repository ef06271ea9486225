"""channels_last models stay channels_last through convpool's layers, forward and backward: every
conv / pool output, the gradients flowing through each layer, the parameter gradients and the
input gradient have the strides of torch's."""
import copy

import torch
import torchvision
from torch import nn

import convpool
from helpers import TOLERANCES

LAYER_TYPES = (nn.Conv2d, nn.MaxPool2d)  # convpool's layers subclass these


def record_layer_strides(model):
    """Strides of each conv / pool layer's output (forward) and of the gradients of its input and
    output (backward), keyed by layer name and direction."""
    strides = {}

    def on_forward(name):
        def hook(module, args, output):
            strides[name, "output"] = output.stride()
        return hook

    def on_backward(name):
        def hook(module, grad_input, grad_output):
            strides[name, "grad_output"] = grad_output[0].stride()
            if grad_input[0] is not None:
                strides[name, "grad_input"] = grad_input[0].stride()
        return hook

    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES):
            module.register_forward_hook(on_forward(name))
            module.register_full_backward_hook(on_backward(name))
    return strides


def run_channels_last(model, x):
    model = model.to(memory_format=torch.channels_last)
    strides = record_layer_strides(model)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = model(x)
    # autograd.grad, not backward(): .grad would be restrided to the parameter's layout by
    # AccumulateGrad, hiding the layout the backward ops produced.
    names, params = zip(*model.named_parameters())
    x_grad, *param_grads = torch.autograd.grad(out.square().sum(), [x, *params])
    return strides, out, x_grad, dict(zip(names, param_grads))


def test_resnet18_channels_last_forward_and_backward():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=10).double()
    model = convpool.convert(copy.deepcopy(reference))
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)  # the last maps are 2x2: layouts unambiguous
    strides, out, x_grad, param_grads = run_channels_last(model, x)
    expected_strides, expected_out, expected_x_grad, expected_param_grads = run_channels_last(
        reference, x)

    layer_count = sum(isinstance(m, LAYER_TYPES) for m in model.modules())
    assert len(strides) == len(expected_strides) >= 2 * layer_count
    assert strides == expected_strides
    # The comparisons are not vacuous: the outputs and gradients are channels_last.
    assert x_grad.is_contiguous(memory_format=torch.channels_last)
    for (name, direction), s in strides.items():
        if direction == "output":
            assert s[1] == 1, (name, s)  # channels innermost

    torch.testing.assert_close(out, expected_out, **TOLERANCES[torch.float64])
    assert x_grad.stride() == expected_x_grad.stride()
    torch.testing.assert_close(x_grad, expected_x_grad, **TOLERANCES[torch.float64])
    assert param_grads.keys() == expected_param_grads.keys()
    for name, grad in param_grads.items():
        assert grad.stride() == expected_param_grads[name].stride(), name
        torch.testing.assert_close(grad, expected_param_grads[name], **TOLERANCES[torch.float64])
    conv_weight_grads = [g for n, g in param_grads.items() if g.dim() == 4]
    assert all(g.is_contiguous(memory_format=torch.channels_last) for g in conv_weight_grads)
