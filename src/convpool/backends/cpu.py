"""The CPU algorithms of convpool's ops, as a registry (csrc/cpu/registry.h; docs/registry.md).

Every op of ``torch.ops.convpool`` has a table of CPU algorithms; each entry has a stable name
(``gemm_im2col``, ``winograd_f4x4``, ``depthwise_vec_tiles``, ``pool_avx2_rows``, ...), the
instruction set it needs, and a predicate telling whether it can run a given call. A call runs the
first applicable entry in heuristic order (hand-tuned thresholds, kept as data in the tables),
unless one is forced.

- ``algorithms(op, *args)``: the names that can run that call of ``torch.ops.convpool.<op>``
  (same arguments; CPU tensors), heuristic order first to last.
- ``selected(op, *args)``: the name that runs it now (the forced one, if forced).
- ``force(name)``: a context manager; inside it every CPU call of an op that has an algorithm of
  that name runs it, and raises ``ValueError`` naming the applicable ones where it cannot.
  Ops without an entry of that name keep their heuristic. The environment variable
  ``CONVPOOL_CPU_ALGO=name`` forces from the start. Process-wide, like ``torch.backends`` flags.
- ``table()``: every registered algorithm as ``(op, name, isa)``.

Autotuning, like ``torch.backends.cudnn.benchmark``:

- ``benchmark`` (bool, default False; ``CONVPOOL_CPU_BENCHMARK=1`` turns it on from the start):
  the first call of a new problem times every applicable algorithm on that call's own tensors (two
  warm-up runs each, algorithms over 3x the fastest warm-up dropped, then 3 to 15 interleaved
  runs, about 2 ms each, lower quartile; the heuristic's choice stays unless another is more
  than 5% faster) and remembers the fastest; later calls of the same problem run it
  after one hash lookup. A problem is every size and stride of the tensors (so the batch, the
  layout and views), the dtype, the op's parameters, the thread count and the instruction set.
  A forced algorithm wins over tuning. Every algorithm's workspace is bounded by design (tiles,
  never proportional to the batch), so none is left out of the timing for its memory.
- ``CONVPOOL_CPU_TUNE_CACHE=path``: the choices persist in that file, rewritten atomically after
  each new one, valid for one CPU model, ISA flag set, core count and convpool build; a file of
  another machine or build, or one that does not parse, is ignored with a warning.
- Determinism: under ``torch.use_deterministic_algorithms(True)`` nothing is timed. A problem
  tuned before (in this process or in the file) keeps its algorithm; any other runs the
  heuristic's. So a run with a given tuning file computes the same results every time.
- ``tuning_stats()``: ``(problems timed, seconds spent timing, choices known)``;
  ``clear_tuning()`` forgets this process's choices (the file's are read again).

``CONVPOOL_CPU_WINOGRAD=0|1|auto`` stays a shorthand: 0 makes ``winograd_f4x4`` inapplicable,
1 makes the heuristic prefer it wherever it applies, auto (default) uses the measured thresholds.
"""
import contextlib
import sys
import types

import torch

from .. import _C

__all__ = ["algorithms", "selected", "force", "table", "isa", "benchmark", "tuning_stats",
           "clear_tuning"]


def _op_name(op):
    if isinstance(op, str):
        return op
    qualified = getattr(op, "_qualified_op_name", None)  # OpOverloadPacket
    if qualified is None and hasattr(op, "_schema"):  # OpOverload
        qualified = op._schema.name
    if qualified is None:
        raise TypeError(f"op must be a torch.ops.convpool op or its name, but got {op!r}")
    return qualified.split("::")[-1]


def _query(op, args, kwargs, selection_may_fail=False):
    """(applicable names, selected name) of the op's CPU call, or None where no CPU kernel runs.
    With ``selection_may_fail``, a forced algorithm that cannot run the call (the op raises
    after the applicable list is recorded) gives that list and an empty selected name."""
    name = _op_name(op)
    packet = getattr(torch.ops.convpool, name, None)
    if packet is None:
        raise ValueError(f"torch.ops.convpool has no op {name!r}")
    with torch.no_grad():
        _C._cpu_query(True)
        try:
            packet(*args, **kwargs)
        except ValueError:
            record = _C._cpu_query(False)
            if selection_may_fail and record is not None:
                return record
            raise
        except BaseException:
            _C._cpu_query(False)
            raise
        return _C._cpu_query(False)


def algorithms(op, *args, **kwargs):
    """The CPU algorithms that can run ``torch.ops.convpool.<op>(*args)``, in heuristic order.

    ``op`` is the op's name (``"conv2d"``, ``"conv2d_grad_input"``, ``"conv2d_grad_weight"``,
    ``"conv2d_grad_bias"``, ``"max_pool2d"``, ``"max_pool2d_values"``,
    ``"max_pool2d_backward"``) or the op itself; the arguments are the op's own. The op's checks
    run (bad arguments raise as the op does) but nothing is computed. Returns a list of names;
    empty where no CPU kernel runs (an empty output, tensors not on the CPU). A forced algorithm
    (``force``, ``CONVPOOL_CPU_ALGO``) does not change the list, applicable or not.
    """
    record = _query(op, args, kwargs, selection_may_fail=True)
    return [] if record is None else list(record[0])


def selected(op, *args, **kwargs):
    """The CPU algorithm ``torch.ops.convpool.<op>(*args)`` runs now (the forced one where
    forced), or None where no CPU kernel runs. Raises ValueError where the forced one cannot.

    With ``benchmark`` on it names the tuned choice once the problem has been tuned; before its
    first call (the query itself times nothing) it names the heuristic's, which that first call
    may replace."""
    record = _query(op, args, kwargs)
    return None if record is None else record[1]


@contextlib.contextmanager
def force(name):
    """Run the CPU algorithm ``name`` in every op that has one of that name, inside the block.

    Raises ValueError at entry for a name no op registers, and at the call for a call it cannot
    run (the message names the applicable algorithms). Nests; restores the previous setting.
    """
    previous = _C._cpu_force()
    _C._cpu_force(name)
    try:
        yield
    finally:
        _C._cpu_force(previous)


def table():
    """Every registered CPU algorithm as ``(op, name, isa)``, isa the instruction set it needs
    (``"generic"``, ``"avx2"``, ``"avx512"`` or ``"amx"``: AVX-512 with AMX-BF16 tiles)."""
    return [tuple(entry) for entry in _C._cpu_algorithm_table()]


def isa():
    """The instruction set the CPU kernels use here: the CPU's, capped by CONVPOOL_CPU_ISA."""
    return _C._cpu_isa()


def isas():
    """The instruction sets of :func:`table` this CPU reaches, e.g. ``["generic", "avx2",
    "avx512"]``, with ``"amx"`` where the CPU has AMX-BF16, Linux granted its tile state and
    CONVPOOL_CPU_ISA leaves AVX-512 on."""
    return _C._cpu_isas()


def tuning_stats():
    """``(problems timed, seconds spent timing them, choices known)`` in this process."""
    return _C._cpu_tuning_stats()


def clear_tuning():
    """Forgets this process's tuning choices; CONVPOOL_CPU_TUNE_CACHE's are read again."""
    _C._cpu_tuning_clear()


class _Module(types.ModuleType):
    """This module, with ``benchmark`` an attribute backed by the extension (like
    torch.backends.cudnn.benchmark)."""

    @property
    def benchmark(self):
        return _C._cpu_benchmark()

    @benchmark.setter
    def benchmark(self, on):
        _C._cpu_benchmark(bool(on))


sys.modules[__name__].__class__ = _Module
