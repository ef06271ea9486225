"""Layer-level cases: each conv / pool case becomes a few timed operations, run on both sides.

Conv ops: forward, grad_input (dgrad), grad_weight (wgrad) and the whole forward+backward through
autograd. torch's side is torch.nn.functional.conv2d and aten.convolution_backward with an
output_mask selecting one gradient; convpool's side is convpool.conv2d and its
torch.ops.convpool.conv2d_grad_input / conv2d_grad_weight ops.
Transposed-conv ops: forward and the whole forward+backward through autograd,
torch.nn.functional.conv_transpose2d against convpool.conv_transpose2d (whose forward is
convpool's dgrad op, its backward convpool's fprop and wgrad ops).
Pool ops: max_pool2d forward without and with indices, and its backward
(aten.max_pool2d_with_indices_backward vs torch.ops.convpool.max_pool2d_backward), each side
given the indices it produced itself.
Overhead ops (suite "overhead"): tiny conv2d, max_pool2d and Conv2d->ReLU->MaxPool2d problems,
forward and forward+backward, where the time per call is the call itself (see overhead_ops).
"""
import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

import convpool
from convpool.backends import cpu as cpu_backend

try:  # run as `python benchmarks/run.py` (script dir on sys.path) or imported as a package
    from measure import (check_errors, error_stats, peak_extra_memory, time_alternating,
                         time_interleaved, tolerance)
    from suites import ConvCase, PoolCase, TransposeCase
except ImportError:  # pragma: no cover
    from .measure import (check_errors, error_stats, peak_extra_memory, time_alternating,
                          time_interleaved, tolerance)
    from .suites import ConvCase, PoolCase, TransposeCase

aten = torch.ops.aten
CONV_OPS = ["forward", "grad_input", "grad_weight", "fwd+bwd"]
TRANSPOSE_OPS = ["forward", "fwd+bwd"]
POOL_OPS = ["forward", "forward+indices", "backward"]
ERROR_COLUMNS = ["err_torch_abs", "err_torch_rel", "err_f64_abs", "err_f64_rel"]


@dataclass
class Precision:
    """A dtype plus the TF32 setting it runs with (the same for torch and convpool)."""
    dtype: torch.dtype
    tf32: bool = False

    @property
    def label(self) -> str:
        name = str(self.dtype).replace("torch.", "")
        return f"{name}+tf32" if self.tf32 else name

    def apply(self, device: torch.device):
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32


@dataclass
class Op:
    """One timed operation: both sides, the float64 reference, and what to compare.

    Each call returns a tuple of tensors; `reductions[i]` is the reduction length behind
    output i (for the tolerance), `flops` / `bytes` the work of one call."""
    name: str
    torch_fn: Callable[[], Tuple[torch.Tensor, ...]]
    convpool_fn: Callable[[], Tuple[torch.Tensor, ...]]
    reference_fn: Callable[[], Tuple[torch.Tensor, ...]]
    reductions: Sequence[int]
    flops: Optional[float] = None
    bytes: Optional[float] = None
    indices_at: Optional[int] = None  # output position holding max_pool2d indices
    # > 0: also allow this many times torch's own error against float64 (whole models, whose
    # conditioning amplifies rounding beyond any per-layer rule).
    torch_error_factor: float = 0.0
    # The CPU algorithm(s) convpool runs for this operation (convpool.backends.cpu.selected), asked
    # after the timing so that an autotuned choice is what is reported; None: not a single op.
    algorithm: Optional[Callable[[], str]] = None
    # A single op of torch.ops.convpool: (its name, its arguments), for the registry queries of
    # convpool.backends.cpu and for timing each of its algorithms (time_algorithms).
    registry_call: Optional[Tuple[str, tuple]] = None

    def __post_init__(self):
        if self.registry_call is not None and self.algorithm is None:
            name, args = self.registry_call
            self.algorithm = lambda: cpu_backend.selected(name, *args) or "-"


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _memory_format(t: torch.Tensor) -> str:
    cl = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return f"{'C' if t.is_contiguous() else '-'}{'L' if cl else '-'}"


