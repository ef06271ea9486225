"""Reliability: results are bitwise reproducible (CPU kernels and the emulated CUDA kernels), the
ops can be called from several Python threads at once, and repeated calls do not leak memory."""
import gc
import os
import subprocess
import sys
import threading

import pytest
import torch

import convpool
from convpool.testing import cuda_emulation, emulator_available


def _forward_backward(x, weight):
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    out = convpool.max_pool2d(torch.relu(convpool.conv2d(x, weight, None, 1, 1)), 3, 2, 1)
    grads = torch.autograd.grad(out, (x, weight), torch.ones_like(out))
    return (out.detach(), *grads)


def _problem(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 8, 23, 21, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randn(12, 8, 3, 3, generator=g)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_forward_and_backward_are_bitwise_reproducible(layout, threads):
    x, weight = _problem(layout)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        first = _forward_backward(x, weight)
        second = _forward_backward(x, weight)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.skipif(not emulator_available(), reason="convpool built without the CUDA emulator")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_emulated_cuda_forward_and_backward_are_bitwise_reproducible(layout):
    x, weight = _problem(layout)
    x, weight = x[:1, :, :9, :11], weight  # the emulator is slow: a small problem
    with cuda_emulation(order="shuffle", seed=1):
        first = _forward_backward(x, weight)
    with cuda_emulation(order="shuffle", seed=2):
        second = _forward_backward(x, weight)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_concurrent_calls_match_serial_results():
    problems = [_problem(layout, seed) for seed in range(3) for layout in ("contiguous", "channels_last")]
    expected = [_forward_backward(x, w) for x, w in problems]
    results = [None] * len(problems)
    errors = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = _forward_backward(*problems[i])
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and all(not t.is_alive() for t in threads)
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.skipif(os.environ.get("CONVPOOL_SANITIZED") == "1",
                    reason="AddressSanitizer's quarantine holds freed memory: RSS is not flat")
def test_repeated_calls_do_not_leak():
    """10,000 forward+backward calls: resident memory stays flat (bounded growth after warm-up)."""
    x, weight = _problem("contiguous")
    x, weight = x[:1, :4, :8, :8].contiguous(), weight[:4, :4].contiguous()
    for _ in range(200):  # warm-up: allocator caches, autograd and dispatcher state
        _forward_backward(x, weight)
    gc.collect()
    start = _rss_bytes()
    for _ in range(10_000):
        _forward_backward(x, weight)
    gc.collect()
    growth = _rss_bytes() - start
    # A leak of even one 4x8x8 float tensor per call would be 10,000 * 1 KiB = 10 MiB.
    assert growth < 4 * 1024 * 1024, f"resident memory grew by {growth / 2**20:.1f} MiB"


def test_built_with_openmp_when_torch_is():
    # at::parallel_for is inline: compiled without -fopenmp it silently runs serially (every CPU
    # kernel on one thread whatever torch.set_num_threads says; this shipped once unnoticed).
    assert convpool.build_info()["openmp"] == torch._C.has_openmp


THREADS_USED = r"""
import os, numpy, torch, convpool
torch.set_num_threads(2)
# Built from numpy: torch's own fill kernels would start the OpenMP pool themselves.
x = torch.from_numpy(numpy.random.default_rng(0).standard_normal((4, 32, 256, 256), dtype=numpy.float32))
before = len(os.listdir("/proc/self/task"))
convpool.max_pool2d(x, 3, 2, 1)
print(before, len(os.listdir("/proc/self/task")))
"""


@pytest.mark.skipif(not torch._C.has_openmp or os.cpu_count() < 2, reason="needs OpenMP and 2 cores")
def test_cpu_kernels_use_torchs_threads():
    # The first parallel region with 2 threads starts the OpenMP worker: a kernel that ran serially
    # leaves the thread count unchanged.
    result = subprocess.run([sys.executable, "-c", THREADS_USED], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert result.returncode == 0, result.stderr
    before, after = map(int, result.stdout.split())
    assert after > before
