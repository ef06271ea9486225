"""Tensors with more than 2^31 elements: every offset and index must be 64-bit. Checked against
torch on a slice (the last rows), where 32-bit arithmetic would have wrapped."""
import pytest
import torch
import torch.nn.functional as F

import convpool

pytestmark = pytest.mark.slow

SIDE = 46_400  # SIDE * SIDE = 2,152,960,000 > 2^31


def test_max_pool2d_indices_past_2_31():
    rows = 64
    g = torch.Generator().manual_seed(1)
    x = torch.empty((1, 1, SIDE, SIDE), dtype=torch.uint8)
    x[..., : SIDE - rows, :] = 0
    tail = torch.randint(0, 255, (1, 1, rows, SIDE), dtype=torch.uint8, generator=g)
    x[..., SIDE - rows:, :] = tail
    values, indices = convpool.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref_values, ref_indices = F.max_pool2d(tail.float(), 3, 2, 1, return_indices=True)
    # Output rows whose windows lie inside the tail: the last rows // 2 - 1 of them.
    k = rows // 2 - 1
    got_values, got_indices = values[..., -k:, :], indices[..., -k:, :]
    assert torch.equal(got_values, ref_values[..., -k:, :].to(torch.uint8))
    offset = (SIDE - rows) * SIDE  # > 2^31: the tail starts past the 32-bit range
    assert offset > 2**31
    assert torch.equal(got_indices, ref_indices[..., -k:, :] + offset)


def test_conv2d_output_above_2_31_elements():
    side = 33_000  # 2 output channels * side^2 = 2,178,000,000 > 2^31
    g = torch.Generator().manual_seed(2)
    x = torch.zeros((1, 1, side, side), dtype=torch.bfloat16)
    rows = 16
    tail = torch.randn((1, 1, rows, side), generator=g).to(torch.bfloat16)
    x[..., side - rows:, :] = tail
    weight = torch.tensor([[[[1.0]]], [[[-2.0]]]], dtype=torch.bfloat16)
    bias = torch.tensor([0.5, 0.25], dtype=torch.bfloat16)
    out = convpool.conv2d(x, weight, bias)
    assert out.numel() > 2**31
    ref = F.conv2d(tail.double(), weight.double(), bias.double())
    torch.testing.assert_close(out[..., side - rows:, :].double(), ref, rtol=1e-2, atol=1e-2)
    assert torch.equal(out[0, :, 0, :5], bias.view(2, 1).expand(2, 5))
