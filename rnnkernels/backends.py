"""Backend registry: which backends exist, which run here, which `auto` picks.

Names follow DESIGN.md. A backend is an object implementing the op contract
(rnnkernels.contract.Backend); everything above the contract is shared.
"""

import importlib

import torch

BACKEND_NAMES = ("reference", "cpu", "triton", "cuda")

# Where each backend's class lives, imported on first use: importing triton or
# loading a CUDA library costs time that a CPU-only user should not pay.
_BACKEND_CLASSES = {
    "reference": ("rnnkernels.reference", "ReferenceBackend"),
    "cpu": ("rnnkernels.cpu_backend", "CpuBackend"),
    "triton": ("rnnkernels.triton_backend", "TritonBackend"),
    "cuda": ("rnnkernels.cuda_backend", "CudaBackend"),
}

# `auto` takes the first backend that runs here and supports the input.
_AUTO_ORDER = ("cuda", "triton", "cpu", "reference")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here, or cannot run this input."""


_IMPLEMENTATIONS = {}


def backend_implementation(name):
    """The backend object for `name` (one of BACKEND_NAMES), created once."""
    if name not in _IMPLEMENTATIONS:
        module_name, class_name = _BACKEND_CLASSES[name]
        _IMPLEMENTATIONS[name] = getattr(importlib.import_module(module_name), class_name)()
    return _IMPLEMENTATIONS[name]


def check_backend_name(name):
    """ValueError unless `name` is 'auto' or one of BACKEND_NAMES."""
    if not isinstance(name, str) or (name != "auto" and name not in BACKEND_NAMES):
        choices = ", ".join(repr(n) for n in ("auto",) + BACKEND_NAMES)
        raise ValueError(f"backend must be one of {choices}, got {name!r}")


def unavailable_reason(name):
    """Why backend `name` cannot run on this machine at all, or None."""
    return backend_implementation(name).unavailable_reason()


def available_backends():
    """Names of the backends that can run on this machine, in BACKEND_NAMES order."""
    return [name for name in BACKEND_NAMES if unavailable_reason(name) is None]


def require_backend(name):
    """Checks a backend a user asked for: a known name that can run here."""
    check_backend_name(name)
    if name != "auto":
        reason = unavailable_reason(name)
        if reason is not None:
            raise BackendUnavailableError(f"backend '{name}' cannot run on this machine: {reason}")


def select_backend(name, device, dtype):
    """The backend object that runs tensors of this device and dtype."""
    return backend_implementation(selected_backend_name(name, device.type, dtype))


# torch.compile runs a traced forward's Python once, at trace time: choosing a
# backend imports modules and asks the dispatcher what is registered, which
# Dynamo cannot trace. Marked constant, the choice runs eagerly while tracing
# and its result (a name) goes into the graph's guards as a constant.
@torch.compiler.assume_constant_result
def selected_backend_name(name, device_type, dtype):
    """The name of the backend that `name` ('auto' or a backend) resolves to for
    tensors on `device_type` in `dtype`; BackendUnavailableError if none can run them."""
    require_backend(name)
    device = torch.device(device_type)
    if name == "auto":
        for candidate in _AUTO_ORDER:
            if unavailable_reason(candidate) is None:
                backend = backend_implementation(candidate)
                if getattr(backend, "emulated", False):  # e.g. Triton's interpreter: for tests, never fast
                    continue
                if backend.unsupported_reason(device, dtype) is None:
                    return candidate
        raise BackendUnavailableError(
            f"no rnnkernels backend runs {dtype} tensors on {device}: "
            f"{backend_implementation('reference').unsupported_reason(device, dtype)}")
    reason = backend_implementation(name).unsupported_reason(device, dtype)
    if reason is not None:
        raise BackendUnavailableError(f"backend '{name}' cannot run this input: {reason}")
    return name
