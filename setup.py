"""Builds convpool._C: the CPU kernels always, the CUDA kernels when a usable CUDA toolkit is found
(tools/cuda_toolkit.py decides, and the build prints its decision in one line).

Environment (all optional; README's two commands set none of them):
  CONVPOOL_FORCE_CUDA=1  no usable toolkit is a build error instead of a CPU-only build
  CONVPOOL_NO_CUDA=1     never build the CUDA kernels (no probe)
  CONVPOOL_BUILD_EMU=1   also build the CUDA emulator (runs the CUDA kernels on CPU tensors; tests)
  CONVPOOL_DEBUG=1       -O0 -g
  CONVPOOL_SANITIZE=1    AddressSanitizer + UndefinedBehaviorSanitizer on the C++ (CPU and emulator)
                         code; run with the sanitizer runtimes preloaded (see .ci/sanitize)
  CUDA_HOME / CUDA_PATH  the toolkit to use (else nvcc on PATH, else /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST   GPU architectures (unset: the visible GPU's, else tools/cuda_toolkit.py's list)
"""
import glob
import json
import os
import re
import sys

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import cuda_toolkit  # noqa: E402  (tools/cuda_toolkit.py: the CUDA decision)



def flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def sources(*patterns):
    """Sources found from this file's folder (whatever the working directory), given relative to
    it as setuptools requires."""
    found = []
    for pattern in patterns:
        found += sorted(glob.glob(os.path.join(ROOT, pattern)))
    return [os.path.relpath(path, ROOT) for path in found]


def package_version():
    """convpool.__version__, the one place the version is written (pyproject reads it too)."""
    with open(os.path.join(ROOT, "src", "convpool", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def string_macro(name, value):
    """-DNAME="value" for the C++ compiler (ops.cpp's build info): a JSON string of ASCII text is a
    valid C string literal. Passed as a flag, not a define_macro, so nvcc never sees the quotes."""
    return f"-D{name}={json.dumps(value, ensure_ascii=True)}"


def cuda_decision(cuda_sources):
    """tools/cuda_toolkit.py's decision, printed as one line of build output; the toolkit it
    chose replaces torch's own guess (which takes /usr/local for a wrapper /usr/local/bin/nvcc)."""
    if not cuda_sources:
        if flag("CONVPOOL_FORCE_CUDA"):
            raise cuda_toolkit.ToolkitError("CONVPOOL_FORCE_CUDA=1 but this tree has no CUDA sources")
        decision = cuda_toolkit.Decision(False, "no CUDA sources in this tree")
    else:
        decision = cuda_toolkit.decide_for_this_python()  # ToolkitError under CONVPOOL_FORCE_CUDA
    print(decision.line(), file=sys.stderr)
    if decision.build:
        os.environ["CUDA_HOME"] = decision.home
        cpp_extension.CUDA_HOME = decision.home
    return decision


def extension():
    cpp_sources = sources("csrc/*.cpp", "csrc/cpu/*.cpp", "csrc/cpu/*/*.cpp")
    cuda_sources = sources("csrc/cuda/*.cu", "csrc/cuda/*.cpp")
    assert cpp_sources, f"no C++ sources found under {ROOT}/csrc"
    debug = flag("CONVPOOL_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    extra_compile_args = {"cxx": opt + ["-fdiagnostics-color=always"]}
    extra_link_args = []
    if flag("CONVPOOL_SANITIZE"):
        # -fno-wrapv: Python's CFLAGS carry -fwrapv, which defines signed overflow and so turns
        # off UBSan's signed-integer-overflow check (found by the canary in .ci/sanitize).
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-wrapv", "-fno-omit-frame-pointer", "-g"]
        extra_compile_args["cxx"] = ["-O1"] + sanitize + ["-fdiagnostics-color=always"]
        extra_link_args += ["-fsanitize=address,undefined"]
        cpp_sources += sources("csrc/sanitize/*.cpp")  # the canaries .ci/sanitize must see reported
    if torch._C.has_openmp:
        # at::parallel_for is inline: without -fopenmp its OpenMP body compiles to a plain serial
        # loop and every CPU kernel runs on one thread whatever torch.set_num_threads says. The
        # OpenMP runtime itself is torch's (libgomp.so.1, already loaded by torch).
        extra_compile_args["cxx"] += ["-fopenmp"]
        extra_link_args += ["-fopenmp"]
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    if flag("CONVPOOL_BUILD_EMU"):
        cpp_sources += sources("csrc/emu/*.cpp")
        define_macros.append(("CONVPOOL_WITH_EMU", "1"))

    # What `python -m convpool` reports: the versions this binary is built from and against.
    extra_compile_args["cxx"] += [string_macro("CONVPOOL_VERSION", package_version()),
                                  string_macro("CONVPOOL_TORCH_VERSION", torch.__version__)]

    cuda = cuda_decision(cuda_sources)
    # What `python -m convpool` says of CUDA when it is not built: the decision's reason.
    extra_compile_args["cxx"].append(string_macro("CONVPOOL_CUDA_STATUS", cuda.reason))
    if cuda.build:
        if cuda.arch_list:  # None: torch compiles for the visible GPUs
            os.environ["TORCH_CUDA_ARCH_LIST"] = cuda.arch_list
        extra_compile_args["cxx"].append(string_macro(
            "CONVPOOL_CUDA_ARCH_LIST", cuda.arch_list or "visible GPUs"))
        # After the toolkit's own include folder (torch adds it): cusparse.h & co. from torch's
        # pip CUDA wheels of the toolkit's major version.
        include_dirs += list(cuda.include_dirs)
        define_macros.append(("CONVPOOL_WITH_CUDA", "1"))
        extra_compile_args["nvcc"] = opt + ["-lineinfo"]
        return cpp_extension.CUDAExtension(
            "convpool._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    return cpp_extension.CppExtension(
        "convpool._C",
        cpp_sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    )


os.chdir(ROOT)  # the relative source paths above are relative to here
os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 2))

setup(
    packages=find_packages("src"),
    package_dir={"": "src"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
