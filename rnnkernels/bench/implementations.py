"""What a case compares: torch.nn (the baseline), every rnnkernels backend in
BACKEND_NAMES that runs here, torch.compile of the reference backend, and
(when asked for) `auto`, which runs whichever backend auto picks, or hands
the layer to torch.nn where a measured table says so (rnnkernels/handoff.py).

Backends are discovered, not listed: a backend added to BACKEND_NAMES shows
up in the suite, and is skipped with its own reason where it cannot run the
case's device and dtype.
"""

import contextlib

import torch

from ..backends import BACKEND_NAMES, backend_implementation, unavailable_reason
from .suite import DTYPES

BASELINE = "torch.nn"
COMPILED = "reference-compiled"  # torch.compile of an rnnkernels module on the reference backend
AUTO = "auto"  # an rnnkernels module left on backend="auto", as users run it


def all_names():
    return (BASELINE,) + BACKEND_NAMES + (AUTO, COMPILED)


def baseline_description(device):
    """What torch.nn runs on this device, for the table and the JSON."""
    if device.type == "cuda" and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled:
        return f"torch.nn on cuDNN {torch.backends.cudnn.version()}"
    if device.type == "cuda":
        return "torch.nn on CUDA without cuDNN"
    return "torch.nn's native CPU path"


def baseline_short_name(device):
    return "cuDNN" if device.type == "cuda" and torch.backends.cudnn.enabled else "torch.nn"


def skip_reason(name, case, device, requested):
    """Why `name` does not run `case` on `device` here, or None. `requested`:
    the user named it with --impl (which overrides the suite's own choices)."""
    if name in (BASELINE, AUTO):
        return None
    backend = "reference" if name == COMPILED else name
    reason = unavailable_reason(backend)
    if reason is not None:
        return f"not available here: {reason}"
    reason = backend_implementation(backend).unsupported_reason(device, DTYPES[case.dtype])
    if reason is not None:
        return reason
    # On CPU tensors the triton backend runs under the Triton interpreter, a
    # correctness tool that is orders of magnitude slower than the machine.
    if name == "triton" and device.type == "cpu" and not requested:
        return "on a CPU it runs only in the Triton interpreter, which is for tests, not timing"
    return None


def build(name, workload):
    """(forward callable, module owning the parameters) for implementation `name`."""
    if name == BASELINE:
        return workload.torch_module, workload.torch_module
    if name == COMPILED:
        module = workload.rnnkernels_module("reference")
        return torch.compile(module), module
    module = workload.rnnkernels_module(name)
    return module, module


@contextlib.contextmanager
def running(name):
    """The settings an implementation runs under. Dynamo treats every RNNBase
    subclass as an RNN and, unless allow_rnn is set, runs it eagerly (a
    graph break), so "compiled" would time the eager module."""
    if name != COMPILED:
        yield
        return
    import torch._dynamo

    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(allow_rnn=True):
            yield
    finally:
        torch._dynamo.reset()
