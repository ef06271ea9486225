"""What this convpool is: versions, CPU kernels, CUDA architectures, emulator (`python -m convpool`).

The facts about the build come from the binary itself (`convpool._C._build_info()`, made of the
compiler's macros when it was compiled), not from the source tree, so a stale or foreign build
shows as what it is.
"""
import os

import torch

from . import _C

__all__ = ["build_info", "build_warnings", "format_build_info"]


def _sm_names(arch_list):
    """nvcc's __CUDA_ARCH_LIST__ ("750,860,900") as architecture names ["sm_75", "sm_86", "sm_90"]."""
    names = []
    for number in filter(None, (item.strip() for item in arch_list.split(","))):
        value = int(number)
        names.append(f"sm_{value // 100}{value % 100 // 10}")
    return names


def build_info():
    """A dict describing this convpool build and the environment it runs in:

    version / binary_version: convpool.__version__ and the version compiled into convpool._C
    torch_built / torch_running: the torch the binary was compiled against, and the one imported
    cpu_isa: the CPU GEMM kernels in use (after CONVPOOL_CPU_ISA); cpu_features: what the CPU has
    cuda: whether the CUDA kernels are compiled in; cuda_status: the build's reason for that
      decision (tools/cuda_toolkit.py); cuda_archs: their architectures ("sm_90"),
      cuda_arch_list: TORCH_CUDA_ARCH_LIST at build time, nvcc_version, torch_cuda (torch's CUDA)
    gpus: visible GPUs as (name, "sm_XY")
    emulator: whether the CUDA emulator (convpool.testing.cuda_emulation) is built
    compiler, optimized, sanitized: how the C++ was compiled
    openmp: whether the CPU kernels were compiled with OpenMP, which at::parallel_for needs to use
      more than one thread (torch.get_num_threads())
    """
    raw = _C._build_info()
    try:
        cpu_isa = _C._cpu_isa()
    except RuntimeError as error:  # a bad CONVPOOL_CPU_ISA: report it instead of failing
        cpu_isa = f"error: {error}"
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            gpus.append((torch.cuda.get_device_name(index), f"sm_{major}{minor}"))
    return {
        "version": _package_version(),
        "binary_version": raw["version"],
        "location": os.path.dirname(os.path.abspath(__file__)),
        "extension": os.path.abspath(_C.__file__),
        "torch_built": raw["torch_version"],
        "torch_running": torch.__version__,
        "cpu_isa": cpu_isa,
        "cpu_isa_cap": os.environ.get("CONVPOOL_CPU_ISA") or None,
        "cpu_features": dict(raw["cpu_features"]),
        "cuda": raw["cuda"],
        "cuda_status": raw.get("cuda_status") or None,
        "cuda_archs": _sm_names(raw["cuda_archs"]),
        "cuda_arch_list": raw["cuda_arch_list"] or None,
        "nvcc_version": raw["nvcc_version"] or None,
        "torch_cuda": torch.version.cuda,
        "gpus": gpus,
        "emulator": raw["emulator"],
        "compiler": raw["compiler"],
        "optimized": raw["optimized"],
        "sanitized": raw["sanitized"],
        "openmp": raw["openmp"],
    }


def _package_version():
    from . import __version__

    return __version__


def _gpu_supported(sm, info):
    """Whether a GPU of architecture `sm` ("sm_86") can run the compiled kernels: a cubin runs on
    its own major version with an equal or higher minor; PTX (TORCH_CUDA_ARCH_LIST "+PTX") is
    compiled by the driver for any newer GPU."""
    gpu = int(sm[3:])
    for arch in info["cuda_archs"]:
        built = int(arch[3:])
        if built // 10 == gpu // 10 and built <= gpu:
            return True
    has_ptx = "+PTX" in (info["cuda_arch_list"] or "").upper()
    return has_ptx and any(int(arch[3:]) <= gpu for arch in info["cuda_archs"])


def build_warnings(info):
    """Problems `info` (a build_info() dict) shows, as sentences; empty when all is well."""
    problems = []
    if info["torch_built"] != info["torch_running"]:
        problems.append(
            f"convpool was built against torch {info['torch_built']} but torch "
            f"{info['torch_running']} is running; rebuild convpool against this torch "
            "(pip install --no-build-isolation ...)")
    if info["binary_version"] != info["version"]:
        problems.append(
            f"the compiled extension is convpool {info['binary_version']} but the Python package "
            f"is {info['version']}: a stale build; rebuild it")
    if torch._C.has_openmp and not info["openmp"]:
        problems.append("convpool's CPU kernels were compiled without OpenMP: they run on one "
                        "thread; rebuild with this setup.py")
    for name, sm in info["gpus"]:
        if not info["cuda"]:
            problems.append(f"GPU {name} ({sm}) is visible but convpool was built without CUDA: "
                            "its ops raise on CUDA tensors")
        elif not _gpu_supported(sm, info):
            problems.append(f"GPU {name} ({sm}) is not among the compiled architectures "
                            f"({', '.join(info['cuda_archs'])}); rebuild with "
                            f"TORCH_CUDA_ARCH_LIST including {sm[3:-1]}.{sm[-1]}")
    return problems


def _yes_no(value):
    return "yes" if value else "no"


def format_build_info(info):
    """The report `python -m convpool` prints, one "topic: facts" line each."""
    lines = [f"convpool: {info['version']} ({info['location']})"]
    torch_line = f"torch: {info['torch_running']}"
    if info["torch_built"] == info["torch_running"]:
        torch_line += " (convpool built against the same)"
    else:
        torch_line += f" (convpool built against {info['torch_built']})"
    lines.append(torch_line)

    features = info["cpu_features"]
    feature_text = ", ".join(f"{label} {_yes_no(features[key])}" for key, label in
                             (("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512F"))
                             if key in features)
    cpu_line = f"CPU GEMM kernels: {info['cpu_isa']}"
    if info["cpu_isa_cap"]:
        cpu_line += f" (capped by CONVPOOL_CPU_ISA={info['cpu_isa_cap']})"
    if feature_text:
        cpu_line += f"; CPU has {feature_text}"
    lines.append(cpu_line)
    lines.append("CPU threads: " + (f"OpenMP, {torch.get_num_threads()} (torch.get_num_threads())"
                                    if info["openmp"] else "1 (built without OpenMP)"))

    if info["cuda"]:
        details = [f"TORCH_CUDA_ARCH_LIST={info['cuda_arch_list']}", f"nvcc {info['nvcc_version']}",
                   f"torch's CUDA {info['torch_cuda']}"]
        gpus = ", ".join(f"{name} ({sm})" for name, sm in info["gpus"]) or "no GPU visible"
        lines.append(f"CUDA: {' '.join(info['cuda_archs'])} ({'; '.join(details)}); {gpus}")
    else:
        reason = f" ({info['cuda_status']})" if info["cuda_status"] else ""
        lines.append(f"CUDA: not built{reason}")
    lines.append(f"CUDA emulator: {'built' if info['emulator'] else 'not built'}")
    build = ["optimized" if info["optimized"] else "not optimized"]
    if info["sanitized"]:
        build.append("AddressSanitizer")
    lines.append(f"compiler: {info['compiler']} ({', '.join(build)})")
    lines.append(f"extension: {info['extension']}")
    return "\n".join(lines)
