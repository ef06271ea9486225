"""Bad arguments raise a clean Python exception that names the problem, before any kernel runs.
Each row also asserts that PyTorch rejects the same call (so we are not stricter than torch),
except where marked: there torch crashes, misreports or accepts a dtype we do not support."""
import pytest
import torch
import torch.nn.functional as F

import convpool

x4 = torch.randn(2, 3, 8, 8)
w = torch.randn(4, 3, 3, 3)

# (id, call(fn) -> result, exception type, regex, torch also raises)
CONV_ERRORS = [
    ("2d-input", lambda f: f(torch.randn(8, 8), w), RuntimeError, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[8, 8\]", True),
    ("5d-input", lambda f: f(torch.randn(1, 2, 3, 8, 8), w), RuntimeError, r"input of size: \[1, 2, 3, 8, 8\]", True),
    ("3d-weight", lambda f: f(x4, torch.randn(4, 3, 3)), RuntimeError, r"3-dimensional weight", True),
    ("groups-0", lambda f: f(x4, w, groups=0), RuntimeError, "non-positive groups is not supported", True),
    ("groups-negative", lambda f: f(x4, w, groups=-2), RuntimeError, "non-positive groups is not supported", True),
    ("groups-not-dividing-out", lambda f: f(torch.randn(2, 4, 8, 8), torch.randn(3, 2, 3, 3), groups=2), RuntimeError, r"expected weight to be divisible by 2 at dimension 0", True),
    ("weight-smaller-than-groups", lambda f: f(torch.randn(2, 4, 8, 8), torch.randn(2, 1, 3, 3), groups=4), RuntimeError, "expected weight to be at least 4 at dimension 0", True),
    ("out-channels-0", lambda f: f(x4, torch.randn(0, 3, 3, 3)), RuntimeError, "expected weight to be at least 1 at dimension 0", True),
    ("channel-mismatch", lambda f: f(torch.randn(2, 5, 8, 8), w), RuntimeError, r"expected input\[2, 5, 8, 8\] to have 3 channels, but got 5 channels instead", True),
    ("stride-0", lambda f: f(x4, w, stride=0), RuntimeError, "non-positive stride is not supported", True),
    ("stride-negative", lambda f: f(x4, w, stride=(1, -1)), RuntimeError, "non-positive stride is not supported", True),
    ("padding-negative", lambda f: f(x4, w, padding=-1), RuntimeError, "negative padding is not supported", True),
    ("dilation-0", lambda f: f(x4, w, dilation=0), RuntimeError, "non-positive dilation is not supported", True),
    ("dilation-negative", lambda f: f(x4, w, dilation=-1), RuntimeError, "dilation should be greater than zero", True),
    ("kernel-too-big", lambda f: f(torch.randn(1, 3, 2, 2), w), RuntimeError, r"Calculated padded input size per channel: \(2 x 2\). Kernel size: \(3 x 3\)", True),
    ("empty-height", lambda f: f(torch.randn(2, 3, 0, 8), w, padding=1), RuntimeError, "Kernel size can't be greater than actual input size", True),
    ("bias-length", lambda f: f(x4, w, torch.randn(5)), RuntimeError, r"expected bias to be 1-dimensional with 4 elements, but got bias of size \[5\]", True),
    ("bias-2d", lambda f: f(x4, w, torch.randn(4, 1)), RuntimeError, r"but got bias of size \[4, 1\]", True),
    ("bias-dtype", lambda f: f(x4, w, torch.randn(4, dtype=torch.float64)), RuntimeError, r"Input type \(Float\) and bias type \(Double\) should be the same", True),
    ("weight-dtype", lambda f: f(x4, w.double()), RuntimeError, "should be the same", True),
    ("same-with-stride", lambda f: f(x4, w, stride=2, padding="same"), RuntimeError, "padding='same' is not supported for strided convolutions", True),
    ("bad-padding-string", lambda f: f(x4, w, padding="full"), RuntimeError, "Invalid padding string: 'full'", True),
    ("stride-3-tuple", lambda f: f(x4, w, stride=(1, 1, 1)), RuntimeError, r"expected stride to be a single integer value or a list of 2 values", True),
    ("padding-3-tuple", lambda f: f(x4, w, padding=(1, 1, 1)), RuntimeError, "expected padding to be a single integer value or a list of 2 values", True),
    ("dilation-empty", lambda f: f(x4, w, dilation=()), RuntimeError, "expected dilation to be a single integer value or a list of 2 values", True),
    ("stride-float", lambda f: f(x4, w, stride=1.5), (TypeError, RuntimeError), r"argument 'stride'", True),
    ("bool-input", lambda f: f(x4.bool(), w.bool()), NotImplementedError, "not implemented for 'Bool'", True),
    # torch reports a oneDNN internal error here; we name the problem.
    ("kernel-size-0", lambda f: f(x4, torch.randn(4, 3, 0, 3)), RuntimeError, "kernel size should be greater than zero", True),
    ("padding-huge", lambda f: f(x4, w, padding=2**62), RuntimeError, "overflows int64", True),
    ("integer-weight", lambda f: f(x4, w.long()), RuntimeError, r"Input type \(Float\) and weight type \(Long\) should be the same", True),
    ("integer-bias", lambda f: f(x4, w, torch.ones(4, dtype=torch.int32)), RuntimeError, "bias type \\(Int\\) should be the same", True),
    ("groups-huge", lambda f: f(x4, w, groups=2**40), RuntimeError, "expected weight to be at least 1099511627776 at dimension 0", True),
    ("dilation-huge", lambda f: f(x4, w, dilation=2**62), RuntimeError, "overflows int64|Kernel size can't be greater", True),
    # Mixed devices (the meta device is the second device every machine has). torch returns an
    # uninitialized CPU tensor for a CPU input with a meta weight or bias, so it is not asked.
    ("weight-on-other-device", lambda f: f(x4, w.to("meta")), RuntimeError, "input and weight should be on the same device, but got input on cpu and weight on meta", False),
    ("bias-on-other-device", lambda f: f(x4, w, torch.randn(4, device="meta")), RuntimeError, "input and bias should be on the same device, but got input on cpu and bias on meta", False),
    ("input-on-other-device", lambda f: f(x4.to("meta"), w), RuntimeError, "input and weight should be on the same device, but got input on meta and weight on cpu", False),
    # torch computes integer and complex convolutions; convpool's kernels are floating point.
    ("integer-input", lambda f: f(x4.long(), w.long()), NotImplementedError, "not implemented for 'Long'", False),
    ("complex-input", lambda f: f(x4.cfloat(), w.cfloat()), NotImplementedError, "not implemented for 'ComplexFloat'", False),
]

t4 = torch.randn(2, 4, 5, 5)
tw = torch.randn(4, 3, 3, 3)  # (C_in, C_out / groups, kH, kW)
TRANSPOSE_ERRORS = [
    ("2d-input", lambda f: f(torch.randn(5, 5), tw), RuntimeError, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv_transpose2d, but got input of size: \[5, 5\]", True),
    ("5d-input", lambda f: f(torch.randn(1, 2, 4, 5, 5), tw), RuntimeError, r"input to conv_transpose2d, but got input of size: \[1, 2, 4, 5, 5\]", True),
    # torch reports a stride of the wrong length here (it infers the dimensions from the weight).
    ("3d-weight", lambda f: f(t4, torch.randn(4, 3, 3)), RuntimeError, r"expected a 4-dimensional weight|expected stride", True),
    ("groups-0", lambda f: f(t4, tw, groups=0), RuntimeError, "non-positive groups is not supported", True),
    ("groups-negative", lambda f: f(t4, tw, groups=-1), RuntimeError, "non-positive groups is not supported", True),
    ("stride-3-tuple", lambda f: f(t4, tw, stride=(1, 1, 1)), RuntimeError, r"expected stride to be a single integer value or a list of 2 values to match the convolution dimensions, but got stride=\[1, 1, 1\]", True),
    ("padding-3-tuple", lambda f: f(t4, tw, padding=(1, 1, 1)), RuntimeError, r"expected padding to be a single integer value or a list of 2 values", True),
    ("output-padding-3-tuple", lambda f: f(t4, tw, output_padding=(1, 1, 1)), RuntimeError, r"expected output_padding to be a single integer value or a list of 2 values to match the convolution dimensions, but got output_padding=\[1, 1, 1\]", True),
    ("dilation-empty", lambda f: f(t4, tw, dilation=()), RuntimeError, r"expected dilation to be a single integer value or a list of 2 values to match the convolution dimensions, but got dilation=\[\]", True),
    ("stride-float", lambda f: f(t4, tw, stride=1.5), TypeError, "argument 'stride' must be tuple of ints, not float", True),
    ("padding-string", lambda f: f(t4, tw, padding="same"), TypeError, "argument 'padding' must be tuple of ints, not str", True),
    ("padding-negative", lambda f: f(t4, tw, padding=-1), RuntimeError, "negative padding is not supported", True),
    ("output-padding-negative", lambda f: f(t4, tw, stride=3, output_padding=(1, -1)), RuntimeError, "negative output_padding is not supported", True),
    ("stride-0", lambda f: f(t4, tw, stride=0), RuntimeError, "non-positive stride is not supported", True),
    ("stride-negative", lambda f: f(t4, tw, stride=(2, -1)), RuntimeError, "non-positive stride is not supported", True),
    ("dilation-negative", lambda f: f(t4, tw, dilation=-1), RuntimeError, "dilation should be greater than zero", True),
    # torch's oneDNN path reports an internal error here.
    ("dilation-0", lambda f: f(t4, tw, dilation=0), RuntimeError, "dilation should be greater than zero", True),
    ("weight-smaller-than-groups", lambda f: f(torch.randn(2, 2, 5, 5), torch.randn(2, 3, 3, 3), groups=4), RuntimeError, r"Given groups=4, expected weight to be at least 4 at dimension 0, but got weight of size \[2, 3, 3, 3\] instead", True),
    ("groups-not-dividing-in", lambda f: f(torch.randn(2, 3, 5, 5), torch.randn(3, 2, 3, 3), groups=2), RuntimeError, r"Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight of size \[\[3, 2, 3, 3\]\] instead", True),
    ("in-channels-0", lambda f: f(torch.randn(2, 0, 5, 5), torch.randn(0, 3, 3, 3)), RuntimeError, "expected weight to be at least 1 at dimension 0", True),
    ("channel-mismatch", lambda f: f(torch.randn(2, 3, 5, 5), tw), RuntimeError, r"Given transposed=1, weight of size \[4, 3, 3, 3\], expected input\[2, 3, 5, 5\] to have 4 channels, but got 3 channels instead", True),
    ("channel-mismatch-unbatched", lambda f: f(torch.randn(3, 5, 5), tw), RuntimeError, r"expected input\[1, 3, 5, 5\] to have 4 channels", True),
    ("bias-length", lambda f: f(t4, tw, torch.randn(4)), RuntimeError, r"Given transposed=1, weight of size \[4, 3, 3, 3\], expected bias to be 1-dimensional with 3 elements, but got bias of size \[4\] instead", True),
    ("bias-2d", lambda f: f(t4, tw, torch.randn(3, 1)), RuntimeError, r"but got bias of size \[3, 1\] instead", True),
    ("bias-length-groups", lambda f: f(t4, tw, torch.randn(3), groups=2), RuntimeError, "expected bias to be 1-dimensional with 6 elements", True),
    ("empty-height", lambda f: f(torch.randn(2, 4, 0, 5), tw), RuntimeError, r"Only zero batch or zero channel inputs are supported, but got input shape: \[2, 4, 0, 5\]", True),
    ("empty-width-unbatched", lambda f: f(torch.randn(4, 5, 0), tw), RuntimeError, r"but got input shape: \[1, 4, 5, 0\]", True),
    # torch's oneDNN path reports internal errors for these three; its slow path, these messages.
    ("kernel-size-0", lambda f: f(t4, torch.randn(4, 3, 0, 3)), RuntimeError, "kernel size should be greater than zero, but got kernel_height: 0 kernel_width: 3", True),
    ("out-channels-0", lambda f: f(t4, torch.randn(4, 0, 3, 3)), RuntimeError, r"non-empty 2D or 4D weight tensor expected, but got: \[4, 0, 3, 3\]", True),
    ("output-too-small", lambda f: f(t4, tw, padding=4), RuntimeError, r"Given input size per channel: \(5 x 5\). Calculated output size per channel: \(-1 x -1\). Output size is too small", True),
    ("output-padding-not-below-stride-or-dilation", lambda f: f(t4, tw, stride=2, output_padding=2), RuntimeError, "output padding must be smaller than either stride or dilation, but got output_padding_height: 2 output_padding_width: 2 stride_height: 2 stride_width: 2 dilation_height: 1 dilation_width: 1", True),
    ("output-padding-one-axis", lambda f: f(t4, tw, stride=(2, 1), dilation=(1, 3), output_padding=(2, 2)), RuntimeError, "output padding must be smaller than either stride or dilation", True),
    ("stride-huge", lambda f: f(t4, tw, stride=2**62), RuntimeError, r"overflows int64 \(output size per channel", True),
    ("dilation-huge", lambda f: f(t4, tw, dilation=2**62), RuntimeError, "overflows int64", True),
    ("padding-huge", lambda f: f(t4, tw, padding=2**62), RuntimeError, "Output size is too small|expected padding to be at most", True),
    ("weight-dtype", lambda f: f(t4, tw.double()), RuntimeError, r"Input type \(Float\) and weight type \(Double\) should be the same", True),
    ("input-dtype", lambda f: f(t4.double(), tw), RuntimeError, r"Input type \(Double\) and weight type \(Float\) should be the same", True),
    ("bias-dtype", lambda f: f(t4, tw, torch.randn(3, dtype=torch.float64)), RuntimeError, r"Input type \(Float\) and bias type \(Double\) should be the same", True),
    ("integer-bias", lambda f: f(t4, tw, torch.ones(3, dtype=torch.int32)), RuntimeError, r"bias type \(Int\) should be the same", True),
    ("bool-input", lambda f: f(t4.bool(), tw.bool()), NotImplementedError, "not implemented for 'Bool'", True),
    # torch returns an uninitialized tensor for a CPU input with a meta weight or bias.
    ("weight-on-other-device", lambda f: f(t4, tw.to("meta")), RuntimeError, "input and weight should be on the same device, but got input on cpu and weight on meta", False),
    ("bias-on-other-device", lambda f: f(t4, tw, torch.randn(3, device="meta")), RuntimeError, "input and bias should be on the same device, but got input on cpu and bias on meta", False),
    # torch computes integer and complex transposed convolutions; convpool's kernels are floating
    # point (convpool.enable() leaves those calls to torch).
    ("integer-input", lambda f: f(t4.long(), tw.long()), NotImplementedError, "not implemented for 'Long'", False),
    ("complex-input", lambda f: f(t4.cfloat(), tw.cfloat()), NotImplementedError, "not implemented for 'ComplexFloat'", False),
]

p4 = torch.randn(2, 3, 8, 8)
POOL_ERRORS = [
    ("kernel-0", lambda f: f(p4, 0), RuntimeError, "kernel size should be greater than zero|stride should not be zero", True),
    ("kernel-negative", lambda f: f(p4, -1), RuntimeError, "kernel size should be greater than zero, but got kH: -1 kW: -1", True),
    ("stride-0", lambda f: f(p4, 2, 0), RuntimeError, "stride should not be zero", True),
    ("stride-negative", lambda f: f(p4, 2, -1), RuntimeError, "stride should be greater than zero", True),
    ("padding-negative", lambda f: f(p4, 2, 2, -1), RuntimeError, "pad must be non-negative, but got pad: -1", True),
    ("padding-over-half", lambda f: f(p4, 2, 2, 2), RuntimeError, "pad should be at most half of effective kernel size, but got pad=2, kernel_size=2 and dilation=1", True),
    ("padding-over-half-kernel-dilated", lambda f: f(p4, 3, 2, 2, 2), RuntimeError, "pad should be smaller than or equal to half of kernel size", True),
    ("dilation-0", lambda f: f(p4, 2, 2, 0, 0), RuntimeError, "dilation should be greater than zero, but got dilationH: 0 dilationW: 0", True),
    ("2d-input", lambda f: f(torch.randn(8, 8), 2), RuntimeError, r"non-empty 3D or 4D \(batch mode\) tensor expected for input", True),
    ("5d-input", lambda f: f(torch.randn(1, 1, 1, 8, 8), 2), RuntimeError, r"non-empty 3D or 4D", True),
    ("zero-channels", lambda f: f(torch.randn(2, 0, 8, 8), 2), RuntimeError, r"optional 0 dim batch size for input, but got:\[2, 0, 8, 8\]", True),
    ("zero-height", lambda f: f(torch.randn(2, 1, 0, 8), 2), RuntimeError, r"but got:\[2, 1, 0, 8\]", True),
    ("unbatched-zero-channels", lambda f: f(torch.randn(0, 8, 8), 2), RuntimeError, r"but got:\[0, 8, 8\]", True),
    ("output-too-small", lambda f: f(torch.randn(1, 1, 2, 2), 3), RuntimeError, r"Given input size: \(1x2x2\). Calculated output size: \(1x0x0\). Output size is too small", True),
    ("kernel-3-tuple", lambda f: f(p4, (2, 2, 2)), RuntimeError, "kernel_size must either be a single int, or a tuple of two ints", True),
    ("stride-3-tuple", lambda f: f(p4, 2, (2, 2, 2)), RuntimeError, "stride must either be omitted, a single int, or a tuple of two ints", True),
    ("padding-3-tuple", lambda f: f(p4, 2, 2, (0, 0, 0)), RuntimeError, "padding must either be a single int, or a tuple of two ints", True),
    ("dilation-3-tuple", lambda f: f(p4, 2, 2, 0, (1, 1, 1)), RuntimeError, "dilation must be either a single int, or a tuple of two ints", True),
    ("bool-input", lambda f: f(p4.bool(), 2), NotImplementedError, "\"max_pool2d\" not implemented for 'Bool'", True),
    ("complex-input", lambda f: f(p4.cfloat(), 2), NotImplementedError, "not implemented for 'ComplexFloat'", True),
    ("kernel-huge", lambda f: f(p4, 2**40), RuntimeError, r"Calculated output size: \(\d+x0x0\)\. Output size is too small", True),
    ("dilation-overflow", lambda f: f(p4, 3, 1, 0, 2**62), RuntimeError, "overflows int64", True),
]


def _ids(rows):
    return [row[0] for row in rows]


@pytest.mark.parametrize("row", CONV_ERRORS, ids=_ids(CONV_ERRORS))
def test_conv2d_errors(row):
    _, call, error, regex, torch_raises = row
    with pytest.raises(error, match=regex):
        call(convpool.conv2d)
    if torch_raises:
        with pytest.raises(Exception):
            call(F.conv2d)


@pytest.mark.parametrize("row", TRANSPOSE_ERRORS, ids=_ids(TRANSPOSE_ERRORS))
def test_conv_transpose2d_errors(row):
    _, call, error, regex, torch_raises = row
    with pytest.raises(error, match=regex):
        call(convpool.conv_transpose2d)
    if torch_raises:
        with pytest.raises(Exception):
            call(F.conv_transpose2d)


@pytest.mark.parametrize("row", POOL_ERRORS, ids=_ids(POOL_ERRORS))
def test_max_pool2d_errors(row):
    _, call, error, regex, torch_raises = row
    with pytest.raises(error, match=regex):
        call(convpool.max_pool2d)
    if torch_raises:
        with pytest.raises(Exception):
            call(F.max_pool2d)


def test_backward_ops_validate_shapes():
    x = torch.randn(1, 1, 4, 4)
    values, indices = convpool.max_pool2d(x, 2, return_indices=True)
    pool = ([2], [2], [0], [1], False)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        torch.ops.convpool.max_pool2d_backward(torch.ones(1, 1, 3, 3), x, indices, *pool)
    with pytest.raises(RuntimeError, match="expected indices of size"):
        torch.ops.convpool.max_pool2d_backward(values, x, indices[..., :1], *pool)
    with pytest.raises(RuntimeError, match="expected indices of dtype Long"):
        torch.ops.convpool.max_pool2d_backward(values, x, indices.int(), *pool)
    with pytest.raises(RuntimeError, match="grad_output and indices should be on the same device"):
        torch.ops.convpool.max_pool2d_backward(values, x, indices.to("meta"), *pool)
    with pytest.raises(RuntimeError, match="grad_output and input should be on the same device"):
        torch.ops.convpool.max_pool2d_backward(values, x.to("meta"), indices, *pool)
    conv = ([1], [0], [1], 1)
    with pytest.raises(RuntimeError, match="grad_output and weight should be on the same device"):
        torch.ops.convpool.conv2d_grad_input(torch.ones(1, 4, 6, 6), w.to("meta"), [1, 3, 8, 8], *conv)
    with pytest.raises(RuntimeError, match="grad_output and input should be on the same device"):
        torch.ops.convpool.conv2d_grad_weight(torch.ones(1, 4, 6, 6), torch.randn(1, 3, 8, 8, device="meta"), [4, 3, 3, 3], *conv)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        torch.ops.convpool.conv2d_grad_input(torch.ones(1, 4, 5, 5), w, [1, 3, 8, 8], *conv)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        torch.ops.convpool.conv2d_grad_weight(torch.ones(1, 4, 5, 5), torch.randn(1, 3, 8, 8), [4, 3, 3, 3], *conv)


MODULE_ERRORS = [
    ("conv-groups-0", lambda: convpool.Conv2d(4, 4, 3, groups=0), ValueError, "groups must be a positive integer"),
    ("conv-in-not-divisible", lambda: convpool.Conv2d(3, 4, 3, groups=2), ValueError, "in_channels must be divisible by groups"),
    ("conv-out-not-divisible", lambda: convpool.Conv2d(4, 3, 3, groups=2), ValueError, "out_channels must be divisible by groups"),
    ("conv-bad-padding-mode", lambda: convpool.Conv2d(4, 4, 3, padding_mode="bad"), ValueError, "padding_mode must be one of"),
    ("conv-bad-padding-string", lambda: convpool.Conv2d(4, 4, 3, padding="full"), ValueError, "Invalid padding string 'full'"),
    ("conv-same-strided", lambda: convpool.Conv2d(4, 4, 3, padding="same", stride=2), ValueError, "padding='same' is not supported for strided convolutions"),
    ("conv-forward-channel-mismatch", lambda: convpool.Conv2d(4, 4, 3)(torch.randn(1, 5, 8, 8)), RuntimeError, "expected input\\[1, 5, 8, 8\\] to have 4 channels"),
    ("transpose-groups-0", lambda: convpool.ConvTranspose2d(4, 4, 3, groups=0), ValueError, "groups must be a positive integer"),
    ("transpose-bad-padding-mode", lambda: convpool.ConvTranspose2d(4, 4, 3, padding_mode="reflect"), ValueError, "Only \"zeros\" padding mode is supported"),
    ("transpose-forward-channel-mismatch", lambda: convpool.ConvTranspose2d(4, 4, 3)(torch.randn(1, 5, 8, 8)), RuntimeError, "expected input\\[1, 5, 8, 8\\] to have 4 channels"),
    ("transpose-output-size-unreachable", lambda: convpool.ConvTranspose2d(4, 4, 3, stride=2)(torch.randn(1, 4, 5, 5), output_size=[20, 20]), ValueError, "requested an output size of \\[20, 20\\]"),
    ("pool-forward-padding-too-large", lambda: convpool.MaxPool2d(2, 2, 2)(torch.randn(1, 1, 8, 8)), RuntimeError, "pad should be at most half of effective kernel size"),
    ("pool-forward-bool", lambda: convpool.MaxPool2d(2)(torch.ones(1, 1, 4, 4, dtype=torch.bool)), NotImplementedError, "not implemented for 'Bool'"),
]


@pytest.mark.parametrize("row", MODULE_ERRORS, ids=_ids(MODULE_ERRORS))
def test_module_errors(row):
    _, call, error, regex = row
    with pytest.raises(error, match=regex):
        call()
