"""Timing, error and memory measurement shared by the layer and model benchmarks.

Timing: torch.utils.benchmark.Timer(...).blocked_autorange(), which synchronises CUDA itself.
The torch side and the convpool side are timed in alternation in the same process
(torch, convpool, torch, convpool, ... `rounds` times) and each side's time is the median of
its per-round medians, so slow drift of a shared machine hits both sides alike. Alongside, the
process CPU time per call over the same runs (R cpu): less disturbed by other processes, but it
counts worker threads spinning at barriers, so on a busy machine compare with --threads 1.

Errors: for a result `out` and a reference `ref`,
    max_abs = max |out - ref|
    max_rel = max |out - ref| / max |ref|        (relative to the reference's largest magnitude;
                                                  element-wise ratios blow up near zeros)
computed against torch's result AND against torch's float64 result, on the same device, from
float64 copies of the same (already rounded) inputs.

Tolerance rule (`tolerance`): torch.testing.assert_close's default (rtol, atol) of the dtype,
both scaled by sqrt(L), L the length of the reduction behind each output element (a dot product
of L rounded terms has a rounding error growing like sqrt(L) for random data). A result passes
when max_abs <= atol * sqrt(L) + rtol * sqrt(L) * max|ref64|, ref64 the float64 reference. Against
torch the allowance doubles, checked only where torch itself is within tolerance of ref64
(where it is not, the row gets a note, not a flag: torch is the inaccurate side). Max pooling
forward selects elements, so L = 1 and the result must be exact up to that allowance; indices
must equal torch's. float32 with TF32 on (CUDA) gets float16's (rtol, atol): TF32 keeps float16's
10 mantissa bits.

Memory (`peak_extra_memory`): on CUDA, torch.cuda.max_memory_allocated() - memory_allocated()
around one call (the caching allocator's exact peak of live tensors, output included). On the CPU
torch has no allocator statistics, so we measure the process's peak resident set size (VmHWM in
/proc/self/status, reset through /proc/self/clear_refs) minus the RSS before one call, after
malloc_trim so freed heap pages are returned first. It includes the output and every workspace,
at page granularity; memory the C library still held from an earlier call can hide some of it,
so treat it as a lower bound. None where the kernel does not allow resetting VmHWM.
"""
import ctypes
import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.benchmark import Timer

# torch.testing.assert_close's defaults (torch/testing/_comparison.py, _DTYPE_PRECISIONS).
DEFAULT_TOLERANCES = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}
# TF32 keeps 10 mantissa bits, as float16: with TF32 on, float32 results get float16's tolerance.
TF32_TOLERANCE = DEFAULT_TOLERANCES[torch.float16]


def tolerance(dtype: torch.dtype, reduction_length: int, tf32: bool = False) -> Tuple[float, float]:
    """(rtol, atol) for a result whose elements each sum `reduction_length` rounded products."""
    rtol, atol = TF32_TOLERANCE if (tf32 and dtype == torch.float32) else DEFAULT_TOLERANCES.get(
        dtype, (0.0, 0.0))
    scale = math.sqrt(max(1, reduction_length))
    return rtol * scale, atol * scale


def error_stats(out: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    """max_abs and max_rel (relative to max |ref|) of out against ref, computed in float64."""
    out64 = out.detach().to("cpu", torch.float64)
    ref64 = ref.detach().to("cpu", torch.float64)
    if out64.shape != ref64.shape:
        return {"max_abs": math.inf, "max_rel": math.inf, "ref_max": float("nan")}
    if out64.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "ref_max": 0.0}
    diff = (out64 - ref64).abs()
    # NaN where the other side has none is a maximal error, not an ignored element.
    nan_mismatch = bool((out64.isnan() != ref64.isnan()).any())
    max_abs = math.inf if nan_mismatch else float(diff.nan_to_num(0.0).max())
    ref_max = float(ref64.abs().nan_to_num(0.0).max())
    max_rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else math.inf)
    return {"max_abs": max_abs, "max_rel": max_rel, "ref_max": ref_max}


def check_errors(vs_torch: Dict[str, float], vs_f64: Dict[str, float], rtol: float,
                 atol: float, floor: float = 0.0, torch_within: bool = True) -> Optional[str]:
    """Why a result is out of tolerance (None when it is within). The allowance against the
    float64 reference is max(atol + rtol * max|ref64|, floor); against torch it is twice that,
    checked only when torch itself is within the allowance of float64 (torch_within): when
    torch is the inaccurate side, disagreeing with it is no fault of convpool's."""
    allowed = max(atol + rtol * vs_f64["ref_max"], floor)
    reasons = []
    if not vs_f64["max_abs"] <= allowed:  # `not <=` so NaN fails too
        reasons.append(f"vs f64 {vs_f64['max_abs']:.3g} > {allowed:.3g}")
    if torch_within and not vs_torch["max_abs"] <= 2 * allowed:
        reasons.append(f"vs torch {vs_torch['max_abs']:.3g} > {2 * allowed:.3g}")
    return "; ".join(reasons) or None


def time_interleaved(fns: Sequence[Callable[[], object]], threads: int, rounds: int,
                     min_run_time: float) -> Tuple[List[float], List[float]]:
    """Median seconds per call of each of `fns`, timed in turn (fn 0, fn 1, ..., fn 0, ...)
    `rounds` times: (wall medians, CPU medians), one per fn, in the order of `fns`.

    Wall time is what blocked_autorange measures; CPU time is the process's CPU time (all
    threads) per call over the same runs -- much less sensitive to other processes competing
    for the cores, though it counts threads spinning while they wait. CPU time is meaningful
    on the CPU only."""
    wall: List[List[float]] = [[] for _ in fns]
    cpu: List[List[float]] = [[] for _ in fns]
    calls = [0] * len(fns)

    def counted(i, fn):
        def call():
            calls[i] += 1
            return fn()
        return call

    timers = [Timer("fn()", globals={"fn": counted(i, fn)}, num_threads=threads)
              for i, fn in enumerate(fns)]
    for _ in range(max(1, rounds)):
        for i, timer in enumerate(timers):
            calls_before, cpu_before = calls[i], time.process_time()
            wall[i].append(timer.blocked_autorange(min_run_time=min_run_time).median)
            cpu[i].append((time.process_time() - cpu_before) / max(1, calls[i] - calls_before))
    return [statistics.median(w) for w in wall], [statistics.median(c) for c in cpu]


def time_alternating(torch_fn: Callable[[], object], convpool_fn: Callable[[], object],
                     threads: int, rounds: int, min_run_time: float,
                     ) -> Tuple[float, float, float, float]:
    """(torch wall, convpool wall, torch CPU, convpool CPU) seconds per call: time_interleaved
    of the two sides (torch, convpool, torch, convpool, ...)."""
    (torch_wall, convpool_wall), (torch_cpu, convpool_cpu) = time_interleaved(
        (torch_fn, convpool_fn), threads, rounds, min_run_time)
    return torch_wall, convpool_wall, torch_cpu, convpool_cpu


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_extra_memory(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Bytes by which one call of fn raises the peak above what was in use before it (see the
    module docstring for what is measured on each device)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del result
        return max(0, peak - before)
    try:
        _malloc_trim()
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        before = _proc_status_kib("VmRSS")
        result = fn()
        peak = _proc_status_kib("VmHWM")
        del result
        return max(0, peak - before) * 1024
    except (OSError, KeyError):
        return None