def conv_ops(case: ConvCase, batch: int, channels_last: bool, precision: Precision,
             device: torch.device, generator: torch.Generator) -> List[Op]:
    dtype = precision.dtype
    k_h, k_w = case.kernel
    out_h, out_w = case.out_size
    stride, padding, dilation = list(case.stride), list(case.padding), list(case.dilation)
    groups = case.groups

    def rand(*shape):
        t = torch.randn(*shape, generator=generator, dtype=torch.float32).to(device, dtype)
        return _layout(t, channels_last) if len(shape) == 4 else t

    x = rand(batch, case.in_channels, case.height, case.width)
    w = rand(case.out_channels, case.in_channels // groups, k_h, k_w)
    b = rand(case.out_channels) if case.bias else None
    grad_out = rand(batch, case.out_channels, out_h, out_w)
    x64, w64, go64 = (t.to(torch.float64) for t in (x, w, grad_out))
    b64 = b.to(torch.float64) if b is not None else None
    args = (stride, padding, dilation, groups)

    def torch_backward(go, inp, weight, mask, bias_sizes=None):
        return aten.convolution_backward(go, inp, weight, bias_sizes, stride, padding, dilation,
                                         False, [0, 0], groups, mask)

    def fwd_bwd(conv, inp, weight, bias, go):
        leaves = [t.detach().requires_grad_() for t in (inp, weight, bias) if t is not None]
        out = conv(*leaves[:2], leaves[2] if bias is not None else None, *args)
        return (out, *torch.autograd.grad(out, leaves, go))

    macs = batch * case.out_channels * out_h * out_w * (case.in_channels // groups) * k_h * k_w
    reduce_forward = (case.in_channels // groups) * k_h * k_w
    # Each input element meets at most ceil(k/stride) kernel taps per axis, per output channel.
    reduce_dgrad = ((case.out_channels // groups) * math.ceil(k_h / case.stride[0])
                    * math.ceil(k_w / case.stride[1]))
    reduce_wgrad = batch * out_h * out_w
    fwd_bwd_reductions = [reduce_forward, reduce_dgrad, reduce_wgrad] + (
        [reduce_wgrad] if case.bias else [])
    op_args = {"conv2d": (x, w, b, stride, padding, dilation, groups),
               "conv2d_grad_input": (grad_out, w, list(x.shape), stride, padding, dilation, groups),
               "conv2d_grad_weight": (grad_out, x, list(w.shape), stride, padding, dilation, groups)}

    def algorithm(*ops):
        return lambda: "+".join(cpu_backend.selected(name, *op_args[name]) or "-" for name in ops)

    return [
        Op("forward",
           lambda: (F.conv2d(x, w, b, *args),),
           lambda: (convpool.conv2d(x, w, b, *args),),
           lambda: (F.conv2d(x64, w64, b64, *args),),
           [reduce_forward], flops=2 * macs, registry_call=("conv2d", op_args["conv2d"])),
        Op("grad_input",
           lambda: (torch_backward(grad_out, x, w, [True, False, False])[0],),
           lambda: (torch.ops.convpool.conv2d_grad_input(grad_out, w, list(x.shape), *args),),
           lambda: (torch_backward(go64, x64, w64, [True, False, False])[0],),
           [reduce_dgrad], flops=2 * macs,
           registry_call=("conv2d_grad_input", op_args["conv2d_grad_input"])),
        Op("grad_weight",
           lambda: (torch_backward(grad_out, x, w, [False, True, False])[1],),
           lambda: (torch.ops.convpool.conv2d_grad_weight(grad_out, x, list(w.shape), *args),),
           lambda: (torch_backward(go64, x64, w64, [False, True, False])[1],),
           [reduce_wgrad], flops=2 * macs,
           registry_call=("conv2d_grad_weight", op_args["conv2d_grad_weight"])),
        Op("fwd+bwd",
           lambda: fwd_bwd(F.conv2d, x, w, b, grad_out),
           lambda: fwd_bwd(convpool.conv2d, x, w, b, grad_out),
           lambda: fwd_bwd(F.conv2d, x64, w64, b64, go64),
           fwd_bwd_reductions, flops=6 * macs,
           algorithm=algorithm("conv2d", "conv2d_grad_input", "conv2d_grad_weight")),
    ]


def transpose_ops(case: TransposeCase, batch: int, channels_last: bool, precision: Precision,
                  device: torch.device, generator: torch.Generator) -> List[Op]:
    dtype = precision.dtype
    k_h, k_w = case.kernel
    out_h, out_w = case.out_size
    args = (list(case.stride), list(case.padding), list(case.output_padding))

    def rand(*shape):
        t = torch.randn(*shape, generator=generator, dtype=torch.float32).to(device, dtype)
        return _layout(t, channels_last) if len(shape) == 4 else t

    x = rand(batch, case.in_channels, case.height, case.width)
    w = rand(case.in_channels, case.out_channels, k_h, k_w)
    b = rand(case.out_channels) if case.bias else None
    grad_out = rand(batch, case.out_channels, out_h, out_w)
    x64, w64, go64 = (t.to(torch.float64) for t in (x, w, grad_out))
    b64 = b.to(torch.float64) if b is not None else None

    def fwd_bwd(conv, inp, weight, bias, go):
        leaves = [t.detach().requires_grad_() for t in (inp, weight, bias) if t is not None]
        out = conv(*leaves[:2], leaves[2] if bias is not None else None, *args)
        return (out, *torch.autograd.grad(out, leaves, go))

    macs = batch * case.in_channels * case.height * case.width * case.out_channels * k_h * k_w
    # An output element sums the input channels times the taps landing on it: ceil(k / stride)
    # per axis. Its input gradient is a convolution (all k_h * k_w taps per output channel).
    reduce_forward = (case.in_channels * math.ceil(k_h / case.stride[0])
                      * math.ceil(k_w / case.stride[1]))
    reduce_dgrad = case.out_channels * k_h * k_w
    reduce_wgrad = batch * case.height * case.width
    fwd_bwd_reductions = [reduce_forward, reduce_dgrad, reduce_wgrad] + (
        [batch * out_h * out_w] if case.bias else [])
    # The forward is conv2d_grad_input with the input as grad_output (functional.conv_transpose2d;
    # a case has dilation 1, so output_padding < stride and the input is never padded first);
    # its backward is conv2d of grad_output (the input's gradient) and conv2d_grad_weight with the
    # input as grad_output (the weight's).
    conv_args = (list(case.stride), list(case.padding), [1, 1], 1)
    registry_call = ("conv2d_grad_input",
                     (x, w, [batch, case.out_channels, out_h, out_w], *conv_args))
    selected_calls = {"conv2d_grad_input": registry_call[1],
                      "conv2d": (grad_out, w, None, *conv_args),
                      "conv2d_grad_weight": (x, grad_out, list(w.shape), *conv_args)}

    def fwd_bwd_algorithm():
        return "+".join(cpu_backend.selected(name, *call) or "-"
                        for name, call in selected_calls.items())

    return [
        Op("forward",
           lambda: (F.conv_transpose2d(x, w, b, *args),),
           lambda: (convpool.conv_transpose2d(x, w, b, *args),),
           lambda: (F.conv_transpose2d(x64, w64, b64, *args),),
           [reduce_forward], flops=2 * macs, registry_call=registry_call),
        Op("fwd+bwd",
           lambda: fwd_bwd(F.conv_transpose2d, x, w, b, grad_out),
           lambda: fwd_bwd(convpool.conv_transpose2d, x, w, b, grad_out),
           lambda: fwd_bwd(F.conv_transpose2d, x64, w64, b64, go64),
           fwd_bwd_reductions, flops=6 * macs, algorithm=fwd_bwd_algorithm),
    ]


def pool_ops(case: PoolCase, batch: int, channels_last: bool, precision: Precision,
             device: torch.device, generator: torch.Generator) -> List[Op]:
    dtype = precision.dtype
    kernel, stride, padding = list(case.kernel), list(case.stride), list(case.padding)
    pool_args = (kernel, stride, padding, [1, 1], case.ceil_mode)
    x = torch.randn(batch, case.channels, case.height, case.width, generator=generator)
    x = _layout(x.to(device, dtype), channels_last)
    values, torch_indices = F.max_pool2d(x, *pool_args, return_indices=True)
    convpool_indices = convpool.max_pool2d(x, *pool_args, return_indices=True)[1]
    grad_out = _layout(torch.randn(values.shape, generator=generator).to(device, dtype),
                       channels_last)
    x64, go64 = x.to(torch.float64), grad_out.to(torch.float64)
    size = x.element_size()
    in_bytes, out_bytes = x.numel() * size, values.numel() * size
    index_bytes = values.numel() * 8
    # Windows overlapping one input element: ceil(k / s) per axis; its gradient sums that many.
    overlap = math.prod(math.ceil(k / s) for k, s in zip(kernel, stride))

    return [
        Op("forward",
           lambda: (F.max_pool2d(x, *pool_args),),
           lambda: (convpool.max_pool2d(x, *pool_args),),
           lambda: (F.max_pool2d(x64, *pool_args),),
           [1], bytes=in_bytes + out_bytes,
           registry_call=("max_pool2d_values", (x, *pool_args))),
        Op("forward+indices",
           lambda: F.max_pool2d(x, *pool_args, return_indices=True),
           lambda: convpool.max_pool2d(x, *pool_args, return_indices=True),
           lambda: F.max_pool2d(x64, *pool_args, return_indices=True),
           [1, 1], bytes=in_bytes + out_bytes + index_bytes, indices_at=1,
           registry_call=("max_pool2d", (x, *pool_args))),
        Op("backward",
           lambda: (aten.max_pool2d_with_indices_backward(grad_out, x, *pool_args,
                                                          torch_indices),),
           lambda: (torch.ops.convpool.max_pool2d_backward(grad_out, x, convpool_indices,
                                                           *pool_args),),
           lambda: (aten.max_pool2d_with_indices_backward(go64, x64, *pool_args,
                                                          torch_indices),),
           [overlap], bytes=out_bytes + index_bytes + in_bytes,
           registry_call=("max_pool2d_backward", (grad_out, x, convpool_indices, *pool_args))),
    ]


def _as_tuple(result) -> Tuple[torch.Tensor, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def compare(op: Op, torch_out, convpool_out, reference_out, precision: Precision) -> Dict:
    """Error columns of one op: the output with the worst error (relative to its allowance)
    is reported; every output is checked; indices must equal torch's."""
    worst, reasons, notes = None, [], []
    for i, (t, c, r) in enumerate(zip(torch_out, convpool_out, reference_out)):
        if op.indices_at == i:
            continue
        vs_torch, vs_f64 = error_stats(c, t), error_stats(c, r)
        torch_vs_f64 = error_stats(t, r)
        rtol, atol = tolerance(precision.dtype, op.reductions[i], precision.tf32)
        floor = op.torch_error_factor * torch_vs_f64["max_abs"]
        allowed = max(atol + rtol * vs_f64["ref_max"], floor)
        ratio = vs_f64["max_abs"] / allowed if allowed > 0 else (
            0.0 if vs_f64["max_abs"] == 0 else math.inf)
        torch_within = torch_vs_f64["max_abs"] <= allowed
        reason = check_errors(vs_torch, vs_f64, rtol, atol, floor, torch_within)
        prefix = f"output {i}: " if len(torch_out) > 1 else ""
        if reason:
            reasons.append(prefix + reason)
        if not torch_within:
            notes.append(f"{prefix}torch itself off: vs f64 {torch_vs_f64['max_abs']:.3g} > "
                         f"{allowed:.3g}")
        if c.shape == t.shape and _memory_format(c) != _memory_format(t):
            reasons.append(f"output {i} layout {_memory_format(c)} != torch {_memory_format(t)}")
        candidate = {
            "err_torch_abs": vs_torch["max_abs"], "err_torch_rel": vs_torch["max_rel"],
            "err_f64_abs": vs_f64["max_abs"], "err_f64_rel": vs_f64["max_rel"],
            "torch_err_f64_rel": torch_vs_f64["max_rel"], "allowed_abs": allowed,
            "_ratio": ratio,
        }
        if worst is None or not candidate["_ratio"] <= worst["_ratio"]:
            worst = candidate
    worst.pop("_ratio")
    if op.indices_at is not None:
        mismatched = int((torch_out[op.indices_at] != convpool_out[op.indices_at]).sum())
        worst["index_mismatches"] = mismatched
        if mismatched:
            reasons.append(f"{mismatched} indices differ from torch's")
    worst["flag"] = "; ".join(reasons) or None
    worst["note"] = "; ".join(notes) or None
    return worst


def run_op(op: Op, precision: Precision, device: torch.device, threads: int, rounds: int,
           min_run_time: float, measure_memory: bool = True) -> Dict:
    """Correctness first (one call per side plus the reference), then memory, then timing."""
    row: Dict = {"op": op.name, **{column: None for column in ERROR_COLUMNS}}
    started = time.perf_counter()
    stage = "torch"
    try:
        torch_out = _as_tuple(op.torch_fn())
        stage = "convpool"
        convpool_out = _as_tuple(op.convpool_fn())
        stage = "float64 reference"
        reference_out = _as_tuple(op.reference_fn())
        stage = "comparison"
        row.update(compare(op, torch_out, convpool_out, reference_out, precision))
        del torch_out, convpool_out, reference_out
        stage = "memory / timing"
        if measure_memory:
            row["torch_mem"] = peak_extra_memory(op.torch_fn, device)
            row["convpool_mem"] = peak_extra_memory(op.convpool_fn, device)
        torch_s, convpool_s, torch_cpu_s, convpool_cpu_s = time_alternating(
            op.torch_fn, op.convpool_fn, threads, rounds, min_run_time)
    except Exception as error:  # a crash is a result too: reported and flagged, never hidden
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        row.update({"flag": f"ERROR in {stage}: {type(error).__name__}: {message}",
                    "bench_s": time.perf_counter() - started})
        return row
    row.update({"torch_ms": torch_s * 1e3, "convpool_ms": convpool_s * 1e3,
                "R": torch_s / convpool_s, "bench_s": time.perf_counter() - started})
    if device.type == "cpu":
        row.update({"torch_cpu_ms": torch_cpu_s * 1e3, "convpool_cpu_ms": convpool_cpu_s * 1e3,
                    "R_cpu": torch_cpu_s / convpool_cpu_s if convpool_cpu_s > 0 else None})
    if op.algorithm is not None and device.type == "cpu":
        row["algorithm"] = op.algorithm()
    if op.flops:
        row.update({"unit": "GFLOP/s", "torch_rate": op.flops / torch_s / 1e9,
                    "convpool_rate": op.flops / convpool_s / 1e9})
    elif op.bytes:
        row.update({"unit": "GB/s", "torch_rate": op.bytes / torch_s / 1e9,
                    "convpool_rate": op.bytes / convpool_s / 1e9})
    return row


def time_algorithms(op: Op, threads: int, rounds: int, min_run_time: float,
                    tuned: Optional[str] = None) -> Dict:
    """Every CPU algorithm applicable to `op` (a single op: op.registry_call), forced one by one
    (convpool.backends.cpu.force) and timed in turn as time_interleaved does.

    Returns {"algorithm_ms": {name: ms}, "heuristic": the heuristic's first,
    "fastest": name, "heuristic_over_fastest": heuristic time / fastest time (1.0: the
    heuristic picks the fastest)}, or {} where fewer than two algorithms apply. With `tuned`
    (the autotuner's choice, run.py --autotune) also "tuned", "tuned_over_fastest" and
    "tuned_over_heuristic" (< 1: tuning beat the heuristic), from the same timings."""
    name, args = op.registry_call
    names = cpu_backend.algorithms(name, *args)
    if len(names) < 2:
        return {}

    def forced(algorithm):
        def call():
            with cpu_backend.force(algorithm):
                return op.convpool_fn()
        return call

    wall, _ = time_interleaved([forced(n) for n in names], threads, rounds, min_run_time)
    times = dict(zip(names, wall))
    fastest = min(times, key=times.get)
    out = {"algorithm_ms": {n: t * 1e3 for n, t in times.items()}, "heuristic": names[0],
           "fastest": fastest, "heuristic_over_fastest": times[names[0]] / times[fastest]}
    if tuned in times:
        out.update({"tuned": tuned, "tuned_over_fastest": times[tuned] / times[fastest],
                    "tuned_over_heuristic": times[tuned] / times[names[0]]})
    return out


# ---- per-call overhead: problems so small that the time is the call, not the arithmetic ------

OVERHEAD_OPS = ["conv2d forward", "conv2d fwd+bwd", "max_pool2d forward", "max_pool2d fwd+bwd",
                "module no_grad", "module fwd+bwd"]
OVERHEAD_SHAPE = "conv 1x1x4x4 * 1x1x3x3; pool 1x1x4x4 k2; module 1x1x8x8"


def overhead_ops(precision: Precision, device: torch.device,
                 generator: torch.Generator) -> List[Op]:
    """What a batch-1 service pays per layer call beyond the arithmetic: Python wrapper,
    argument checks, dispatch, autograd bookkeeping, allocation. conv2d on 1x1x4x4 by 1x1x3x3
    (pytorch issue 13's example), max_pool2d 2x2 on 1x1x4x4, and Conv2d(1, 4, 3, padding=1) ->
    ReLU -> MaxPool2d(2) on 1x1x8x8 (stock vs convpool.convert), each forward only (no_grad for
    the module) and forward+backward (gradients of every input / parameter)."""
    dtype = precision.dtype

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device, dtype)

    x, w, pool_x, module_x = rand(1, 1, 4, 4), rand(1, 1, 3, 3), rand(1, 1, 4, 4), rand(1, 1, 8, 8)
    stock = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2)).to(device, dtype)
    ours = convpool.convert(copy.deepcopy(stock))
    reference = copy.deepcopy(stock).to(torch.float64)
    x_leaf, w_leaf = x.clone().requires_grad_(), w.clone().requires_grad_()
    pool_leaf = pool_x.clone().requires_grad_()

    def f64(*tensors):
        return [t.detach().to(torch.float64).requires_grad_(t.requires_grad) for t in tensors]

    def fwd_bwd(fn, *leaves):
        out = fn(*leaves)
        return (out, *torch.autograd.grad(out.sum(), leaves))

    def module_no_grad(model, inp):
        with torch.no_grad():
            return (model(inp),)

    def module_fwd_bwd(model, inp):
        params = list(model.parameters())
        out = model(inp)
        return (out, *torch.autograd.grad(out.sum(), params))

    return [
        Op("conv2d forward", lambda: (F.conv2d(x, w),), lambda: (convpool.conv2d(x, w),),
           lambda: (F.conv2d(*f64(x, w)),), [9]),
        Op("conv2d fwd+bwd", lambda: fwd_bwd(F.conv2d, x_leaf, w_leaf),
           lambda: fwd_bwd(convpool.conv2d, x_leaf, w_leaf),
           lambda: fwd_bwd(F.conv2d, *f64(x_leaf, w_leaf)), [9, 9, 4]),
        Op("max_pool2d forward", lambda: (F.max_pool2d(pool_x, 2),),
           lambda: (convpool.max_pool2d(pool_x, 2),),
           lambda: (F.max_pool2d(*f64(pool_x), 2),), [1]),
        Op("max_pool2d fwd+bwd", lambda: fwd_bwd(lambda t: F.max_pool2d(t, 2), pool_leaf),
           lambda: fwd_bwd(lambda t: convpool.max_pool2d(t, 2), pool_leaf),
           lambda: fwd_bwd(lambda t: F.max_pool2d(t, 2), *f64(pool_leaf)), [1, 1]),
        Op("module no_grad", lambda: module_no_grad(stock, module_x),
           lambda: module_no_grad(ours, module_x),
           lambda: module_no_grad(reference, module_x.double()), [9]),
        Op("module fwd+bwd", lambda: module_fwd_bwd(stock, module_x),
           lambda: module_fwd_bwd(ours, module_x),
           lambda: module_fwd_bwd(reference, module_x.double()), [9, 64, 64]),
    ]
