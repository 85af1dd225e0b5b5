"""Shared fixtures: every test runs with the compiled ops' outputs poisoned
with NaN, and the `backend` fixture runs a test on each backend of this suite.

Set RNNKERNELS_REQUIRE_CPU_BACKEND=1 (the Makefile's `test` target does) to
make a missing C++ extension fail the run instead of skipping its tests.
"""

import os

import pytest

from rnnkernels.backends import unavailable_reason
from rnnkernels.testing import poisoned_outputs

REQUIRE_CPU_BACKEND = os.environ.get("RNNKERNELS_REQUIRE_CPU_BACKEND") == "1"


def backend_param(name):
    """A pytest param for backend `name`, skipped openly when it cannot run here."""
    reason = unavailable_reason(name)
    if reason is None or (name == "cpu" and REQUIRE_CPU_BACKEND):
        return pytest.param(name, id=name)
    return pytest.param(name, id=name, marks=pytest.mark.skip(reason=f"backend {name}: {reason}"))


# The backends whose kernels run on CPU tensors in this version.
CPU_BACKENDS = [backend_param("reference"), backend_param("cpu")]


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _poison_compiled_outputs():
    with poisoned_outputs():
        yield
