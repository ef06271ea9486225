"""The one-command GPU check (`make gpu-check`): everything a rare GPU session must run, in order,
with every log and the benchmark report under one folder.

    python tools/gpu_check.py [--out DIR] [--plan]

Steps: build convpool for the visible GPU only (CONVPOOL_FORCE_CUDA=1: a check that quietly built
the CPU kernels would prove nothing), `python -m convpool`, collect the selected tests, then the
steps that need a GPU: tests/test_cuda.py with the CUDA autocast and determinism tests,
compute-sanitizer memcheck and racecheck on a small subset (PYTORCH_NO_CUDA_MEMORY_CACHING=1, so
the sanitizer sees every allocation), and `benchmarks/run.py --device cuda --quick`. Sized for
about 8 minutes on one H200 with 16 cores; each step has its own time limit.

Without a visible GPU (a dry run) it runs every step up to the first that needs one, so the
build, the test selection and the tools are checked everywhere, and lists the rest as not run.
`--plan` prints the steps without running any. Writes DIR/report.md and DIR/results.json (one
entry a step: status, seconds, log), the logs DIR/NN-step.log, the test results as JUnit XML and
the benchmark's own report, JSON and PNGs in DIR/benchmark/. Exits 1 if a step that ran failed.
"""
import argparse
import dataclasses
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import cuda_toolkit  # noqa: E402

# What runs on the GPU. The CUDA tests: every parity case of the emulated suite on the real
# kernels, streams and grid limits, plus the CUDA rows of the autocast and determinism suites.
CUDA_TESTS = ["tests/test_cuda.py",
              "tests/test_amp.py::test_autocast_cuda_net_matches_torch",
              "tests/test_deterministic.py::test_deterministic_mode_cuda"]
# Under compute-sanitizer every kernel launch is instrumented (10-100x slower): a few cases that
# together launch every kernel (fprop/dgrad/wgrad tiles in float32 and on tensor cores, depthwise,
# grad_bias, pool forward and backward).
SANITIZER_TESTS = ["tests/test_cuda.py::test_conv2d[basic-float32-nchw]",
                   "tests/test_cuda.py::test_conv2d[tiles-float16-channels_last]",
                   "tests/test_cuda.py::test_conv2d[depthwise-float32-nchw]",
                   "tests/test_cuda.py::test_max_pool2d[overlap-torch.float32-nchw]"]
ARCH_WITHOUT_GPU = "9.0"  # a dry run compiles for the H200s this check is meant for


@dataclasses.dataclass
class Step:
    name: str
    command: List[str]
    needs_gpu: bool
    timeout: int  # seconds
    env: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)  # None: unset it
    status: str = "not run"
    seconds: float = 0.0
    log: Optional[str] = None
    note: str = ""


