"""The keyword-only extras rnnkernels modules add to their torch.nn twins.

`backend` (every module) picks the implementation of the op contract;
`tbptt` (sequence modules) truncates backpropagation through the recurrent
state. Both are validated when set, at construction or later.
"""

import contextlib

import torch

from ..backends import require_backend, select_backend
from ..contract import check_tbptt


class BackendOption:
    """Adds `backend`, `last_backend` (the backend the last forward ran on) and
    `last_path` (its kernel path(s) in that forward, e.g. 'loop' or 'step')."""

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, name):
        require_backend(name)
        self._backend = name

    def _select_backend(self, tensor):
        backend = select_backend(self._backend, tensor.device, tensor.dtype)
        self.last_backend = backend.name
        return backend

    def _record_paths(self, paths):
        self.last_path = ", ".join(dict.fromkeys(paths))

    def _options_repr(self):
        return "" if self._backend == "auto" else f", backend={self._backend!r}"


class TbpttOption:
    """Adds `tbptt`: None for full BPTT, k to cut the carried gradient every k steps."""

    @property
    def tbptt(self):
        return self._tbptt

    @tbptt.setter
    def tbptt(self, tbptt):
        check_tbptt(tbptt)
        self._tbptt = tbptt


def autocast_dtype(device_type, weight_dtype):
    """The dtype a layer computes in under autocast, None when autocast is off.

    torch.nn runs RNNs in the autocast dtype on CUDA (cuDNN is on autocast's
    lower-precision list) and in the weights' dtype on the CPU.
    """
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type) if device_type == "cuda" else weight_dtype


def autocast_disabled(device_type, amp_dtype):
    """Inside a layer, everything is already cast: autocast must not re-cast it."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)
