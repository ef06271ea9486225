"""The portable CPU kernels (CONVPOOL_CPU_ISA=generic) give the same results as the vectorized
ones: run the max_pool2d, conv2d and depthwise parity tests again in a process that forces them;
and the AVX2 max_pool2d and depthwise kernels again on a CPU whose default is AVX-512."""
import os
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
