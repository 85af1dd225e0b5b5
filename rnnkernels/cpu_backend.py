"""The cpu backend: launchers for the C++ ops in csrc/ (rnnkernels._C).

The ops are registered with torch.library (csrc/ops.cpp); this file adds
their fake implementations, so torch.compile can trace them, and maps the op
contract onto them. float32 and float64 on CPU tensors; bfloat16 and float16
too, computed as the reference backend does (float32 state, accumulation and
saved gates; h rounded to the input dtype every step).
"""

import importlib.util

import torch

from . import cpu_projection
from .contract import RecurrenceGrads

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def load_extension():
    """(rnnkernels._C, None) when the extension is loaded, else (None, why not)."""
    return _EXTENSION, _LOAD_ERROR


class CpuBackend:
    name = "cpu"
    paths = ("loop",)

    def kernel_path(self, cell, xg, w_hh, w_hr, lengths=None):
        return "loop"

    def input_projection(self, x, weight, bias):
        """The module's xg = x W_ih^T + b (see cpu_projection): the 16-bit GEMMs
        for bfloat16/float16 where torch's own 16-bit matmul is slow."""
        return cpu_projection.project(x, weight, bias)

    def unavailable_reason(self):
        return load_extension()[1]

    def unsupported_reason(self, device, dtype):
        if device.type != "cpu":
            return f"it runs on CPU tensors, got tensors on {device}"
        if dtype not in _DTYPES:
            return ("it supports torch.float32, torch.float64, torch.bfloat16 and "
                    f"torch.float16, got {dtype}")
        return None

    def forward(self, cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, needs_backward):
        ops = torch.ops.rnnkernels
        if cell == "lstm":
            y, h_n, c_n, gates, cells = ops.lstm_forward(
                xg, w_hh, h0, c0, w_hr, lengths, needs_backward)
            return y, h_n, c_n, (w_hh, h0, c0, w_hr, lengths, _states(y, needs_backward),
                                 gates, cells)
        if cell == "gru":
            y, h_n, gates, hn = ops.gru_forward(xg, w_hh, h0, b_hn, lengths, needs_backward)
            return y, h_n, None, (w_hh, h0, b_hn, lengths, _states(y, needs_backward), gates, hn)
        y, h_n = ops.rnn_forward(xg, w_hh, h0, lengths, cell == "rnn_relu")
        return y, h_n, None, (w_hh, h0, lengths, _states(y, needs_backward))

    def backward(self, cell, tbptt, saved, dy, dh_n, dc_n):
        ops = torch.ops.rnnkernels
        cut = tbptt or 0
        if cell == "lstm":
            w_hh, h0, c0, w_hr, lengths, y, gates, cells = saved
            dxg, dw_hh, dh0, dc0, dw_hr = ops.lstm_backward(
                dy, dh_n, dc_n, w_hh, h0, c0, w_hr, lengths, y, gates, cells, cut)
            return RecurrenceGrads(dxg, dw_hh, dh0, dc0, None, dw_hr if w_hr is not None else None)
        if cell == "gru":
            w_hh, h0, b_hn, lengths, y, gates, hn = saved
            dxg, dw_hh, dh0, db_hn = ops.gru_backward(
                dy, dh_n, w_hh, h0, lengths, y, gates, hn, b_hn is not None, cut)
            return RecurrenceGrads(dxg, dw_hh, dh0, None, db_hn if b_hn is not None else None, None)
        w_hh, h0, lengths, y = saved
        dxg, dw_hh, dh0 = ops.rnn_backward(dy, dh_n, w_hh, h0, lengths, y, cell == "rnn_relu", cut)
        return RecurrenceGrads(dxg, dw_hh, dh0, None, None, None)


def _states(y, needs_backward):
    """The per-step states backward reads (h_{t-1}, and the RNN's activation).

    The saved-tensor rule: nothing saved may alias an output, because callers
    modify outputs in place (`y += 1`) as torch.nn allows. For every row
    active at step t, y[t] is its state, so a copy of y is all backward needs.
    """
    return y.clone() if needs_backward else y.new_empty((0,))


