"""CPU autotuning (convpool.backends.cpu.benchmark, CONVPOOL_CPU_TUNE_CACHE): a problem is timed
once, then its choice is looked up; the choice is one of the applicable algorithms and the result
matches torch; a new batch size, layout or thread count is a new problem; under
torch.use_deterministic_algorithms nothing is timed; the cache file persists choices, and a file
of another machine or a corrupt one is ignored with a warning."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import convpool  # noqa: F401
from convpool.backends import cpu

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = [None, [1, 1], [1, 1], [1, 1], 1]


@pytest.fixture
def tuning():
    previous = cpu.benchmark
    cpu.clear_tuning()
    cpu.benchmark = True
    yield
    cpu.benchmark = previous
    cpu.clear_tuning()


def problem(n=2, channels_last=False):
    x, w = torch.randn(n, 16, 12, 12), torch.randn(16, 16, 3, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w


def test_benchmark_flag_defaults_off_and_toggles():
    assert cpu.benchmark is False or os.environ.get("CONVPOOL_CPU_BENCHMARK")
    previous = cpu.benchmark
    cpu.benchmark = True
    assert cpu.benchmark is True
    cpu.benchmark = previous


def test_a_problem_is_timed_once_then_looked_up(tuning):
    x, w = problem()
    out = torch.ops.convpool.conv2d(x, w, *ARGS)
    problems, seconds, known = cpu.tuning_stats()
    assert (problems, known) == (1, 1) and seconds > 0
    torch.testing.assert_close(out, F.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-3)
    choice = cpu.selected("conv2d", x, w, *ARGS)
    assert choice in cpu.algorithms("conv2d", x, w, *ARGS)
    for _ in range(3):
        torch.ops.convpool.conv2d(x, w, *ARGS)
    assert cpu.tuning_stats()[:2] == (1, seconds)
    assert cpu.selected("conv2d", x, w, *ARGS) == choice


def test_batch_layout_and_threads_are_part_of_the_key(tuning):
    x, w = problem()
    torch.ops.convpool.conv2d(x, w, *ARGS)
    torch.ops.convpool.conv2d(*problem(n=3), *ARGS)
    torch.ops.convpool.conv2d(*problem(channels_last=True), *ARGS)
    assert cpu.tuning_stats()[0] == 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        torch.ops.convpool.conv2d(x, w, *ARGS)
    finally:
        torch.set_num_threads(threads)
    assert cpu.tuning_stats()[0] == 4


def test_a_single_applicable_algorithm_is_not_timed(tuning):
    x, w = torch.randn(1, 4, 9, 9, dtype=torch.float64), torch.randn(4, 4, 3, 3, dtype=torch.float64)
    args = [x, w, None, [2, 2], [1, 1], [1, 1], 1]
    assert cpu.algorithms("conv2d", *args) == ["gemm_im2col"]
    torch.ops.convpool.conv2d(*args)
    assert cpu.tuning_stats()[0] == 0


def test_forcing_wins_over_tuning(tuning):
    x, w = problem()
    with cpu.force("gemm_im2col"):
        torch.ops.convpool.conv2d(x, w, *ARGS)
        assert cpu.selected("conv2d", x, w, *ARGS) == "gemm_im2col"
    assert cpu.tuning_stats()[0] == 0


def test_deterministic_mode_times_nothing(tuning):
    x, w = problem()
    torch.ops.convpool.conv2d(x, w, *ARGS)  # tuned before: keeps its choice
    choice = cpu.selected("conv2d", x, w, *ARGS)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        x3, w3 = problem(n=3)
        out = torch.ops.convpool.conv2d(x3, w3, *ARGS)
        assert cpu.tuning_stats()[0] == 1  # the new problem was not timed...
        assert cpu.selected("conv2d", x3, w3, *ARGS) == cpu.algorithms("conv2d", x3, w3, *ARGS)[0]
        assert torch.equal(out, torch.ops.convpool.conv2d(x3, w3, *ARGS))  # ...and runs the heuristic's
        assert cpu.selected("conv2d", x, w, *ARGS) == choice
    finally:
        torch.use_deterministic_algorithms(previous)


CODE = """
import torch, convpool
from convpool.backends import cpu
x, w = torch.randn(2, 16, 12, 12), torch.randn(16, 16, 3, 3)
torch.ops.convpool.conv2d(x, w, None, [1], [1], [1], 1)
print(cpu.benchmark, cpu.tuning_stats()[0], cpu.tuning_stats()[2],
      cpu.selected("conv2d", x, w, None, [1], [1], [1], 1))
"""


def run(path, **env):
    env = dict(os.environ, CONVPOOL_CPU_BENCHMARK="1", CONVPOOL_CPU_TUNE_CACHE=str(path), **env)
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=HERE,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split(), proc.stderr


def test_the_cache_file_persists_choices(tmp_path):
    path = tmp_path / "tune.txt"
    out, _ = run(path)
    assert out[:3] == ["True", "1", "1"]
    lines = path.read_text().splitlines()
    assert lines[0] == "convpool-cpu-tune 1" and lines[1].startswith("machine ")
    assert len(lines) == 3 and lines[2].startswith("conv2d|") and lines[2].endswith(out[3])
    # A second process reads the choice instead of timing; edited, the file is what it obeys.
    other = "gemm_im2col" if out[3] != "gemm_im2col" else "winograd_f4x4"
    key = lines[2].split("\t")[0]
    path.write_text("\n".join(lines[:2] + [f"{key}\t{other}"]) + "\n")
    out, err = run(path)
    assert out == ["True", "0", "1", other] and "Warning" not in err


@pytest.mark.parametrize("content,why", [
    ("convpool-cpu-tune 1\nmachine some other CPU\nconv2d|x\tgemm_im2col\n",
     "written on another machine or convpool build"),
    ("garbage\n", "not a convpool tuning file"),
])
def test_a_foreign_or_corrupt_file_is_ignored_with_a_warning(tmp_path, content, why):
    path = tmp_path / "tune.txt"
    path.write_text(content)
    out, err = run(path)
    assert out[:3] == ["True", "1", "1"] and why in err
    assert path.read_text().startswith("convpool-cpu-tune 1\nmachine ")  # rewritten


def test_a_file_with_an_unknown_algorithm_is_ignored(tmp_path):
    path = tmp_path / "tune.txt"
    run(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [lines[2].split("\t")[0] + "\tgemm_fast"]) + "\n")
    out, err = run(path)
    assert out[:3] == ["True", "1", "1"] and "does not parse" in err
