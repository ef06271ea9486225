"""The GPU check (tools/gpu_check.py, `make gpu-check`) cannot rot while no GPU is around: every
test it selects exists, its benchmark arguments parse, its plan prints. (`make gpu-check` without a
GPU goes further: it builds and stops at the first step that needs a device.)"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_every_selected_test_exists():
    selected = gpu_check.CUDA_TESTS + gpu_check.SANITIZER_TESTS
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *selected], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = set(done.stdout.split())
    for node in gpu_check.SANITIZER_TESTS:
        assert node in collected, node
    for node in gpu_check.CUDA_TESTS[1:]:  # parametrized: node[dtype0], ...
        assert any(name.startswith(node) for name in collected), node
    assert sum(line.startswith("tests/test_cuda.py::") for line in collected) > 100


def test_plan(tmp_path, capsys):
    plan = gpu_check.steps(str(tmp_path), gpu_visible=True)
    assert [step.name for step in plan] == ["build", "build-info", "collect", "cuda-tests",
                                            "memcheck", "racecheck", "benchmark"]
    assert [step.needs_gpu for step in plan] == [False] * 3 + [True] * 4
    build = plan[0]
    assert build.env["CONVPOOL_FORCE_CUDA"] == "1" and build.env["TORCH_CUDA_ARCH_LIST"] is None
    assert gpu_check.steps(str(tmp_path), gpu_visible=False)[0].env["TORCH_CUDA_ARCH_LIST"] == "9.0"
    for step in plan[4:6]:
        assert step.env == {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
        assert step.command[1:3] == ["--tool", step.name]
    import run as benchmark_run

    args = benchmark_run.parse_args(plan[-1].command[2:])
    assert args.device == "cuda" and args.quick and args.out == str(tmp_path / "benchmark")
    assert sum(step.timeout for step in plan) <= 3600
    assert gpu_check.main(["--plan", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(plan) and printed[3].startswith("cuda-tests [GPU]:")
    assert not list(tmp_path.iterdir())  # a plan writes nothing
