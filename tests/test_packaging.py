"""Packaging: `python -m build --no-isolation` makes an sdist that carries every C++/CUDA file and
a wheel (built from that sdist) with the extension and the package's Python files, right metadata
and no tests; the wheel installs in a fresh venv that sees torch but not this checkout, and works.

One CPU-only build, from a copy of the tree so the editable build is left alone: it is also the
real build of the CUDA fallback, with CUDA_HOME pointing at a broken toolkit (no include/crt/), so
it must warn, build the CPU kernels alone and say why in `python -m convpool`. About a minute or
two: marked `packaging`."""
import email.parser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import convpool

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
VERSION = convpool.__version__
# Build switches of the surrounding build (CI's editable install) that must not leak into this one.
BUILD_SWITCHES = ("CONVPOOL_FORCE_CUDA", "CONVPOOL_NO_CUDA", "CONVPOOL_BUILD_EMU", "CONVPOOL_DEBUG",
                  "CONVPOOL_SANITIZE", "CONVPOOL_CPU_ISA", "CONVPOOL_REQUIRE_EMU", "PYTHONPATH",
                  "CUDA_HOME", "CUDA_PATH", "TORCH_CUDA_ARCH_LIST")


def csrc_files():
    """Every C++/CUDA source and header of the tree, relative to it."""
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / "csrc").rglob("*")
                  if path.suffix in (".h", ".cuh", ".cu", ".cpp"))


def clean_env(**extra):
    env = {key: value for key, value in os.environ.items() if key not in BUILD_SWITCHES}
    env.update(extra)
    return env


def expected_cuda_reason(broken_home):
    """What the build must say for CUDA_HOME=broken_home (tools/cuda_toolkit.py's wording)."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return (f"the CUDA toolkit at {broken_home} has no include/crt/host_config.h "
            f"(found by CUDA_HOME={broken_home})")


@pytest.fixture(scope="module")
def broken_cuda_home(tmp_path_factory):
    """A CUDA toolkit copy without include/crt/: the case that used to fail mid-compile."""
    home = tmp_path_factory.mktemp("broken-cuda")
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("")
    (home / "bin").mkdir()
    return home


@pytest.fixture(scope="module")
def dist(tmp_path_factory, broken_cuda_home):
    """(sdist, wheel) built by `python -m build --no-isolation` from a copy of the tree, with the
    broken toolkit as CUDA_HOME: a CPU-only build with the warning."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".pytest_cache",
        ".hypothesis"))
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"),
         str(source)], capture_output=True, text=True, timeout=900,
        env=clean_env(CUDA_HOME=str(broken_cuda_home)))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    # The decision, in one line of build output (once for the sdist's build, once for the wheel's).
    warning = (f"convpool: CUDA kernels: not built ({expected_cuda_reason(broken_cuda_home)}); "
               "building the CPU kernels only — CONVPOOL_FORCE_CUDA=1 makes this an error")
    assert warning in (result.stdout + result.stderr).splitlines()
    [sdist] = (work / "dist").glob("*.tar.gz")
    [wheel] = (work / "dist").glob("*.whl")
    return sdist, wheel


def test_sdist_carries_the_sources(dist):
    sdist, _ = dist
    assert sdist.name == f"convpool-{VERSION}.tar.gz"
    top = f"convpool-{VERSION}/"
    with tarfile.open(sdist) as archive:
        names = {name[len(top):] for name in archive.getnames() if name.startswith(top)}
    missing = [name for name in csrc_files() if name not in names]
    assert not missing, f"not in the sdist: {missing}"
    assert any(name.endswith(".cu") for name in names)  # although this build had no CUDA
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "PKG-INFO",
                 "tools/cuda_toolkit.py",
                 "src/convpool/__init__.py", "src/convpool/__main__.py", "tests/test_conv2d.py",
                 "examples/digits.py"):
        assert name in names
    assert not [name for name in names if name.endswith((".so", ".o", ".pyc", ".png"))]
    assert not [name for name in names if name.startswith(("build/", ".venv", ".git/"))]