def find_compute_sanitizer() -> Optional[str]:
    """compute-sanitizer on PATH, else in the toolkit the build uses (bin/ or its own folder)."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    try:
        home = cuda_toolkit.decide_for_this_python(dict(os.environ, CONVPOOL_FORCE_CUDA="0")).home
    except Exception:  # noqa: BLE001  (no torch, no toolkit: the step reports it)
        home = None
    for folder in filter(None, [home, cuda_toolkit.DEFAULT_HOME]):
        for candidate in ("bin/compute-sanitizer", "compute-sanitizer/compute-sanitizer"):
            path = os.path.join(folder, candidate)
            if os.access(path, os.X_OK):
                return path
    return None


def pytest_command(tests, *extra):
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *tests]


def steps(out: str, gpu_visible: bool) -> List[Step]:
    sanitizer = find_compute_sanitizer() or "compute-sanitizer"
    no_caching = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    # With a GPU visible torch compiles for it alone (TORCH_CUDA_ARCH_LIST unset).
    arch = {"TORCH_CUDA_ARCH_LIST": None if gpu_visible else ARCH_WITHOUT_GPU}
    return [
        Step("build", [sys.executable, "-m", "pip", "install", "-v", "--no-build-isolation",
                       "--no-deps", "-e", ROOT], False, 900,
             dict(arch, CONVPOOL_FORCE_CUDA="1", CONVPOOL_NO_CUDA=None, CONVPOOL_BUILD_EMU=None)),
        Step("build-info", [sys.executable, "-m", "convpool"], False, 120),
        Step("collect", pytest_command(CUDA_TESTS + SANITIZER_TESTS, "--collect-only"), False, 300),
        Step("cuda-tests", pytest_command(CUDA_TESTS, "-rs",
                                          f"--junitxml={os.path.join(out, 'cuda-tests.xml')}"),
             True, 420),
        Step("memcheck", [sanitizer, "--tool", "memcheck", "--error-exitcode", "1",
                          "--target-processes", "all"] + pytest_command(SANITIZER_TESTS),
             True, 420, no_caching),
        Step("racecheck", [sanitizer, "--tool", "racecheck", "--error-exitcode", "1",
                           "--target-processes", "all"] + pytest_command(SANITIZER_TESTS),
             True, 420, no_caching),
        Step("benchmark", [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"),
                           "--device", "cuda", "--quick", "--out", os.path.join(out, "benchmark")],
             True, 600),
    ]


def run_step(step: Step, index: int, out: str) -> None:
    step.log = f"{index:02d}-{step.name}.log"
    env = dict(os.environ)
    for key, value in step.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    start = time.monotonic()
    with open(os.path.join(out, step.log), "w") as log:
        log.write("$ " + " ".join(step.command) + "\n")
        log.flush()
        try:
            # A session of its own: a step over its limit is stopped with everything it started
            # (the build's compilers, the sanitizer's target processes).
            process = subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:  # e.g. compute-sanitizer missing
            process, step.status = None, f"failed ({error})"
        if process is not None:
            try:
                code = process.wait(timeout=step.timeout)
                step.status = "passed" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                step.status = f"failed (over its {step.timeout} s limit)"
    step.seconds = time.monotonic() - start
    if step.name == "cuda-tests" and step.status == "passed":
        # A GPU check that skipped its GPU tests checked nothing.
        with open(os.path.join(out, step.log)) as log:
            tail = log.read()[-2000:]
        if " skipped" in tail:
            step.status, step.note = "failed (tests skipped)", "see the -rs lines of the log"


def write_report(out: str, all_steps: List[Step], gpu: str, started: str) -> None:
    results = {"started": started, "gpu": gpu, "python": sys.version.split()[0],
               "steps": [dataclasses.asdict(step) for step in all_steps]}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = [f"# GPU check, {started}", "", f"GPU: {gpu}", "",
             "| step | status | seconds | log |", "|---|---|---:|---|"]
    for step in all_steps:
        lines.append(f"| {step.name} | {step.status}{' — ' + step.note if step.note else ''} | "
                     f"{step.seconds:.0f} | {step.log or ''} |")
    if os.path.exists(os.path.join(out, "benchmark", "report.md")):
        lines += ["", "Benchmark: [benchmark/report.md](benchmark/report.md)"]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parser.add_argument("--out", default=os.path.join(
        ROOT, "benchmarks", "results", "gpu-check-" + started[:10]))
    parser.add_argument("--plan", action="store_true", help="print the steps, run none")
    args = parser.parse_args(argv)

    import torch

    gpu_visible = torch.cuda.is_available()
    gpu = (f"{torch.cuda.get_device_name(0)} (sm_{''.join(map(str, torch.cuda.get_device_capability(0)))})"
           if gpu_visible else "none visible (dry run: the steps that need a GPU are not run)")
    out = os.path.abspath(args.out)
    plan = steps(out, gpu_visible)
    if args.plan:
        for step in plan:
            env = " ".join(f"{k}={'(unset)' if v is None else v}" for k, v in step.env.items())
            print(f"{step.name}{' [GPU]' if step.needs_gpu else ''}: {env} {' '.join(step.command)}")
        return 0

    os.makedirs(out, exist_ok=True)
    print(f"gpu-check: GPU {gpu}; writing {out}")
    failed = False
    for index, step in enumerate(plan, 1):
        if step.needs_gpu and not gpu_visible:
            step.status = "not run: no GPU visible"
            continue
        if failed:
            step.status = "not run: an earlier step failed"
            continue
        run_step(step, index, out)
        print(f"gpu-check: {step.name}: {step.status} ({step.seconds:.0f} s, {step.log})", flush=True)
        # Later steps need the build; the test and sanitizer steps stand on their own.
        failed = failed or (step.status != "passed" and step.name in ("build", "build-info", "collect"))
        if step.status != "passed":
            step.note = step.note or "see its log"
    write_report(out, plan, gpu, started)
    for step in plan:
        if step.status.startswith("not run"):
            print(f"gpu-check: {step.name}: {step.status}")
    print(f"gpu-check: wrote {out}/report.md and results.json")
    return 1 if any(step.status.startswith("failed") for step in plan) else 0


if __name__ == "__main__":
    sys.exit(main())
