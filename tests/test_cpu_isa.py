"""The portable CPU kernels (CONVPOOL_CPU_ISA=generic) give the same results as the vectorized
ones: run the max_pool2d, conv2d and depthwise parity tests again in a process that forces them;
and the AVX2 max_pool2d and depthwise kernels again on a CPU whose default is AVX-512. And the
build keeps vector code where it belongs: no weak (inline, shared) function outside an ISA
namespace holds AVX instructions, so no generic caller can be linked to an AVX-512 copy."""
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("isa,tests", [("generic", "test_max_pool2d.py"),
                                      ("generic", "test_conv2d.py::test_matches_torch"),
                                      ("avx2", "test_max_pool2d.py"),
                                      ("generic", "test_depthwise.py"),
                                      ("avx2", "test_depthwise.py")])
def test_isa_parity(isa, tests):
    env = dict(os.environ, CONVPOOL_CPU_ISA=isa)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             os.path.join(HERE, tests)], env=env, cwd=HERE,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def shared_functions_with_vector_code(path):
    """The weak functions of the shared object `path`, demangled, that hold VEX / EVEX encoded
    instructions (or ymm, zmm, mask registers) and are not in an avx2 / avx512 namespace; None
    without binutils."""
    nm, objdump, cxxfilt = shutil.which("nm"), shutil.which("objdump"), shutil.which("c++filt")
    if not (nm and objdump and cxxfilt):
        return None
    listing = subprocess.run([nm, "--defined-only", path], capture_output=True, text=True,
                             check=True, timeout=300).stdout
    weak = {fields[2] for fields in map(str.split, listing.splitlines())
            if len(fields) == 3 and fields[1] in ("W", "V")}
    disassembly = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-j", ".text", path],
                                 capture_output=True, text=True, check=True, timeout=600).stdout
    vector = re.compile(r":\s+v[a-z]|%[yz]mm|%k[1-7]")  # VEX / EVEX encoded, or their registers
    found, name = set(), None
    for line in disassembly.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            name = header.group(1)
        elif name in weak and name not in found and vector.search(line):
            found.add(name)
    demangled = subprocess.run([cxxfilt], input="\n".join(sorted(found)), capture_output=True,
                               text=True, check=True, timeout=60).stdout.splitlines()
    return [d for d in demangled if d and not re.search(r"::(avx2|avx512)::", d)]


def test_no_shared_inline_function_holds_vector_code():
    """A file compiled for an ISA (depthwise/avx512.cpp, say) emits the inline functions it uses
    as weak symbols, and the linker keeps one copy for every caller. Were a torch or std inline
    function compiled for AVX-512 there, generic code could call that copy and die of an illegal
    instruction on an AVX2 machine. So every weak function with vector code must be in an
    avx2 / avx512 namespace of ours (the library is otherwise baseline x86-64: SSE2, no VEX)."""
    import convpool._C as ext
    bad = shared_functions_with_vector_code(ext.__file__)
    if bad is None:
        pytest.skip("needs binutils (nm, objdump, c++filt)")
    assert not bad, bad[:20]
