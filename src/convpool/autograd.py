"""Autograd of the torch.ops.convpool ops: reverse mode, forward mode and torch.func.

Each op gets a Python kernel at the Autograd dispatch key (the place of a native op's VariableType
kernel) that applies a single-level autograd.Function with setup_context, backward and jvp. Not
torch.library.register_autograd: the autograd.Function it generates has no setup_context and no
jvp, so torch.func transforms raise and forward-mode AD silently drops the tangent (open upstream:
pytorch/pytorch#168393, #170834, #179652). The dispatcher runs this kernel once per grad / jvp
level of torch.func (each level unwraps its tensors and re-dispatches), so a single-level Function
per level composes as torch's own ops do: grad of grad, jacrev of jacrev, vmap of grad, forward
over reverse. docs/autodiff.md has the whole design.

Every formula is written with convpool ops that have formulas of their own, so derivatives of any
order work: conv2d, its grad_input (dgrad) and grad_weight (wgrad) are three bilinear maps whose
derivatives are each other; max_pool2d and its backward are a gather and a scatter by the argmax
indices, linear in the values. Batching rules (torch.func.vmap) are in _vmap.py."""
import torch
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd import forward_ad
from torch.autograd.function import _SingleLevelFunction

from . import _C
from ._layout import is_channels_last

ops = torch.ops.convpool

_CONV2D = ops.conv2d
_GRAD_INPUT = ops.conv2d_grad_input
_GRAD_WEIGHT = ops.conv2d_grad_weight
_GRAD_BIAS = ops.conv2d_grad_bias
_POOL_BACKWARD = ops.max_pool2d_backward

_lib = torch.library.Library("convpool", "IMPL")  # kept alive: the registrations live with it
_AFTER_AUTOGRAD = torch._C._after_autograd_keyset


def _needs_autograd(args) -> bool:
    """Whether the call must record a node or carry tangents. Tangents exist only inside a dual
    level (torch.func.jvp enters one too); there every call takes the Function, whose apply skips
    the jvp when no input has a tangent."""
    return ((torch.is_grad_enabled() and torch._C._any_requires_grad(*args))
            or forward_ad._current_level >= 0)


def _below_autograd(op, keyset, args):
    with torch._C._AutoDispatchBelowAutograd():
        return op.redispatch(keyset & _AFTER_AUTOGRAD, *args)


def call(op, *args):
    """op(*args), for an op (OpOverloadPacket) of ours, at the least per-call cost that keeps
    every mode. Under torch.func and torch.compile the call goes through the dispatcher as it is
    (torch.compile traces it: the graph holds the op; AOTAutograd runs its Autograd kernel).
    Otherwise, without the dispatcher's boxed call into the Python Autograd kernel (several
    microseconds): a call that needs no derivative runs the op below autograd through
    convpool._C's direct entry point (no torch.ops argument parsing: csrc/direct_calls.cpp); a
    plain reverse-mode call of conv2d / max_pool2d records a C++ autograd node there; any other
    call that may need a derivative (a dual level, tensor subclasses, ...) applies the op's
    Function here."""
    if torch._C._are_functorch_transforms_active() or torch.compiler.is_compiling():
        return op(*args)
    entry = _ENTRIES[id(op)]  # by id: OpOverloadPacket.__hash__ is a Python method
    # Over the leading tensor arguments only: _any_requires_grad is 1 us slower over int lists.
    reverse = torch.is_grad_enabled() and torch._C._any_requires_grad(*args[:entry.tensors])
    dual = forward_ad._current_level >= 0  # torch.func.jvp enters a dual level too
    if not (reverse or dual):  # _below_autograd_direct, inlined: this is the hottest path
        out = entry.direct(*args)
        if out is NotImplemented:
            with _BELOW_AUTOGRAD():
                return entry.kernel(*args)
        return out
    if torch._C._is_any_autocast_enabled():
        # The autocast kernel sits above autograd: its casts must be recorded and the
        # Function must save the cast tensors, so the dispatcher goes first.
        return op(*args)
    if not dual and entry.recording is not None:
        out = entry.recording(*args)
        if out is not NotImplemented:
            return out
    return entry.apply(*args)


