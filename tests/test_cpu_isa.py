"""The portable CPU kernels (CONVPOOL_CPU_ISA=generic) give the same results as the vectorized
ones: run the max_pool2d and conv2d parity tests again in a process that forces them."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("tests", ["test_max_pool2d.py", "test_conv2d.py::test_matches_torch"])
def test_generic_isa_parity(tests):
    env = dict(os.environ, CONVPOOL_CPU_ISA="generic")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             os.path.join(HERE, tests)], env=env, cwd=HERE,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