def test_wheel_contents_and_metadata(dist):
    _, wheel = dist
    python_tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    # A platform wheel for this interpreter (it holds a compiled extension), not py3-none-any.
    assert re.fullmatch(rf"convpool-{re.escape(VERSION)}-{python_tag}-{python_tag}-\w+\.whl",
                        wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.parser.Parser().parsestr(
            archive.read(f"convpool-{VERSION}.dist-info/METADATA").decode())
    package = sorted(name for name in names if not name.startswith(f"convpool-{VERSION}.dist-info/"))
    extensions = [name for name in package if re.fullmatch(r"convpool/_C\..*\.so", name)]
    assert len(extensions) == 1, package
    source = ROOT / "src" / "convpool"
    python_files = sorted(f"convpool/{path.relative_to(source).as_posix()}"
                          for path in source.rglob("*.py") if "__pycache__" not in path.parts)
    assert sorted(set(package) - set(extensions)) == python_files  # and nothing else: no tests

    assert metadata["Name"] == "convpool" and metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == ">=3.9"
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert set(metadata.get_all("Provides-Extra")) == {"test", "bench", "examples"}
    requires = metadata.get_all("Requires-Dist")
    assert "torch>=2.4" in requires
    assert 'build; extra == "test"' in requires and 'scikit-image; extra == "examples"' in requires
    assert "# convpool" in metadata.get_payload()  # README as the long description


SMOKE_TEST = textwrap.dedent("""
    import importlib.metadata, sys
    import torch, torch.nn.functional as F
    import convpool
    assert convpool.__file__.startswith(sys.prefix), convpool.__file__   # the installed wheel
    assert importlib.metadata.version("convpool") == convpool.__version__
    torch.manual_seed(0)
    x = torch.randn(2, 4, 11, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    kwargs = dict(stride=2, padding=1, dilation=2, groups=2)
    y = convpool.conv2d(x, w, b, **kwargs)
    y_ref = F.conv2d(x, w, b, **kwargs)
    torch.testing.assert_close(y, y_ref)
    grads = torch.autograd.grad(y.sum(), (x, w, b))
    grads_ref = torch.autograd.grad(y_ref.sum(), (x, w, b))
    for got, expected in zip(grads, grads_ref):
        torch.testing.assert_close(got, expected)
    values, indices = convpool.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    values_ref, indices_ref = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert torch.equal(values, values_ref) and torch.equal(indices, indices_ref)
    print("smoke test passed:", convpool.__file__)
""")


def test_wheel_works_in_a_fresh_venv(dist, broken_cuda_home, tmp_path):
    _, wheel = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip())
    # torch (and its dependencies) from this environment, as a plain path entry: .pth files in it
    # are not run, so the editable convpool installed there stays invisible.
    torch_site = Path(torch.__file__).resolve().parent.parent
    (site_packages / "torch_from_the_test_env.pth").write_text(f"{torch_site}\n")
    env = clean_env()
    run = dict(capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    before = subprocess.run([python, "-c", "import torch, convpool"], **run)
    assert before.returncode != 0 and "No module named 'convpool'" in before.stderr

    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-deps", "--no-index", str(wheel)], **run)
    assert install.returncode == 0, install.stdout + install.stderr

    smoke = subprocess.run([python, "-c", SMOKE_TEST], **run)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert f"smoke test passed: {site_packages / 'convpool' / '__init__.py'}" in smoke.stdout

    report = subprocess.run([python, "-m", "convpool"], **run)
    assert report.returncode == 0, report.stderr
    assert "warning" not in report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == f"convpool: {VERSION} ({site_packages / 'convpool'})"
    assert lines[1] == f"torch: {torch.__version__} (convpool built against the same)"
    assert f"CUDA: not built ({expected_cuda_reason(broken_cuda_home)})" in lines
    assert "CUDA emulator: not built" in lines
