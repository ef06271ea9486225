"""Which CUDA toolkit convpool's build uses, or why it builds the CPU kernels only: decided once.

setup.py calls `decide()` and prints `Decision.line()`; `python tools/cuda_toolkit.py` prints the
same line without building (the Makefile shows it before each build).

The toolkit is looked for where a user expects it, first found wins:
  1. CUDA_HOME, else CUDA_PATH: when set, the only candidate (an explicit choice is never replaced
     by another toolkit behind the user's back);
  2. `nvcc` on PATH, followed through symlinks; when that is a wrapper script (this project's
     machines have /usr/local/bin/nvcc running /usr/local/cuda-13.0/bin/nvcc, which makes torch's
     own guess CUDA_HOME=/usr/local), nvcc itself is asked where it lives (`nvcc -v --dryrun`
     prints its TOP folder);
  3. /usr/local/cuda.
A candidate is used only when it is usable: its bin/nvcc runs and reports a release, its
include/cuda_runtime.h and include/crt/host_config.h exist (a copy without crt/ fails in the middle
of the compile otherwise), and its major version is torch's (torch refuses a mismatch, after
minutes of compiling). torch's C++ headers also need library headers (cusparse.h, cublas_v2.h)
that a minimal toolkit lacks; they come from torch's pip CUDA wheels (nvidia/cuXX/include) of the
same major version only, placed after the toolkit's own include folder.

The architectures: TORCH_CUDA_ARCH_LIST when set; else, with a GPU visible, torch's own choice
(that GPU's); else a default list from Volta (Turing from CUDA 13, which dropped Volta) to
Hopper, plus PTX for newer GPUs.

Without a usable toolkit, or with a CPU-only torch, the build makes the CPU kernels only and says
why; CONVPOOL_FORCE_CUDA=1 turns that into a build error with the same message, and
CONVPOOL_NO_CUDA=1 skips the probe.
"""
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

DEFAULT_HOME = "/usr/local/cuda"
REQUIRED_HEADERS = ("include/cuda_runtime.h", "include/crt/host_config.h")
# Headers torch's CUDA headers include from CUDA libraries other than the runtime.
LIBRARY_HEADERS = ("cusparse.h", "cublas_v2.h")
FORCE_SWITCH = "CONVPOOL_FORCE_CUDA=1"
NO_CUDA_SWITCH = "CONVPOOL_NO_CUDA=1"
DEFAULT_ARCHS = "7.0;7.5;8.0;8.6;8.9;9.0+PTX"
DEFAULT_ARCHS_CUDA13 = "7.5;8.0;8.6;8.9;9.0+PTX"


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "0").lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class Decision:
    """build: whether the CUDA kernels are compiled. reason: why (the whole story, one sentence).
    home: the toolkit's root; version: its nvcc release ("13.0"); include_dirs: the extra include
    folders (torch's pip CUDA wheels) to pass after the toolkit's own; arch_list: the
    TORCH_CUDA_ARCH_LIST to build with, None for the visible GPUs (torch's choice)."""
    build: bool
    reason: str
    home: Optional[str] = None
    version: Optional[str] = None
    include_dirs: Tuple[str, ...] = ()
    arch_list: Optional[str] = None

    def line(self) -> str:
        if self.build:
            archs = (f"TORCH_CUDA_ARCH_LIST={self.arch_list}" if self.arch_list
                     else "the visible GPUs")
            return f"convpool: CUDA kernels: building for {archs} with {self.reason}"
        return (f"convpool: CUDA kernels: not built ({self.reason}); building the CPU kernels only"
                f" — {FORCE_SWITCH} makes this an error")


class ToolkitError(RuntimeError):
    """CONVPOOL_FORCE_CUDA=1 and no usable toolkit: the message is the reason."""


Runner = Callable[[Sequence[str]], str]


