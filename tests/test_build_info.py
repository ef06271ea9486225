"""`python -m convpool` and convpool.build_info() report the build as it is: each fact the binary
reports is checked against an independent source (the package metadata, the running torch, the
CPU's flags, the op registrations, the CUDA code embedded in the extension file)."""
import importlib.metadata
import json
import os
import platform
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convpool
import convpool.__main__
from convpool.info import build_warnings, format_build_info

CUBIN, PTX = 2, 1  # fatbinary entry kinds


def run_main(*args, env_update=None):
    env = dict(os.environ)
    env.update(env_update or {})
    return subprocess.run([sys.executable, "-m", "convpool", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def elf_section(path, wanted):
    """The bytes of section `wanted` of a 64-bit little-endian ELF file, or None."""
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit LE ELF file"
    (section_headers,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def header(index):  # (name offset, offset in file, size)
        fields = struct.unpack_from("<IIQQQQ", data, section_headers + index * entry_size)
        return fields[0], fields[4], fields[5]

    _, names_offset, names_size = header(names_index)
    names = data[names_offset:names_offset + names_size]
    for index in range(count):
        name_at, offset, size = header(index)
        if names[name_at:names.index(b"\0", name_at)].decode() == wanted:
            return data[offset:offset + size]
    return None


def fatbin_entries(section):
    """(kind, arch) of each entry of the CUDA fatbinaries in `section` (.nv_fatbin): kind CUBIN or
    PTX, arch 90 for sm_90 / compute_90. Fatbinary header: magic 0xBA55ED50, u16 version,
    u16 header size, u64 size; each entry: u16 kind, u16 version, u32 header size, u64 payload size,
    ..., u32 arch at offset 28."""
    entries, position = [], 0
    while position + 16 <= len(section):
        magic, _, header_size, size = struct.unpack_from("<IHHQ", section, position)
        if magic != 0xBA55ED50:  # alignment padding between fatbinaries
            assert section[position:position + 8] == bytes(8), f"no fatbinary at {position}"
            position += 8
            continue
        entry, end = position + header_size, position + header_size + size
        while entry < end:
            kind, _, entry_header_size, payload_size = struct.unpack_from("<HHIQ", section, entry)
            (arch,) = struct.unpack_from("<I", section, entry + 28)
            entries.append((kind, arch))
            entry += entry_header_size + payload_size
        position = end
    return entries


def test_versions_are_the_package_and_torch():
    info = convpool.build_info()
    assert info["version"] == convpool.__version__ == importlib.metadata.version("convpool")
    assert info["binary_version"] == convpool.__version__
    # built and tested against the same torch (README's install; CI)
    assert info["torch_built"] == info["torch_running"] == torch.__version__
    assert Path(info["location"]) == Path(convpool.__file__).parent
    assert Path(info["extension"]) == Path(convpool._C.__file__).resolve()


def test_emulator_flag_is_whether_the_emulator_ops_exist():
    assert convpool.build_info()["emulator"] == convpool.testing.emulator_available()


def test_sanitized_flag():
    assert convpool.build_info()["sanitized"] == (os.environ.get("CONVPOOL_SANITIZED") == "1")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").exists(),
                    reason="reads x86 flags from /proc/cpuinfo")
def test_cpu_features_are_the_cpus():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    features = convpool.build_info()["cpu_features"]
    assert features == {name: name in flags for name in ("avx2", "fma", "avx512f")}


def test_cpu_isa_is_the_gemms_choice():
    info = convpool.build_info()
    assert info["cpu_isa"] == convpool._C._cpu_isa()
    # Without a cap the GEMM takes the best kernels the CPU runs (the ISA is fixed at first use,
    # so a fresh process for each setting).
    env = {key: value for key, value in os.environ.items() if key != "CONVPOOL_CPU_ISA"}
    result = subprocess.run([sys.executable, "-m", "convpool", "--json"], capture_output=True,
                            text=True, env=env, timeout=120, check=True)
    uncapped = json.loads(result.stdout)
    features = uncapped["cpu_features"]
    if platform.machine() in ("x86_64", "AMD64"):
        best = ("avx512" if features["avx2"] and features["fma"] and features["avx512f"] else
                "avx2" if features["avx2"] and features["fma"] else "generic")
    else:
        best = "generic"
    assert uncapped["cpu_isa"] == best and uncapped["cpu_isa_cap"] is None

    capped = run_main(env_update={"CONVPOOL_CPU_ISA": "generic"})
    assert capped.returncode == 0, capped.stderr
    assert "CPU GEMM kernels: generic (capped by CONVPOOL_CPU_ISA=generic)" in capped.stdout


def test_cuda_report_is_what_the_binary_holds():
    info = convpool.build_info()
    has_cuda_kernels = torch._C._dispatch_has_kernel_for_dispatch_key("convpool::conv2d", "CUDA")
    assert info["cuda"] == has_cuda_kernels
    section = elf_section(info["extension"], ".nv_fatbin")
    if not info["cuda"]:
        assert section is None and info["cuda_archs"] == [] and info["nvcc_version"] is None
        return
    entries = fatbin_entries(section)
    cubins = {f"sm_{arch}" for kind, arch in entries if kind == CUBIN}
    has_ptx = any(kind == PTX for kind, _ in entries)
    assert cubins == set(info["cuda_archs"]) and cubins
    assert has_ptx == ("+PTX" in info["cuda_arch_list"].upper())
    assert info["torch_cuda"] == torch.version.cuda


def test_python_m_convpool_prints_the_build():
    info = convpool.build_info()
    result = run_main()
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr  # same torch, same version: nothing to warn about
    lines = result.stdout.splitlines()
    assert lines[0] == f"convpool: {convpool.__version__} ({info['location']})"
    assert lines[1] == f"torch: {torch.__version__} (convpool built against the same)"
    assert lines[2].startswith(f"CPU GEMM kernels: {convpool._C._cpu_isa()}")
    # The thread count of a fresh process (this one's may have been changed by other tests).
    fresh_threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                   capture_output=True, text=True, timeout=120).stdout.strip()
    assert lines[3] == (f"CPU threads: OpenMP, {fresh_threads} (torch.get_num_threads())"
                        if info["openmp"] else "CPU threads: 1 (built without OpenMP)")
    if info["cuda"]:
        assert lines[4].startswith(f"CUDA: {' '.join(info['cuda_archs'])} (TORCH_CUDA_ARCH_LIST=")
    else:
        assert lines[4] == f"CUDA: not built ({info['cuda_status']})" and info["cuda_status"]
    assert lines[5] == ("CUDA emulator: built" if convpool.testing.emulator_available()
                        else "CUDA emulator: not built")
    as_json = run_main("--json")
    assert as_json.returncode == 0, as_json.stderr
    # tuples (gpus) become lists in JSON
    assert json.loads(as_json.stdout) == json.loads(json.dumps(info))


def fake_info(**changes):
    info = dict(convpool.build_info(), gpus=[], cuda=True, cuda_archs=["sm_90"],
                cuda_arch_list="9.0", nvcc_version="13.0")
    info.update(changes)
    return info


def test_warnings():
    assert build_warnings(fake_info()) == []
    other_torch = fake_info(torch_built="2.13.0")
    [warning] = build_warnings(other_torch)
    assert "built against torch 2.13.0" in warning and torch.__version__ in warning
    assert f"torch: {torch.__version__} (convpool built against 2.13.0)" in format_build_info(other_torch)
    [warning] = build_warnings(fake_info(binary_version="0.0.1"))
    assert "stale" in warning
    [warning] = build_warnings(fake_info(cuda=False, cuda_archs=[], gpus=[("H100", "sm_90")]))
    assert "built without CUDA" in warning
    # cubins run on their own major version, equal or newer minor; PTX on anything newer
    [warning] = build_warnings(fake_info(gpus=[("A100", "sm_80")]))
    assert "sm_80" in warning and "8.0" in warning
    assert build_warnings(fake_info(gpus=[("H100", "sm_90")])) == []
    assert build_warnings(fake_info(cuda_archs=["sm_86"], gpus=[("L40", "sm_89")])) == []
    assert len(build_warnings(fake_info(gpus=[("B200", "sm_100")]))) == 1
    assert build_warnings(fake_info(cuda_arch_list="9.0+PTX", gpus=[("B200", "sm_100")])) == []
    if torch._C.has_openmp:
        [warning] = build_warnings(fake_info(openmp=False))
        assert "without OpenMP" in warning and "one thread" in warning


def test_main_warns_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(convpool.__main__, "build_info", lambda: fake_info(torch_built="2.13.0"))
    assert convpool.__main__.main([]) == 0
    captured = capsys.readouterr()
    assert "convpool built against 2.13.0" in captured.out
    assert captured.err.startswith("warning: convpool was built against torch 2.13.0")
