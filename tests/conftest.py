"""Shared fixtures: every test runs with the compiled ops' outputs poisoned
with NaN, and the `backend` fixture runs a test on each backend of this suite.

Without a CUDA device the triton backend runs under Triton's interpreter
(TRITON_INTERPRET=1, set here before anything imports triton), so it joins
the CPU backends; the interpreter is slow, so the heaviest matrices run a
fixed sample of their triton cases by default and the rest under `-m slow`.

Set RNNKERNELS_REQUIRE_CPU_BACKEND=1 (the Makefile's `test` target does) to
make a missing C++ extension or a missing triton fail the run instead of
skipping their tests.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rnnkernels.backends import unavailable_reason  # noqa: E402 - after TRITON_INTERPRET is settled
from rnnkernels.testing import poisoned_outputs  # noqa: E402

REQUIRE_CPU_BACKEND = os.environ.get("RNNKERNELS_REQUIRE_CPU_BACKEND") == "1"
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def backend_param(name):
    """A pytest param for backend `name`, skipped openly when it cannot run here."""
    reason = unavailable_reason(name)
    if reason is None or (name in ("cpu", "triton") and REQUIRE_CPU_BACKEND):
        return pytest.param(name, id=name)
    return pytest.param(name, id=name, marks=pytest.mark.skip(reason=f"backend {name}: {reason}"))


# The backends whose kernels run on CPU tensors here.
CPU_BACKENDS = [backend_param("reference"), backend_param("cpu")]
if TRITON_INTERPRETED:
    CPU_BACKENDS.append(backend_param("triton"))

# Test files whose triton cases run one in TRITON_SAMPLE_EVERY by default (in
# collection order, coprime to the matrices' axis lengths so the sample
# crosses every axis); the others are marked slow.
TRITON_SAMPLED_FILES = ("test_module_parity.py", "test_random_parity.py")
TRITON_SAMPLE_EVERY = 41
# Tests whose triton case alone takes a minute or more under the interpreter:
# slow for triton, default for the other backends.
TRITON_SLOW_TESTS = ("test_module_gradgradcheck_bidirectional_stack",)


def pytest_collection_modifyitems(config, items):
    seen = 0
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("backend") != "triton":
            continue
        if item.originalname in TRITON_SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        elif item.path.name in TRITON_SAMPLED_FILES:
            if seen % TRITON_SAMPLE_EVERY:
                item.add_marker(pytest.mark.slow)
            seen += 1


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _poison_compiled_outputs():
    with poisoned_outputs():
        yield
