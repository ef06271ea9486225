"""PyTorch's own OpInfo samples and error inputs for nn.functional.conv2d / conv_transpose2d /
max_pool2d, run through convpool: forward and backward match torch; every error input is
rejected."""
import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db

import convpool
from helpers import TOLERANCES

OPS = {
    "nn.functional.conv2d": convpool.conv2d,
    "nn.functional.conv_transpose2d": convpool.conv_transpose2d,
    "nn.functional.max_pool2d": convpool.max_pool2d,
}
# torch's OpInfo has no error inputs for conv_transpose2d: tests/test_errors.py covers its
# errors against torch instead.
WITHOUT_ERROR_INPUTS = {"nn.functional.conv_transpose2d"}


def _opinfo(name):
    return next(op for op in op_db if op.name == name)


def _differentiable(out):
    return [t for t in (out if isinstance(out, tuple) else (out,)) if t.dtype.is_floating_point]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_match_torch(name, dtype):
    opinfo, ours_fn = _opinfo(name), OPS[name]
    count = 0
    for sample in opinfo.sample_inputs("cpu", dtype, requires_grad=True):
        args, kwargs = sample.args, sample.kwargs
        ref = opinfo.op(sample.input, *args, **kwargs)
        ours = ours_fn(sample.input, *args, **kwargs)
        refs, ourss = (ref, ours) if isinstance(ref, tuple) else ((ref,), (ours,))
        for a, b in zip(ourss, refs):
            if a.dtype == torch.int64:
                assert torch.equal(a, b), sample
            else:
                torch.testing.assert_close(a, b, **TOLERANCES[dtype], msg=lambda m: f"{m}\n{sample}")
        inputs = [t for t in (sample.input, *args) if isinstance(t, torch.Tensor) and t.requires_grad]
        out_ours, out_ref = _differentiable(ours)[0], _differentiable(ref)[0]
        projection = torch.randn_like(out_ref)
        g_ours = torch.autograd.grad(out_ours, inputs, projection, allow_unused=True)
        g_ref = torch.autograd.grad(out_ref, inputs, projection, allow_unused=True)
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, **TOLERANCES[dtype], msg=lambda m: f"{m}\n{sample}")
        count += 1
    assert count > 0


@pytest.mark.parametrize("name", [name for name in OPS if name not in WITHOUT_ERROR_INPUTS])
def test_error_inputs_are_rejected(name):
    opinfo, ours_fn = _opinfo(name), OPS[name]
    count = 0
    for error_input in opinfo.error_inputs("cpu"):
        sample = error_input.sample_input
        with pytest.raises(error_input.error_type, match=error_input.error_regex):
            ours_fn(sample.input, *sample.args, **sample.kwargs)
        count += 1
    assert count > 0


@pytest.mark.parametrize("name", sorted(WITHOUT_ERROR_INPUTS))
def test_ops_without_error_inputs_still_have_none(name):
    # When torch adds error inputs for one of these, they must join the test above.
    assert _opinfo(name).error_inputs_func is None
