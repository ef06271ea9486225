"""The build's CUDA decision (tools/cuda_toolkit.py), on fake toolkits in a scratch folder: where it
looks, what makes a toolkit unusable, the message, and the switches. One real build of the
fallback (a CUDA_HOME without include/crt/) is in tests/test_packaging.py."""
import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import cuda_toolkit  # noqa: E402
from cuda_toolkit import Decision, ToolkitError, decide  # noqa: E402

TORCH = "2.14.1+cu130"


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_toolkit(root: Path, release="13.0", crt=True, library_headers=True) -> Path:
    """A toolkit folder whose bin/nvcc answers --version and -v --dryrun like the real one."""
    executable(root / "bin" / "nvcc", f"""#!/bin/sh
case "$*" in
  *--version*) echo "Cuda compilation tools, release {release}, V{release}.88" ;;
  *--dryrun*) echo "#$ _HERE_={root}/bin"; echo "#$ TOP={root}/bin/.."; echo "#$ INCLUDES=x" >&2 ;;
esac
""")
    include = root / "include"
    (include / "crt").mkdir(parents=True)
    (include / "cuda_runtime.h").write_text("")
    if crt:
        (include / "crt" / "host_config.h").write_text("")
    if library_headers:
        for header in cuda_toolkit.LIBRARY_HEADERS:
            (include / header).write_text("")
    return root


def no_nvcc(_name):
    return None


def test_cuda_home_without_crt_falls_back_with_the_reason(tmp_path):
    home = fake_toolkit(tmp_path / "cuda", crt=False)
    decision = decide({"CUDA_HOME": str(home)}, TORCH, "13.0", which=no_nvcc, package_paths=[],
                      default_home=str(tmp_path / "none"))
    assert not decision.build
    assert decision.reason == (f"the CUDA toolkit at {home} has no include/crt/host_config.h "
                               f"(found by CUDA_HOME={home})")
    line = decision.line()
    assert line.startswith("convpool: CUDA kernels: not built (the CUDA toolkit at")
    assert "CONVPOOL_FORCE_CUDA=1 makes this an error" in line
    # Forced, the same reason is the build error.
    with pytest.raises(ToolkitError, match=r"CONVPOOL_FORCE_CUDA=1 is set but the CUDA kernels "
                                           r"cannot be built: the CUDA toolkit at .* has no "
                                           r"include/crt/host_config.h"):
        decide({"CUDA_HOME": str(home), "CONVPOOL_FORCE_CUDA": "1"}, TORCH, "13.0",
               which=no_nvcc, package_paths=[])


def test_explicit_cuda_home_is_never_replaced_by_another_toolkit(tmp_path):
    broken = fake_toolkit(tmp_path / "broken", crt=False)
    good = fake_toolkit(tmp_path / "good")
    wrapper = executable(tmp_path / "bin" / "nvcc", f'#!/bin/sh\nexec {good}/bin/nvcc "$@"\n')
    decision = decide({"CUDA_HOME": str(broken)}, TORCH, "13.0", which=lambda _: str(wrapper),
                      package_paths=[], default_home=str(good))
    assert not decision.build and str(broken) in decision.reason