def _register_fakes():
    """Shape functions of the C++ ops (see csrc/ops.cpp for the schemas)."""
    register = torch.library.register_fake
    empty = torch.Tensor.new_empty

    def state(like, shape):
        """A saved per-step buffer: float32 for 16-bit inputs on the CPU; the
        CUDA kernels (the same ops on CUDA tensors) keep the input dtype."""
        sixteen_bit = like.dtype in (torch.bfloat16, torch.float16)
        dtype = torch.float32 if sixteen_bit and like.device.type == "cpu" else like.dtype
        return like.new_empty(shape, dtype=dtype)

    @register("rnnkernels::lstm_forward")
    def _lstm_forward(xg, w_hh, h0, c0, w_hr, lengths, training):
        steps, batch, gates = xg.shape
        hidden, hidden_out = gates // 4, w_hh.shape[1]
        saved = steps if training else 1
        return (empty(xg, (steps, batch, hidden_out)), empty(xg, (batch, hidden_out)),
                empty(xg, (batch, hidden)), state(xg, (saved, batch, gates)),
                state(xg, (saved, batch, hidden)))

    @register("rnnkernels::lstm_backward")
    def _lstm_backward(dy, dh_n, dc_n, w_hh, h0, c0, w_hr, lengths, y, gates, cells, tbptt):
        dw_hr = empty(dy, w_hr.shape) if w_hr is not None else empty(dy, (0,))
        return (empty(dy, gates.shape), empty(dy, w_hh.shape), empty(dy, h0.shape),
                empty(dy, c0.shape), dw_hr)

    @register("rnnkernels::gru_forward")
    def _gru_forward(xg, w_hh, h0, b_hn, lengths, training):
        steps, batch, gates = xg.shape
        saved = steps if training else 1
        return (empty(xg, (steps, batch, gates // 3)), empty(xg, h0.shape),
                state(xg, (saved, batch, gates)), state(xg, (saved, batch, gates // 3)))

    @register("rnnkernels::gru_backward")
    def _gru_backward(dy, dh_n, w_hh, h0, lengths, y, gates, hn, has_b_hn, tbptt):
        db_hn = empty(dy, (h0.shape[1],)) if has_b_hn else empty(dy, (0,))
        return empty(dy, gates.shape), empty(dy, w_hh.shape), empty(dy, h0.shape), db_hn

    @register("rnnkernels::rnn_forward")
    def _rnn_forward(xg, w_hh, h0, lengths, relu):
        return empty(xg, xg.shape), empty(xg, h0.shape)

    @register("rnnkernels::rnn_backward")
    def _rnn_backward(dy, dh_n, w_hh, h0, lengths, y, relu, tbptt):
        return empty(dy, dy.shape), empty(dy, w_hh.shape), empty(dy, h0.shape)

    @register("rnnkernels::linear16")
    def _linear16(x, weight, bias):
        return empty(x, (*x.shape[:-1], weight.shape[0]))

    @register("rnnkernels::linear16_backward")
    def _linear16_backward(dy, x, weight, output_mask):
        def wanted(i, shape):
            return empty(x, shape) if output_mask[i] else empty(x, (0,))
        return wanted(0, x.shape), wanted(1, weight.shape), wanted(2, (weight.shape[0],))


# Loaded at import, not on first use: torch.compile traces select_backend()
# and must find plain module state there, not a loader to run.
try:
    from . import _C as _EXTENSION
except ImportError as error:
    _EXTENSION = None
    if importlib.util.find_spec(f"{__package__}._C") is None:
        _LOAD_ERROR = ("the C++ extension rnnkernels._C is not built (the install found no C++ "
                       "compiler, or RNNKERNELS_NO_EXTENSION was set); reinstall from a source "
                       "checkout where one exists: pip install --no-build-isolation -e .")
    else:
        _LOAD_ERROR = (f"the C++ extension rnnkernels._C is built but does not load ({error}); "
                       "rebuild it against this torch: pip install --no-build-isolation -e .")
else:
    _LOAD_ERROR = None
    _register_fakes()
