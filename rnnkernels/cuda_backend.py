"""The cuda backend: the C++ ops of csrc/ (rnnkernels._C) on CUDA tensors.

The ops and their fake implementations are the cpu backend's (the same
schemas, registered for the CUDA dispatch key by csrc/cuda/*_cuda.cpp), so
this backend differs from CpuBackend only in where it runs. float32, float64,
float16 and bfloat16; cell state and gradient carries in float32 (float64 for
float64).

Two kernel paths, chosen in C++ by RNNKERNELS_CUDA_PATH (csrc/cuda/path_rule.h):
`step` (the default) runs one GEMM through ATen per step and one fused
pointwise kernel; `persistent` runs one cooperative launch with W_hh in shared
memory, h_{t-1} (dG_{t+1} in backward) staged in shared memory once per step,
tensor-core mma.sync for float16/bfloat16 (and TF32 float32) and a grid
barrier per step (no projection), and `auto` picks between them. The default
stays `step` until the persistent kernels have passed their GPU tests.

float32 follows torch.nn's RNN precision on both paths, as cuDNN does
(torch.backends.cudnn.rnn.fp32_precision; csrc/fp32_precision.h): TF32 by
default, IEEE when the user turns it off, whatever the matmul setting says.

A persistent launch whose grid barrier waits longer than
RNNKERNELS_CUDA_SPIN_LIMIT_MS (default 10000) gives up instead of hanging: its
outputs are NaN and the next call raises; RNNKERNELS_CUDA_DEBUG_SYNC=1 makes
the call itself wait and raise.
"""

import os

import torch

from . import cpu_backend
from .cpu_backend import CpuBackend

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def cuda_built():
    """Whether rnnkernels._C was built with its CUDA kernels (setup.py skips
    them without nvcc or a CUDA build of torch, or with RNNKERNELS_NO_CUDA=1)."""
    if cpu_backend.load_extension()[0] is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("rnnkernels::lstm_forward", "CUDA")


def measure_barrier_floor(steps=1000, ctas=0):
    """Microseconds per empty grid-wide barrier on the current CUDA device: a
    cooperative launch of `ctas` CTAs (0: one per SM) running 2*steps barriers,
    timed against `steps` so the launch overhead cancels. This is the per-step
    floor of a persistent recurrence. Raises RuntimeError where the cuda
    backend cannot run or the grid cannot be co-resident."""
    reason = CudaBackend().unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"measure_barrier_floor needs the cuda backend: {reason}")
    return torch.ops.rnnkernels.grid_barrier_floor(steps, ctas)


# csrc/cuda/path_rule.h's `auto` thresholds, mirrored for kernel_path.
_AUTO_MIN_STEPS, _AUTO_MAX_BATCH = 8, 256


class CudaBackend(CpuBackend):
    name = "cuda"
    paths = ("step", "persistent")

    def kernel_path(self, cell, xg, w_hh, w_hr, lengths=None):
        """The path forward takes (csrc/cuda/path_rule.h, from shapes and
        RNNKERNELS_CUDA_PATH; no launch, no sync). Under `auto` the device can
        still refuse the persistent kernel at launch (W_hh beyond its shared
        memory, a grid that cannot be co-resident), and the step path runs."""
        request = os.environ.get("RNNKERNELS_CUDA_PATH", "") or "step"
        if request == "persistent":
            return "persistent"
        if request != "auto":
            return "step"  # an unknown value is refused by forward itself
        steps, batch = xg.shape[0], xg.shape[1]
        prefers = (w_hr is None and batch >= 1 and xg.shape[2] >= 1 and steps >= _AUTO_MIN_STEPS
                   and batch <= _AUTO_MAX_BATCH)
        return "persistent" if prefers else "step"

    def unavailable_reason(self):
        # Through the module, so a test that simulates a missing extension reaches here.
        extension_error = cpu_backend.load_extension()[1]
        if extension_error is not None:
            return extension_error
        if not cuda_built():
            return ("rnnkernels._C was built without its CUDA kernels (no nvcc or a CPU build "
                    "of torch at install time, or RNNKERNELS_NO_CUDA was set); reinstall "
                    "where both exist: pip install --no-build-isolation -e .")
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        return None

    def unsupported_reason(self, device, dtype):
        if device.type != "cuda":
            return f"it runs on CUDA tensors, got tensors on {device}"
        if dtype not in _DTYPES:
            return ("it supports torch.float32, torch.float64, torch.float16 and "
                    f"torch.bfloat16, got {dtype}")
        return None
