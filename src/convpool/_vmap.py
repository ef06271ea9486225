"""Batching rules (torch.func.vmap) of the torch.ops.convpool ops: a vmapped dimension is folded
into one the op already has, so a vmapped call is one op call, not a loop.

- Only activations vmapped (input, grad_output, indices): the vmapped dimension folds into the
  batch dimension N (an unbatched sample, (C, H, W), becomes the batch itself).
- A vmapped weight or bias (conv2d, conv2d_grad_input), or any vmapped conv2d_grad_weight /
  conv2d_grad_bias operand (per-sample gradients: torch.func.vmap(torch.func.grad(...))): the
  vmapped dimension B folds into the channels and the groups, as PyTorch's own conv batching rule
  does: activations (B, N, C, H, W) -> (N, B*C, H, W), weight (B, O, C/g, kH, kW) ->
  (B*O, C/g, kH, kW), groups g -> B*g; group b*g + j of the folded problem is group j of sample b.

Each rule returns (output, out_dims) with the vmapped dimension first."""
import torch

ops = torch.ops.convpool


def _front(t, dim, batch_size):
    """t with its vmapped dimension first (broadcast to batch_size when t is not vmapped)."""
    if dim is None:
        return t.unsqueeze(0).expand(batch_size, *t.shape)
    return t.movedim(dim, 0)


def _fold_batch(t, dim):
    """(B, N, ...) -> (B*N, ...); (B, C, H, W), a vmapped unbatched sample, stays as it is."""
    t = t.movedim(dim, 0)
    return t if t.dim() == 4 else t.flatten(0, 1)


def _unfold_batch(t, batch_size, logical_dim):
    return t if logical_dim == 3 else t.unflatten(0, (batch_size, -1))


def _to_channels(t, logical_dim):
    """(B, N, C, H, W) -> (N, B*C, H, W); (B, C, H, W) (unbatched samples) -> (1, B*C, H, W)."""
    if logical_dim == 3:
        t = t.unsqueeze(1)
    return t.transpose(0, 1).flatten(1, 2)


def _from_channels(t, batch_size, logical_dim):
    """Inverse of _to_channels: (N, B*C, H, W) -> (B, N, C, H, W) or (B, C, H, W)."""
    t = t.unflatten(1, (batch_size, -1)).transpose(0, 1)
    return t.squeeze(1) if logical_dim == 3 else t


def _conv2d_vmap(info, in_dims, input, weight, bias, stride, padding, dilation, groups):
    x_dim, w_dim, b_dim = in_dims[:3]
    size = info.batch_size
    logical = input.dim() - (x_dim is not None)
    if w_dim is None and b_dim is None:
        out = ops.conv2d(_fold_batch(input, x_dim), weight, bias, stride, padding, dilation, groups)
        return _unfold_batch(out, size, logical), 0
    x = _to_channels(_front(input, x_dim, size), logical)
    w = _front(weight, w_dim, size).flatten(0, 1)
    b = None if bias is None else _front(bias, b_dim, size).flatten(0, 1)
    out = ops.conv2d(x, w, b, stride, padding, dilation, groups * size)
    return _from_channels(out, size, logical), 0


def _conv2d_grad_input_vmap(info, in_dims, grad_output, weight, input_size, stride, padding,
                            dilation, groups):
    go_dim, w_dim = in_dims[:2]
    size = info.batch_size
    logical = len(input_size)
    if w_dim is None:
        go = _fold_batch(grad_output, go_dim)
        sizes = [size * input_size[0], *input_size[1:]] if logical == 4 else [size, *input_size]
        out = ops.conv2d_grad_input(go, weight, sizes, stride, padding, dilation, groups)
        return _unfold_batch(out, size, logical), 0
    go = _to_channels(_front(grad_output, go_dim, size), logical)
    w = _front(weight, w_dim, size).flatten(0, 1)
    n = input_size[0] if logical == 4 else 1
    sizes = [n, size * input_size[-3], *input_size[-2:]]
    out = ops.conv2d_grad_input(go, w, sizes, stride, padding, dilation, groups * size)
    return _from_channels(out, size, logical), 0


def _conv2d_grad_weight_vmap(info, in_dims, grad_output, input, weight_size, stride, padding,
                             dilation, groups):
    # The weight gradient sums over N: a vmapped dimension cannot join N, only the channels.
    go_dim, x_dim = in_dims[:2]
    size = info.batch_size
    logical = input.dim() - (x_dim is not None)
    go = _to_channels(_front(grad_output, go_dim, size), logical)
    x = _to_channels(_front(input, x_dim, size), logical)
    sizes = [size * weight_size[0], *weight_size[1:]]
    out = ops.conv2d_grad_weight(go, x, sizes, stride, padding, dilation, groups * size)
    return out.unflatten(0, (size, -1)), 0


def _conv2d_grad_bias_vmap(info, in_dims, grad_output):
    (go_dim,) = in_dims
    size = info.batch_size
    logical = grad_output.dim() - 1
    out = ops.conv2d_grad_bias(_to_channels(grad_output.movedim(go_dim, 0), logical))
    return out.unflatten(0, (size, -1)), 0


def _max_pool2d_vmap(info, in_dims, input, *pool_args):
    (x_dim, *_) = in_dims
    logical = input.dim() - 1
    values, indices = ops.max_pool2d(_fold_batch(input, x_dim), *pool_args)
    size = info.batch_size
    return (_unfold_batch(values, size, logical), _unfold_batch(indices, size, logical)), (0, 0)


def _max_pool2d_values_vmap(info, in_dims, input, *pool_args):
    (x_dim, *_) = in_dims
    values = ops.max_pool2d_values(_fold_batch(input, x_dim), *pool_args)
    return _unfold_batch(values, info.batch_size, input.dim() - 1), 0


def _max_pool2d_backward_vmap(info, in_dims, grad_output, input, indices, *pool_args):
    size = info.batch_size
    logical = input.dim() - (in_dims[1] is not None)
    # The indices address planes of the input, which every operand's fold keeps together.
    go, x, idx = (_front(t, d, size) for t, d in zip((grad_output, input, indices), in_dims))
    go, x, idx = (t if logical == 3 else t.flatten(0, 1) for t in (go, x, idx))
    out = ops.max_pool2d_backward(go, x, idx, *pool_args)
    return _unfold_batch(out, size, logical), 0


for _name, _rule in [("conv2d", _conv2d_vmap), ("conv2d_grad_input", _conv2d_grad_input_vmap),
                     ("conv2d_grad_weight", _conv2d_grad_weight_vmap),
                     ("conv2d_grad_bias", _conv2d_grad_bias_vmap),
                     ("max_pool2d", _max_pool2d_vmap),
                     ("max_pool2d_values", _max_pool2d_values_vmap),
                     ("max_pool2d_backward", _max_pool2d_backward_vmap)]:
    torch.library.register_vmap(f"convpool::{_name}", _rule)
