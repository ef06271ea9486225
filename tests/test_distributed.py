"""DistributedDataParallel (gloo, 2 processes on CPU) trains a converted model exactly as a single
process does on the combined batch: after every SGD step the parameters agree."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import convpool
import ddp_worker

WORLD_SIZE = 2
TIMEOUT_S = 120  # a bound, never reached in a normal run (~10 s)


def run_ranks(tmp_path):
    """Starts the ranks as separate processes and returns each one's parameter history."""
    here = os.path.dirname(os.path.abspath(__file__))
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(convpool.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root, here, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    store = tmp_path / "store"
    outs = [tmp_path / f"rank{rank}.pt" for rank in range(WORLD_SIZE)]
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(here, "ddp_worker.py"), str(rank), str(WORLD_SIZE),
         str(store), str(outs[rank])], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for rank in range(WORLD_SIZE)]
    try:
        logs = [p.communicate(timeout=TIMEOUT_S)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n{log}"
    return [torch.load(out) for out in outs]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ddp_gloo_matches_single_process(tmp_path):
    histories = run_ranks(tmp_path)

    model = ddp_worker.make_model()
    optimizer = ddp_worker.make_optimizer(model)
    initial = ddp_worker.parameters_of(model)
    for step, (x, target) in enumerate(ddp_worker.combined_batches()):
        ddp_worker.train_step(model, optimizer, x, target)
        expected = ddp_worker.parameters_of(model)
        for rank_history in histories:
            assert len(rank_history) == ddp_worker.STEPS
            assert len(rank_history[step]) == len(expected)
            for got, want in zip(rank_history[step], expected):
                # Gradients averaged over ranks vs. one mean over the combined batch: only the
                # rounding of the float64 sums differs.
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        for a, b in zip(*(h[step] for h in histories)):
            assert torch.equal(a, b)  # DDP keeps the replicas bitwise in sync
    # Training moved every parameter: the comparison is not of untouched initial values.
    assert all(not torch.equal(p, q) for p, q in zip(expected, initial))
