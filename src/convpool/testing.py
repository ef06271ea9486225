"""Test helpers: run convpool's CUDA kernels on CPU tensors through the CUDA emulator.

    with convpool.testing.cuda_emulation(order="shuffle", seed=3):
        y = convpool.conv2d(x, w)          # x, w on CPU: the CUDA kernels compute y
        y.sum().backward()                 # so do the backward ops

The emulator (csrc/emu/) compiles the kernel sources of csrc/cuda/ with the host compiler; it is
built when CONVPOOL_BUILD_EMU=1 at build time. Inside the context every convpool op on CPU tensors
(functional, modules and autograd alike) runs the CUDA kernels; the threads of a block run one at a
time between barriers, in `order` ("forward", "reverse" or a "shuffle" seeded by `seed`), so a
missing __syncthreads changes the results. The switch is process-wide (not per thread).
"""
import contextlib

import torch

__all__ = ["cuda_emulation", "emulator_available", "ORDERS"]

ORDERS = ("forward", "reverse", "shuffle")

_state = [(False, 0, 0)]  # stack of (enabled, order, seed); the top is in force


def emulator_available() -> bool:
    """Whether convpool was built with the CUDA emulator (CONVPOOL_BUILD_EMU=1)."""
    import convpool  # noqa: F401  (loads the extension)

    return hasattr(torch.ops.convpool, "_set_cuda_emulation")


def _apply(state):
    enabled, order, seed = state
    torch.ops.convpool._set_cuda_emulation(enabled, order, seed)


@contextlib.contextmanager
def cuda_emulation(order: str = "forward", seed: int = 0):
    """Context manager: convpool ops on CPU tensors run the CUDA kernels through the emulator."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not emulator_available():
        raise RuntimeError(
            "convpool was built without the CUDA emulator: rebuild with CONVPOOL_BUILD_EMU=1, e.g. "
            "CONVPOOL_BUILD_EMU=1 python setup.py build_ext --inplace")
    state = (True, ORDERS.index(order), int(seed))
    _state.append(state)
    _apply(state)
    try:
        yield
    finally:
        _state.pop()
        _apply(_state[-1])
