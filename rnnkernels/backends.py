"""Backend registry: which backends exist, which run here, which `auto` picks.

Names follow DESIGN.md. A backend is an object implementing the op contract
(rnnkernels.contract.Backend); everything above the contract is shared.
"""

from .cpu_backend import CpuBackend
from .reference import ReferenceBackend

BACKEND_NAMES = ("reference", "cpu", "triton", "cuda")

# Backends DESIGN.md defines that this version does not contain yet.
_NOT_IN_THIS_VERSION = {
    "triton": "this version of rnnkernels has no triton backend yet",
    "cuda": "this version of rnnkernels has no cuda backend yet",
}

# `auto` takes the first backend that runs here and supports the input.
_AUTO_ORDER = ("cuda", "triton", "cpu", "reference")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here, or cannot run this input."""


_IMPLEMENTATIONS = {"reference": ReferenceBackend(), "cpu": CpuBackend()}


def check_backend_name(name):
    """ValueError unless `name` is 'auto' or one of BACKEND_NAMES."""
    if not isinstance(name, str) or (name != "auto" and name not in BACKEND_NAMES):
        choices = ", ".join(repr(n) for n in ("auto",) + BACKEND_NAMES)
        raise ValueError(f"backend must be one of {choices}, got {name!r}")


def unavailable_reason(name):
    """Why backend `name` cannot run on this machine at all, or None."""
    if name in _NOT_IN_THIS_VERSION:
        return _NOT_IN_THIS_VERSION[name]
    return _IMPLEMENTATIONS[name].unavailable_reason()


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
    require_backend(name)
    if name == "auto":
        for candidate in _AUTO_ORDER:
            if unavailable_reason(candidate) is None:
                backend = _IMPLEMENTATIONS[candidate]
                if backend.unsupported_reason(device, dtype) is None:
                    return backend
        raise BackendUnavailableError(
            f"no rnnkernels backend runs {dtype} tensors on {device}: "
            f"{_IMPLEMENTATIONS['reference'].unsupported_reason(device, dtype)}")
    backend = _IMPLEMENTATIONS[name]
    reason = backend.unsupported_reason(device, dtype)
    if reason is not None:
        raise BackendUnavailableError(f"backend '{name}' cannot run this input: {reason}")
    return backend
