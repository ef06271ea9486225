"""Autograd formulas of the torch.ops.convpool ops (torch.library.register_autograd).

Every backward is expressed with convpool ops that have formulas of their own, so gradients of
any order work (gradgradcheck): conv2d, its grad_input (dgrad) and grad_weight (wgrad) are three
bilinear maps whose derivatives are each other."""
import torch

from ._layout import is_channels_last

ops = torch.ops.convpool


# ---- conv2d: output = conv2d(input, weight) + bias ------------------------------------------

def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.conv_args = (stride, padding, dilation, groups)
    ctx.channels_last = is_channels_last(output)


def _conv2d_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    if ctx.channels_last and not is_channels_last(grad):
        # As PyTorch: the gradients take the layout the forward chose.
        grad = grad.contiguous(memory_format=torch.channels_last)
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = ops.conv2d_grad_input(grad, weight, input.shape, *ctx.conv_args)
    if ctx.needs_input_grad[1]:
        grad_weight = ops.conv2d_grad_weight(grad, input, weight.shape, *ctx.conv_args)
    if ctx.needs_input_grad[2]:
        if input.shape[-3] == 0:
            # No input channels: the output has no channels either (PyTorch's shape), bias unused.
            grad_bias = grad.new_zeros(weight.shape[0])
        else:
            grad_bias = ops.conv2d_grad_bias(grad)
    return grad_input, grad_weight, grad_bias, None, None, None, None


torch.library.register_autograd("convpool::conv2d", _conv2d_backward, setup_context=_conv2d_setup)


# ---- dgrad: grad_input = conv2d_grad_input(grad_output, weight) -----------------------------

def _grad_input_setup(ctx, inputs, output):
    grad_output, weight, input_size, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.conv_args = (stride, padding, dilation, groups)


def _grad_input_backward(ctx, grad):
    grad_output, weight = ctx.saved_tensors
    d_grad_output = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.conv2d(grad, weight, None, *ctx.conv_args)
    if ctx.needs_input_grad[1]:
        d_weight = ops.conv2d_grad_weight(grad_output, grad, weight.shape, *ctx.conv_args)
    return d_grad_output, d_weight, None, None, None, None, None


torch.library.register_autograd("convpool::conv2d_grad_input", _grad_input_backward,
                                setup_context=_grad_input_setup)


# ---- wgrad: grad_weight = conv2d_grad_weight(grad_output, input) ----------------------------

def _grad_weight_setup(ctx, inputs, output):
    grad_output, input, weight_size, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.conv_args = (stride, padding, dilation, groups)


def _grad_weight_backward(ctx, grad):
    grad_output, input = ctx.saved_tensors
    d_grad_output = d_input = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.conv2d(input, grad, None, *ctx.conv_args)
    if ctx.needs_input_grad[1]:
        d_input = ops.conv2d_grad_input(grad_output, grad, input.shape, *ctx.conv_args)
    return d_grad_output, d_input, None, None, None, None, None


torch.library.register_autograd("convpool::conv2d_grad_weight", _grad_weight_backward,
                                setup_context=_grad_weight_setup)


# ---- grad_bias = conv2d_grad_bias(grad_output): a sum over N, H, W ---------------------------

def _grad_bias_setup(ctx, inputs, output):
    ctx.grad_output_shape = inputs[0].shape


def _grad_bias_backward(ctx, grad):
    shape = ctx.grad_output_shape
    return grad.view([1] * (len(shape) - 3) + [-1, 1, 1]).expand(shape)


torch.library.register_autograd("convpool::conv2d_grad_bias", _grad_bias_backward,
                                setup_context=_grad_bias_setup)


# ---- max_pool2d ----------------------------------------------------------------------------

def _max_pool2d_setup(ctx, inputs, output):
    input, *pool_args = inputs
    _, indices = output
    ctx.save_for_backward(input, indices)
    ctx.pool_args = pool_args


def _max_pool2d_backward(ctx, grad_values, _grad_indices):
    input, indices = ctx.saved_tensors
    return (ops.max_pool2d_backward(grad_values, input, indices, *ctx.pool_args),
            None, None, None, None, None)


torch.library.register_autograd("convpool::max_pool2d", _max_pool2d_backward,
                                setup_context=_max_pool2d_setup)


def _gather_by_indices(grad_input_like, indices):
    """out[..., i] = grad_input_like[..., indices[..., i]] per plane; 0 where no input was chosen."""
    planes = grad_input_like.flatten(-2)
    flat = indices.flatten(-2)
    picked = planes.gather(-1, flat.clamp(min=0))
    return picked.masked_fill(flat < 0, 0).view(indices.shape)


def _max_pool2d_backward_setup(ctx, inputs, output):
    grad_output, input, indices, *pool_args = inputs
    ctx.save_for_backward(indices)


def _max_pool2d_backward_backward(ctx, grad):
    (indices,) = ctx.saved_tensors
    d_grad_output = _gather_by_indices(grad, indices) if ctx.needs_input_grad[0] else None
    # The input only fixed which elements were chosen: zero gradient with respect to it.
    d_input = torch.zeros_like(grad) if ctx.needs_input_grad[1] else None
    return d_grad_output, d_input, None, None, None, None, None, None


torch.library.register_autograd("convpool::max_pool2d_backward", _max_pool2d_backward_backward,
                                setup_context=_max_pool2d_backward_setup)
