"""Model-level cases: torchvision networks (random weights, nothing downloaded), stock vs
convpool.convert(copy.deepcopy(model)), same weights on both sides.

Ops: "inference" (eval mode, no_grad, forward) and "train step" (train mode with dropout off:
forward, cross-entropy loss, backward to every parameter; the optimizer update is elementwise and identical on both
sides, so it is left out). Errors: inference compares the logits; the train step compares every
parameter gradient, concatenated (max_abs over all of them, max_rel against the largest
gradient). The float64 reference is the stock model in float64 on the same input.
Tolerance: one layer's reduction length is not a good model of error through a network
(BatchNorm on small batches, residual sums, ReLU switching), so a model's allowance against the
float64 model is the larger of (a) the dtype's torch.testing tolerance scaled by sqrt(L) with a
fixed L = 4096 and (b) 4 times the stock torch model's own error against float64: convpool may
be a little less accurate than torch, not a lot -- a wrong kernel is off by orders of magnitude.
"""
import copy
from typing import Dict, List

import torch
import torch.nn.functional as F
import torchvision

import convpool

try:
    from layers import Op, Precision
except ImportError:  # pragma: no cover
    from .layers import Op, Precision

MODEL_NAMES = ["resnet18", "mobilenet_v2", "vgg11"]
# --quick leaves out vgg11's train step: its time goes to the 100M-parameter classifier
# (Linear layers, the same code on both sides), not to convolutions, and it would take ~40% of
# the quick budget.
QUICK_SKIPPED_OPS = {("vgg11", "train step")}
MODEL_OPS = ["inference", "train step"]


def model_op_names(name: str, quick: bool):
    return [op for op in MODEL_OPS if not (quick and (name, op) in QUICK_SKIPPED_OPS)]
MODEL_REDUCTION_LENGTH = 4096
TORCH_ERROR_FACTOR = 4.0


def model_ops(name: str, batch: int, image_size: int, channels_last: bool,
              precision: Precision, device: torch.device, generator: torch.Generator,
              quick: bool = False) -> List[Op]:
    torch.manual_seed(0)  # the random init of the weights
    stock = getattr(torchvision.models, name)(weights=None, num_classes=1000)
    reference = copy.deepcopy(stock).to(device, torch.float64)
    stock = stock.to(device, precision.dtype)
    ours = convpool.convert(copy.deepcopy(stock))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for model in (stock, ours, reference):
        model.to(memory_format=memory_format)
    x = torch.randn(batch, 3, image_size, image_size, generator=generator)
    x = x.to(device, precision.dtype).contiguous(memory_format=memory_format)
    x64 = x.to(torch.float64)
    labels = torch.randint(0, 1000, (batch,), generator=generator).to(device)

    def infer(model, inp):
        model.eval()
        with torch.no_grad():
            return (model(inp),)

    def train_step(model, inp):
        model.train()
        for module in model.modules():
            # Dropout draws random masks that would differ between the sides (and dtypes); it
            # is not what we measure, so it stays off: both sides then compute the same thing.
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        loss = F.cross_entropy(model(inp).float(), labels)
        grads = torch.autograd.grad(loss, params)
        return (torch.cat([g.reshape(-1) for g in grads]),)

    # Inference is compared before any train step runs: train-mode forwards update BatchNorm's
    # running statistics, which eval mode uses.
    ops = [
        Op("inference", lambda: infer(stock, x), lambda: infer(ours, x),
           lambda: infer(reference, x64), [MODEL_REDUCTION_LENGTH],
           torch_error_factor=TORCH_ERROR_FACTOR),
        Op("train step", lambda: train_step(stock, x), lambda: train_step(ours, x),
           lambda: train_step(reference, x64), [MODEL_REDUCTION_LENGTH],
           torch_error_factor=TORCH_ERROR_FACTOR),
    ]
    return [op for op in ops if op.name in model_op_names(name, quick)]