def _below_autograd_direct(op, args):
    """op(*args) below autograd; through the direct entry point when the call is a plain one
    (exact tensors, lists of ints: it returns NotImplemented otherwise), else through torch.ops
    (__torch_function__ overrides, its argument conversions and messages)."""
    entry = _ENTRIES[id(op)]
    out = entry.direct(*args)
    if out is NotImplemented:
        with _BELOW_AUTOGRAD():
            return entry.kernel(*args)
    return out


class _Entry:
    """How `call` reaches one op. tensors: how many leading arguments are tensors (or None);
    direct: its entry point in convpool._C (same positional arguments; csrc/direct_calls.cpp);
    kernel: the C++ callable behind op.default (OpOverload.__call__ is one more Python frame);
    recording: its entry point recording a C++ autograd node, or None; apply: its Function's
    apply without a keyset (set by _register)."""
    __slots__ = ("tensors", "direct", "kernel", "recording", "apply")

    def __init__(self, name, tensors, recording=None):
        self.tensors = tensors
        self.direct = getattr(_C, "_" + name)
        self.kernel = getattr(ops, name).default._op
        self.recording = recording
        self.apply = None


_ENTRIES = {id(getattr(ops, name)): _Entry(name, *spec) for name, spec in {
    "conv2d": (3, _C._conv2d_autograd),
    "conv2d_grad_input": (2,),
    "conv2d_grad_weight": (2,),
    "conv2d_grad_bias": (1,),
    "max_pool2d": (1, _C._max_pool2d_autograd),
    "max_pool2d_values": (1,),
    "max_pool2d_backward": (3,),
}.items()}
_BELOW_AUTOGRAD = torch._C._AutoDispatchBelowAutograd
_CONV2D_BACKWARD = _C._conv2d_backward


def _register(name):
    """Class decorator: `function` (a _SingleLevelFunction whose forward takes the op's dispatch
    keyset first, None when applied by `call`) becomes the Autograd kernel of convpool::name;
    calls that need no derivative go straight to the kernel below autograd."""
    packet = getattr(ops, name)
    op = packet.default

    def register(function):
        def kernel(keyset, *args):
            if _needs_autograd(args):
                with enable_single_level_autograd_function():
                    return function.apply(keyset, *args)
            return _below_autograd(op, keyset, args)

        def forward(keyset, *args):
            if keyset is None:  # from `call`: no torch.func level below to re-dispatch to
                return _below_autograd_direct(packet, args)
            # apply() turns reverse and forward gradients off around forward; under torch.func
            # the transform levels below this one need them back (as functorch's own
            # single-level Functions do), or their nodes and tangents would be dropped.
            with torch.enable_grad(), forward_ad._set_fwd_grad_enabled(True):
                return _below_autograd(op, keyset, args)

        function.forward = staticmethod(forward)
        _ENTRIES[id(packet)].apply = lambda *args: function.apply(None, *args)
        _lib.impl(name, kernel, "Autograd", with_keyset=True)
        return function

    return register


def _add(a, b):
    return b if a is None else a if b is None else a + b


# ---- conv2d: output = conv2d(input, weight) + bias ------------------------------------------

