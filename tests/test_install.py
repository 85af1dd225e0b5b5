"""Installing without a C++ compiler (or with RNNKERNELS_NO_EXTENSION=1)
still works and says what it skipped; the runtime side (only `reference`
available, a clear error for `cpu`) is in test_backends.py."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


@pytest.mark.parametrize("env, reason", [
    ({"CXX": "no-such-compiler"}, "no C++ compiler: 'no-such-compiler' is not on PATH"),
    ({"RNNKERNELS_NO_EXTENSION": "1"}, "RNNKERNELS_NO_EXTENSION is set"),
], ids=["no_compiler", "opted_out"])
def test_setup_skips_the_extension_and_says_so(env, reason):
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "rnnkernels"
    assert f"NOT building the C++ extension rnnkernels._C ({reason})" in result.stderr
    assert "only the reference backend will be available" in result.stderr