def test_nvcc_through_a_wrapper_script_on_path(tmp_path):
    toolkit = fake_toolkit(tmp_path / "opt" / "cuda-13.0")
    # /usr/local/bin/nvcc on this project's machines: a script, so nvcc's real path says nothing.
    wrapper = executable(tmp_path / "usr" / "bin" / "nvcc", f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    assert cuda_toolkit.home_of_nvcc(str(wrapper)) == str(toolkit.resolve())
    decision = decide({}, TORCH, "13.0", which=lambda _: str(wrapper), package_paths=[],
                      default_home=str(tmp_path / "none"))
    assert decision == Decision(
        True, f"the CUDA 13.0 toolkit at {toolkit.resolve()} (found by nvcc on PATH ({wrapper}); "
              f"torch's CUDA 13.0)", str(toolkit.resolve()), "13.0", (),
        cuda_toolkit.DEFAULT_ARCHS_CUDA13)
    assert decision.line() == ("convpool: CUDA kernels: building for TORCH_CUDA_ARCH_LIST="
                               f"7.5;8.0;8.6;8.9;9.0+PTX with {decision.reason}")


def test_architectures(tmp_path):
    toolkit = str(fake_toolkit(tmp_path / "cuda"))
    common = dict(which=no_nvcc, package_paths=[])
    assert decide({"CUDA_HOME": toolkit}, TORCH, "13.0", True, **common).arch_list is None
    visible = decide({"CUDA_HOME": toolkit}, TORCH, "13.0", True, **common)
    assert visible.line().startswith("convpool: CUDA kernels: building for the visible GPUs with")
    chosen = decide({"CUDA_HOME": toolkit, "TORCH_CUDA_ARCH_LIST": "8.6"}, TORCH, "13.0", True,
                    **common)
    assert chosen.arch_list == "8.6"
    cuda12 = str(fake_toolkit(tmp_path / "cuda12", release="12.8"))
    assert decide({"CUDA_HOME": cuda12}, "2.7.0+cu128", "12.8", **common).arch_list == \
        "7.0;7.5;8.0;8.6;8.9;9.0+PTX"


def test_nvcc_symlinked_on_path(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    link = tmp_path / "bin" / "nvcc"
    link.parent.mkdir()
    link.symlink_to(toolkit / "bin" / "nvcc")
    assert cuda_toolkit.home_of_nvcc(str(link), run=None) == str(toolkit)  # no need to ask nvcc


def test_default_home_when_nothing_else(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda")
    decision = decide({}, TORCH, "13.0", which=no_nvcc, package_paths=[], default_home=str(toolkit))
    assert decision.build and decision.home == str(toolkit)
    missing = decide({}, TORCH, "13.0", which=no_nvcc, package_paths=[],
                     default_home=str(tmp_path / "none"))
    assert not missing.build and missing.reason.startswith("no CUDA toolkit found: CUDA_HOME and "
                                                           "CUDA_PATH unset, no nvcc on PATH")


def test_major_version_must_match_torch(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda", release="12.8")
    decision = decide({"CUDA_PATH": str(toolkit)}, TORCH, "13.0", which=no_nvcc, package_paths=[])
    assert not decision.build
    assert (f"the CUDA toolkit at {toolkit} is CUDA 12.8 but torch was built with CUDA 13.0: "
            "the major versions must match (found by CUDA_PATH=") in decision.reason


def test_library_headers_from_the_matching_wheels_only(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda", library_headers=False)
    wheels = tmp_path / "site-packages" / "nvidia"
    for major in ("12", "13"):
        (wheels / f"cu{major}" / "include").mkdir(parents=True)
    decision = decide({"CUDA_HOME": str(toolkit)}, TORCH, "13.0", which=no_nvcc,
                      package_paths=[str(wheels)])
    assert not decision.build and "cusparse.h" in decision.reason  # neither place has it
    for header in cuda_toolkit.LIBRARY_HEADERS:
        (wheels / "cu12" / "include" / header).write_text("")
    decision = decide({"CUDA_HOME": str(toolkit)}, TORCH, "13.0", which=no_nvcc,
                      package_paths=[str(wheels)])
    assert not decision.build  # CUDA 12 wheels never serve a CUDA 13 toolkit
    for header in cuda_toolkit.LIBRARY_HEADERS:
        (wheels / "cu13" / "include" / header).write_text("")
    decision = decide({"CUDA_HOME": str(toolkit)}, TORCH, "13.0", which=no_nvcc,
                      package_paths=[str(wheels)])
    assert decision.build and decision.include_dirs == (str(wheels / "cu13" / "include"),)


def test_switches_and_cpu_torch(tmp_path):
    def must_not_run(_command):
        raise AssertionError("probed the toolkit")

    decision = decide({"CONVPOOL_NO_CUDA": "1", "CONVPOOL_FORCE_CUDA": "1"}, TORCH, "13.0",
                      which=must_not_run, run=must_not_run)
    assert decision == Decision(False, "CONVPOOL_NO_CUDA=1 is set")
    decision = decide({}, "2.14.1+cpu", None, which=must_not_run, run=must_not_run)
    assert decision == Decision(False, "torch 2.14.1+cpu is a CPU-only build")
    with pytest.raises(ToolkitError, match="torch 2.14.1\\+cpu is a CPU-only build"):
        decide({"CONVPOOL_FORCE_CUDA": "1"}, "2.14.1+cpu", None, which=must_not_run)


def test_this_machine():
    """On this project's machines: the wrapper /usr/local/bin/nvcc leads to the real toolkit."""
    torch = pytest.importorskip("torch")
    env = {key: value for key, value in os.environ.items()
           if key not in ("CUDA_HOME", "CUDA_PATH", "CONVPOOL_NO_CUDA", "CONVPOOL_FORCE_CUDA")}
    decision = cuda_toolkit.decide_for_this_python(env)
    if torch.version.cuda is None:
        assert not decision.build and "CPU-only" in decision.reason
    elif decision.build:
        home = Path(decision.home)
        assert (home / "include" / "crt" / "host_config.h").is_file()
        assert decision.version.split(".")[0] == torch.version.cuda.split(".")[0]
        assert decision.home != "/usr/local"  # torch's own guess from the wrapper script
