"""What a case compares: torch.nn (the baseline), every rnnkernels backend in
BACKEND_NAMES that runs here, torch.compile of the reference backend, and,
when asked for: `auto`, which runs whichever backend auto picks, or hands the
layer to torch.nn where a measured table says so (rnnkernels/handoff.py); and
'backend:path' (e.g. 'triton:persistent'), a backend with one of its kernel
paths forced through RNNKERNELS_<BACKEND>_PATH, for backends with several.

Backends are discovered, not listed: a backend added to BACKEND_NAMES shows
up in the suite, and is skipped with its own reason where it cannot run the
case's device and dtype.
"""

import contextlib
import os

import torch

from ..backends import BACKEND_NAMES, backend_implementation, unavailable_reason
from ..handoff import PATH_SEPARATOR
from .suite import DTYPES

BASELINE = "torch.nn"
COMPILED = "reference-compiled"  # torch.compile of an rnnkernels module on the reference backend
AUTO = "auto"  # an rnnkernels module left on backend="auto", as users run it


def path_names():
    """'backend:path' for each kernel path of every backend that has more than one."""
    return tuple(f"{backend}{PATH_SEPARATOR}{path}" for backend in BACKEND_NAMES
                 for paths in [getattr(backend_implementation(backend), "paths", ())] if len(paths) > 1
                 for path in paths)


def all_names():
    return (BASELINE,) + BACKEND_NAMES + (AUTO, COMPILED) + path_names()


def runs_only_when_asked(name):
    """auto and the forced paths repeat what the backends measure: run when named with --impl."""
    return name == AUTO or PATH_SEPARATOR in name


def _backend_of(name):
    return "reference" if name == COMPILED else name.split(PATH_SEPARATOR)[0]


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
    backend = _backend_of(name)
    reason = unavailable_reason(backend)
    if reason is not None:
        return f"not available here: {reason}"
    reason = backend_implementation(backend).unsupported_reason(device, DTYPES[case.dtype])
    if reason is not None:
        return reason
    # On CPU tensors the triton backend runs under the Triton interpreter, a
    # correctness tool that is orders of magnitude slower than the machine.
    if backend == "triton" and device.type == "cpu" and not requested:
        return "on a CPU it runs only in the Triton interpreter, which is for tests, not timing"
    return None


def build(name, workload):
    """(forward callable, module owning the parameters) for implementation `name`."""
    if name == BASELINE:
        return workload.torch_module, workload.torch_module
    if name == COMPILED:
        module = workload.rnnkernels_module("reference")
        return torch.compile(module), module
    module = workload.rnnkernels_module(_backend_of(name))
    return module, module


@contextlib.contextmanager
def _path_forced(name):
    backend, path = name.split(PATH_SEPARATOR)
    variable = f"RNNKERNELS_{backend.upper()}_PATH"
    saved = os.environ.get(variable)
    os.environ[variable] = path
    try:
        yield
    finally:
        if saved is None:
            del os.environ[variable]
        else:
            os.environ[variable] = saved


@contextlib.contextmanager
def running(name):
    """The settings an implementation runs under: a forced path's variable;
    for "compiled", Dynamo's allow_rnn (Dynamo treats every RNNBase subclass
    as an RNN and, unless allow_rnn is set, runs it eagerly, a graph break,
    so "compiled" would time the eager module)."""
    if PATH_SEPARATOR in name:
        with _path_forced(name):
            yield
        return
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
