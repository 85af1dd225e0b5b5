"""The triton backend: the op contract on the Triton kernels of triton_kernels/.

On a CUDA GPU it runs CUDA tensors in float32, float16, bfloat16 and float64.
With TRITON_INTERPRET=1 set before triton is imported, Triton's interpreter
runs the same kernels on CPU tensors (slow; this is how the tests run without
a GPU). The interpreter computes bfloat16 wrongly, so that combination is
refused rather than run.
"""

import torch

from .contract import CELL_GATES, RecurrenceGrads

_GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_INTERPRETER_DTYPES = (torch.float32, torch.float16, torch.float64)


def _import_problem():
    """Why the kernels cannot be imported here, or None."""
    try:
        import triton  # noqa: F401 - only whether it imports matters here
    except ImportError as error:
        return f"triton is not installed ({error})"
    return None


class TritonBackend:
    name = "triton"
    paths = ("step", "step-graph", "sequence", "persistent")

    def kernel_path(self, cell, xg, w_hh, w_hr, lengths=None):
        """The path forward takes (launch.choose_path: shapes, dtype, mode,
        RNNKERNELS_TRITON_PATH and a measured table; no launch, no sync); the
        persistent path with its forward's number of programs, e.g.
        'persistent(P=3)'."""
        from .triton_kernels import persistent_launch
        from .triton_kernels.launch import choose_path, is_interpreted

        hidden = xg.shape[2] // CELL_GATES[cell]
        training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xg, w_hh, w_hr))
        path = choose_path(cell, xg.shape[1], hidden, w_hh.shape[1], xg.dtype, xg.device, xg.shape[0], training,
                           lengths is not None)
        if path == "persistent":
            units = persistent_launch.block_u(cell, False, is_interpreted())
            return f"persistent(P={persistent_launch.programs(hidden, w_hh.shape[1], units)})"
        return path

    @property
    def emulated(self):
        """True under TRITON_INTERPRET=1: correct but slow, so `auto` passes it over."""
        from .triton_kernels.launch import is_interpreted

        return is_interpreted()

    def unavailable_reason(self):
        problem = _import_problem()
        if problem is not None:
            return problem
        from .triton_kernels.launch import is_interpreted

        if not is_interpreted() and not torch.cuda.is_available():
            return ("it needs a CUDA GPU; set TRITON_INTERPRET=1 before triton is imported to run "
                    "its kernels on CPU tensors instead (slow, for testing)")
        return None

    def unsupported_reason(self, device, dtype):
        from .triton_kernels.launch import is_interpreted

        if is_interpreted():
            if device.type != "cpu":
                return f"under TRITON_INTERPRET=1 it runs on CPU tensors, got tensors on {device}"
            if dtype not in _INTERPRETER_DTYPES:
                return ("under TRITON_INTERPRET=1 it supports torch.float32, torch.float16 and "
                        f"torch.float64 (the interpreter computes bfloat16 wrongly), got {dtype}")
            return None
        if device.type != "cuda":
            return f"it runs on CUDA tensors, got tensors on {device}"
        if dtype not in _GPU_DTYPES:
            return f"it supports torch.float32, float16, bfloat16 and float64, got {dtype}"
        return None

    def forward(self, cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, needs_backward):
        from .triton_kernels import ops  # noqa: F401 - registers torch.ops.rnnkernels.triton_*

        if lengths is not None and lengths.device != xg.device:
            # the op checks lengths' values only where reading them costs no sync: do it
            # here, on the CPU where the modules keep them, before the copy
            from .triton_kernels.checks import check_length_values

            check_length_values(lengths, xg.shape[0])
            lengths = lengths.to(xg.device)
        y, h_n, c_n, hs, cs, gates, aux = torch.ops.rnnkernels.triton_forward(
            cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, needs_backward)
        saved = (w_hh, w_hr, lengths, hs, cs, gates, aux, b_hn)
        return y, h_n, c_n if cell == "lstm" else None, saved

    def backward(self, cell, tbptt, saved, dy, dh_n, dc_n):
        w_hh, w_hr, lengths, hs, cs, gates, aux, b_hn = saved
        dxg, dw_hh, dh0, dc0, db_hn, dw_hr = torch.ops.rnnkernels.triton_backward(
            cell, tbptt or 0, w_hh, w_hr, lengths, hs, cs, gates, aux, dy, dh_n,
            dc_n if cell == "lstm" else None, b_hn is not None)
        return RecurrenceGrads(dxg, dw_hh, dh0, dc0 if cell == "lstm" else None,
                               db_hn if b_hn is not None else None, dw_hr if w_hr is not None else None)


def measure_triton_barrier_floor(steps=1000, programs=0):
    """Microseconds per empty Triton grid barrier on the current CUDA device, the
    per-step floor of the persistent path (beside cuda_backend.measure_barrier_floor):
    `programs` programs (0: one per SM) in one cooperative launch."""
    from .triton_kernels.persistent_launch import measure_barrier_floor

    return measure_barrier_floor(steps, programs)