@_register("conv2d")
class Conv2d(_SingleLevelFunction):
    @staticmethod
    def setup_context(ctx, inputs, output):
        _, input, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
        ctx.conv_args = (stride, padding, dilation, groups)
        # The kernel allocated output contiguous or channels_last: two stride checks tell which
        # (cheaper than _layout.is_channels_last's general rule, same answer here).
        ctx.channels_last = (output.dim() == 4 and not output.is_contiguous()
                             and output.is_contiguous(memory_format=torch.channels_last))
        ctx.output_shape = output.shape

    @staticmethod
    def backward(ctx, grad):
        input, weight = ctx.saved_tensors
        if ctx.channels_last and not is_channels_last(grad):
            # As PyTorch: the gradients take the layout the forward chose.
            grad = grad.contiguous(memory_format=torch.channels_last)
        needs = ctx.needs_input_grad
        if not (torch.is_grad_enabled() or forward_ad._current_level >= 0
                or torch._C._are_functorch_transforms_active()):
            # A first-order backward (no graph to record, no tangents): the three backward ops
            # in one direct call, each only where needed (torch's convolution_backward's
            # output mask). NotImplemented for an unusual call (a tensor subclass, ...).
            grads = _CONV2D_BACKWARD(grad, input, weight, *ctx.conv_args, needs[1], needs[2],
                                     needs[3])
            if grads is not NotImplemented:
                return (None, *grads, None, None, None, None)
        grad_input = grad_weight = grad_bias = None
        if needs[1]:
            grad_input = call(_GRAD_INPUT, grad, weight, input.shape, *ctx.conv_args)
        if needs[2]:
            grad_weight = call(_GRAD_WEIGHT, grad, input, weight.shape, *ctx.conv_args)
        if needs[3]:
            if input.shape[-3] == 0:
                # No input channels: the output has no channels either (PyTorch's shape).
                grad_bias = grad.new_zeros(weight.shape[0])
            else:
                grad_bias = call(_GRAD_BIAS, grad)
        return None, grad_input, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def jvp(ctx, _keyset, t_input, t_weight, t_bias, *_):
        # Bilinear in (input, weight), affine in bias: d out = conv(dx, w) + conv(x, dw) + db.
        input, weight = ctx.saved_tensors
        out = None
        if t_input is not None:
            out = call(_CONV2D, t_input, weight, t_bias, *ctx.conv_args)
            t_bias = None
        if t_weight is not None:
            out = _add(out, call(_CONV2D, input, t_weight, t_bias, *ctx.conv_args))
            t_bias = None
        if t_bias is not None:  # only the bias has a tangent: it is broadcast over N, H, W
            shape = ctx.output_shape
            out = t_bias.new_zeros(shape) if shape[-3] == 0 else (
                t_bias.view(-1, 1, 1).expand(shape).clone())
        return out


# ---- dgrad: grad_input = conv2d_grad_input(grad_output, weight) -----------------------------