def _run(command: Sequence[str]) -> str:
    """stdout + stderr of a command; raises OSError / subprocess errors when it cannot run."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=True)
    return done.stdout + done.stderr


def nvcc_release(home: str, run: Runner = _run) -> str:
    """'13.0' from `<home>/bin/nvcc --version`; raises RuntimeError saying why not."""
    nvcc = os.path.join(home, "bin", "nvcc")
    if not os.path.isfile(nvcc):
        raise RuntimeError(f"{nvcc} does not exist")
    try:
        output = run([nvcc, "--version"])
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"{nvcc} --version failed: {error}") from None
    match = re.search(r"release (\d+)\.(\d+)", output)
    if not match:
        raise RuntimeError(f"{nvcc} --version reports no release")
    return f"{match.group(1)}.{match.group(2)}"


def home_of_nvcc(nvcc: str, run: Runner = _run) -> Optional[str]:
    """The toolkit root of an `nvcc` found on PATH. Its real path's parent folder when that holds
    the toolkit (bin/nvcc next to include/); otherwise (a wrapper script) nvcc's own answer: the
    TOP folder of `nvcc -v --dryrun`. None when neither says."""
    real = os.path.realpath(nvcc)
    home = os.path.dirname(os.path.dirname(real))
    if os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
        return home
    try:
        output = run([nvcc, "-v", "--dryrun", "-x", "cu", os.devnull, "-o", os.devnull])
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+?)\s*$", output, re.M)
    return os.path.realpath(match.group(1)) if match else None


def _problem(home: str, torch_cuda: str, run: Runner) -> Tuple[Optional[str], Optional[str]]:
    """(release, None) for a usable toolkit at `home`, else (None, what is wrong with it)."""
    for header in REQUIRED_HEADERS:
        if not os.path.isfile(os.path.join(home, header)):
            return None, f"the CUDA toolkit at {home} has no {header}"
    try:
        release = nvcc_release(home, run)
    except RuntimeError as error:
        return None, f"the CUDA toolkit at {home} is not usable: {error}"
    if release.split(".")[0] != torch_cuda.split(".")[0]:
        return None, (f"the CUDA toolkit at {home} is CUDA {release} but torch was built with "
                      f"CUDA {torch_cuda}: the major versions must match")
    return release, None


def wheel_include_dirs(major: str, package_paths: Sequence[str]) -> List[str]:
    """Include folders of torch's pip CUDA wheels for CUDA `major` (nvidia/cu13/include); wheels of
    another major version are never mixed in."""
    found = []
    for base in package_paths:
        found += sorted(glob.glob(os.path.join(base, f"cu{major}", "include")))
    return found


def _nvidia_package_paths() -> List[str]:
    try:
        import nvidia  # torch's pip CUDA wheels; absent with a CPU-only torch
    except ImportError:
        return []
    return list(nvidia.__path__)


def decide(env: Mapping[str, str], torch_version: str, torch_cuda: Optional[str],
           gpu_visible: bool = False, which: Callable[[str], Optional[str]] = shutil.which,
           run: Runner = _run, package_paths: Optional[Sequence[str]] = None,
           default_home: str = DEFAULT_HOME) -> Decision:
    """The build's CUDA decision (see the module docstring). `env` is the environment, torch_cuda
    torch.version.cuda, gpu_visible torch.cuda.is_available(); `which`, `run`, `package_paths` and
    `default_home` are the outside world, replaceable for tests. Raises ToolkitError when
    CONVPOOL_FORCE_CUDA=1 and no toolkit is usable.
    """
    decision = _decide(env, torch_version, torch_cuda, which, run,
                       _nvidia_package_paths() if package_paths is None else package_paths,
                       default_home)
    if decision.build:
        arch_list = env.get("TORCH_CUDA_ARCH_LIST") or (
            None if gpu_visible else
            DEFAULT_ARCHS_CUDA13 if int(decision.version.split(".")[0]) >= 13 else DEFAULT_ARCHS)
        decision = dataclasses.replace(decision, arch_list=arch_list)
    if not decision.build and _flag(env, "CONVPOOL_FORCE_CUDA") and not _flag(env, "CONVPOOL_NO_CUDA"):
        raise ToolkitError(f"{FORCE_SWITCH} is set but the CUDA kernels cannot be built: "
                           f"{decision.reason}")
    return decision


def _decide(env, torch_version, torch_cuda, which, run, package_paths, default_home) -> Decision:
    if _flag(env, "CONVPOOL_NO_CUDA"):
        return Decision(False, f"{NO_CUDA_SWITCH} is set")
    if torch_cuda is None:
        return Decision(False, f"torch {torch_version} is a CPU-only build")

    explicit = next((name for name in ("CUDA_HOME", "CUDA_PATH") if env.get(name)), None)
    if explicit:
        home, found_by = env[explicit], f"{explicit}={env[explicit]}"
    else:
        nvcc = which("nvcc")
        home = home_of_nvcc(nvcc, run) if nvcc else None
        if home is not None:
            found_by = f"nvcc on PATH ({nvcc})"
        elif os.path.isdir(default_home):
            home, found_by = default_home, default_home
        else:
            where = f"nvcc on PATH ({nvcc}) does not say where its toolkit is" if nvcc else \
                "no nvcc on PATH"
            return Decision(False, f"no CUDA toolkit found: CUDA_HOME and CUDA_PATH unset, "
                                   f"{where}, no {default_home}")
    home = os.path.realpath(home)
    release, problem = _problem(home, torch_cuda, run)
    if problem:
        return Decision(False, f"{problem} (found by {found_by})")

    major = release.split(".")[0]
    extra = wheel_include_dirs(major, package_paths)
    searched = [os.path.join(home, "include")] + extra
    for header in LIBRARY_HEADERS:
        if not any(os.path.isfile(os.path.join(folder, header)) for folder in searched):
            return Decision(False, f"{header}, which torch's CUDA headers include, is neither in "
                                   f"the CUDA toolkit at {home} nor in torch's pip CUDA {major} "
                                   f"wheels (found by {found_by})")
    return Decision(True, f"the CUDA {release} toolkit at {home} (found by {found_by}; torch's "
                          f"CUDA {torch_cuda})", home, release, tuple(extra))


def decide_for_this_python(env: Optional[Mapping[str, str]] = None) -> Decision:
    import torch

    return decide(os.environ if env is None else env, torch.__version__, torch.version.cuda,
                  torch.cuda.is_available())


if __name__ == "__main__":
    try:
        print(decide_for_this_python().line())
    except ToolkitError as error:
        print(f"convpool: {error}", file=sys.stderr)
        sys.exit(1)