@_register("conv2d_grad_input")
class Conv2dGradInput(_SingleLevelFunction):
    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grad_output, weight, input_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.save_for_forward(grad_output, weight)
        ctx.input_size = input_size
        ctx.conv_args = (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        grad_output, weight = ctx.saved_tensors
        d_grad_output = d_weight = None
        if ctx.needs_input_grad[1]:
            d_grad_output = call(_CONV2D, grad, weight, None, *ctx.conv_args)
        if ctx.needs_input_grad[2]:
            d_weight = call(_GRAD_WEIGHT, grad_output, grad, weight.shape, *ctx.conv_args)
        return None, d_grad_output, d_weight, None, None, None, None, None

    @staticmethod
    def jvp(ctx, _keyset, t_grad_output, t_weight, *_):
        grad_output, weight = ctx.saved_tensors
        out = None
        if t_grad_output is not None:
            out = call(_GRAD_INPUT, t_grad_output, weight, ctx.input_size, *ctx.conv_args)
        if t_weight is not None:
            out = _add(out, call(_GRAD_INPUT, grad_output, t_weight, ctx.input_size,
                                 *ctx.conv_args))
        return out


# ---- wgrad: grad_weight = conv2d_grad_weight(grad_output, input) ----------------------------

@_register("conv2d_grad_weight")
class Conv2dGradWeight(_SingleLevelFunction):
    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grad_output, input, weight_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, input)
        ctx.save_for_forward(grad_output, input)
        ctx.weight_size = weight_size
        ctx.conv_args = (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        grad_output, input = ctx.saved_tensors
        d_grad_output = d_input = None
        if ctx.needs_input_grad[1]:
            d_grad_output = call(_CONV2D, input, grad, None, *ctx.conv_args)
        if ctx.needs_input_grad[2]:
            d_input = call(_GRAD_INPUT, grad_output, grad, input.shape, *ctx.conv_args)
        return None, d_grad_output, d_input, None, None, None, None, None

    @staticmethod
    def jvp(ctx, _keyset, t_grad_output, t_input, *_):
        grad_output, input = ctx.saved_tensors
        out = None
        if t_grad_output is not None:
            out = call(_GRAD_WEIGHT, t_grad_output, input, ctx.weight_size, *ctx.conv_args)
        if t_input is not None:
            out = _add(out, call(_GRAD_WEIGHT, grad_output, t_input, ctx.weight_size,
                                 *ctx.conv_args))
        return out


# ---- grad_bias = conv2d_grad_bias(grad_output): a sum over N, H, W ---------------------------

@_register("conv2d_grad_bias")
class Conv2dGradBias(_SingleLevelFunction):
    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.grad_output_shape = inputs[1].shape

    @staticmethod
    def backward(ctx, grad):
        shape = ctx.grad_output_shape
        return None, grad.view([1] * (len(shape) - 3) + [-1, 1, 1]).expand(shape)

    @staticmethod
    def jvp(ctx, _keyset, t_grad_output):
        return call(_GRAD_BIAS, t_grad_output)


# ---- max_pool2d ----------------------------------------------------------------------------

def _gather_by_indices(input_like, indices):
    """out[..., i] = input_like[..., indices[..., i]] per plane; 0 where no input was chosen."""
    # reshape, not flatten: gradcheck's batched checks run torch's legacy vmap, which has no
    # rule for flatten.
    planes = input_like.reshape(*input_like.shape[:-2], -1)
    flat = indices.reshape(*indices.shape[:-2], -1)
    picked = planes.gather(-1, flat.clamp(min=0))
    return picked.masked_fill(flat < 0, 0).reshape(indices.shape)


@_register("max_pool2d")
class MaxPool2d(_SingleLevelFunction):
    @staticmethod
    def setup_context(ctx, inputs, output):
        _, input, *pool_args = inputs
        _, indices = output
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(input, indices)
        ctx.save_for_forward(indices)
        ctx.pool_args = pool_args

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        input, indices = ctx.saved_tensors
        return (None, call(_POOL_BACKWARD, grad_values, input, indices, *ctx.pool_args),
                None, None, None, None, None)

    @staticmethod
    def jvp(ctx, _keyset, t_input, *_):
        # The values are the input gathered at the argmax: so is their tangent.
        (indices,) = ctx.saved_tensors
        return _gather_by_indices(t_input, indices), None


@_register("max_pool2d_backward")
class MaxPool2dBackward(_SingleLevelFunction):
    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grad_output, input, indices, *pool_args = inputs
        ctx.save_for_backward(indices)
        ctx.save_for_forward(input, indices)
        ctx.pool_args = pool_args

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        d_grad_output = _gather_by_indices(grad, indices) if ctx.needs_input_grad[1] else None
        # The input only fixed which elements were chosen: zero gradient with respect to it.
        d_input = torch.zeros_like(grad) if ctx.needs_input_grad[2] else None
        return None, d_grad_output, d_input, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, _keyset, t_grad_output, _t_input, *_):
        # Linear in grad_output; the input (through the fixed indices) contributes nothing.
        input, indices = ctx.saved_tensors
        if t_grad_output is None:
            return torch.zeros_like(input)
        return call(_POOL_BACKWARD, t_grad_output, input, indices, *ctx.pool_args)


def _max_pool2d_values_autograd(keyset, *args):
    """max_pool2d_values computes no indices, which every derivative needs: a call that may need
    one runs max_pool2d (its formulas) instead and keeps the values."""
    if _needs_autograd(args):
        return ops.max_pool2d.default(*args)[0]
    return _below_autograd(ops.max_pool2d_values.default, keyset, args)


_lib.impl("max_pool2d_values", _max_pool2d_values_autograd, "Autograd", with_keyset=True)
_ENTRIES[id(ops.max_pool2d_values)].apply = lambda *args: MaxPool2d.apply(None, *args)[0]
