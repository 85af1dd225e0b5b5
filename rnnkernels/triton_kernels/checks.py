"""Argument checks of the triton ops, with the cpu backend's messages
(csrc/cpu/common.h): a bad call raises RuntimeError naming the operand and
the shapes instead of reaching a kernel with wrong strides."""

import torch

from ..contract import CELL_GATES


def _require(condition, message):
    if not condition:
        raise RuntimeError(message)


def _operand(t, name, sizes, xg):
    _require(t.device == xg.device, f"rnnkernels triton backend: {name} is on {t.device} but xg is on {xg.device}")
    _require(t.dtype == xg.dtype, f"rnnkernels triton backend: {name} has dtype {t.dtype} but xg has dtype {xg.dtype}")
    _require(list(t.shape) == list(sizes),
             f"rnnkernels triton backend: {name} has shape {list(t.shape)}, expected {list(sizes)}")


# The kernels compute element offsets in int32 (t * B * G * H and the like).
INDEX_LIMIT = 2**31
# Row offsets are formed for a whole row tile before masking: allow for the overhang.
_ROW_OVERHANG = 64


def check_index_range(steps, batch, gate_width, hidden_out):
    """RuntimeError unless every offset into the kernels' largest buffers (xg,
    gates, dG [T, B, G*H]; hs [T+1, B, H_out]; W_hh [G*H, H_out]) fits int32."""
    largest = max((steps + 1) * (batch + _ROW_OVERHANG) * max(gate_width, hidden_out), gate_width * hidden_out)
    _require(largest < INDEX_LIMIT,
             f"rnnkernels triton backend: T={steps}, B={batch}, G*H={gate_width}, H_out={hidden_out} index "
             f"{largest} elements, past the kernels' int32 offsets (2**31); split the batch or the sequence")


def check_forward(cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths):
    """The shapes of the op contract (rnnkernels/contract.py); returns (T, B, H, H_out)."""
    gates = CELL_GATES[cell]
    _require(xg.dim() == 3, f"{cell}: xg must be [T, B, {gates}*H], got shape {list(xg.shape)}")
    _require(xg.shape[0] > 0, "Expected sequence length to be larger than 0 in RNN")
    _require(xg.shape[2] % gates == 0,
             f"{cell}: xg's last dimension {xg.shape[2]} is not a multiple of the {gates} gates")
    _require(w_hh.dim() == 2, f"{cell}: w_hh must be 2-D, got shape {list(w_hh.shape)}")
    steps, batch, hidden = xg.shape[0], xg.shape[1], xg.shape[2] // gates
    hidden_out = w_hh.shape[1]
    _operand(w_hh, "w_hh", (gates * hidden, hidden_out), xg)
    check_index_range(steps, batch, gates * hidden, hidden_out)
    if w_hr is not None:
        _require(cell == "lstm", f"{cell}: only lstm takes a projection w_hr")
        _operand(w_hr, "w_hr", (hidden_out, hidden), xg)
    else:
        _require(hidden_out == hidden, f"{cell}: w_hh has shape {list(w_hh.shape)}, which needs a projection "
                                       f"w_hr [{hidden_out}, {hidden}]")
    _operand(h0, "h0", (batch, hidden_out), xg)
    if cell == "lstm":
        _require(c0 is not None, "lstm: c0 is required")
        _operand(c0, "c0", (batch, hidden), xg)
    if b_hn is not None:
        _require(cell == "gru", f"{cell}: only gru takes b_hn")
        _operand(b_hn, "b_hn", (hidden,), xg)
    if lengths is not None:
        _require(lengths.dtype == torch.int64 and lengths.dim() == 1 and lengths.shape[0] == batch
                 and lengths.device == xg.device,
                 f"rnnkernels triton backend: lengths must be an int64 tensor of shape [{batch}] on {xg.device}, "
                 f"got {lengths.dtype} of shape {list(lengths.shape)} on {lengths.device}")
    return steps, batch, hidden, hidden_out


def check_length_values(lengths, steps):
    """Each row's length within [0, T]; read where lengths live on the CPU (no device sync)."""
    if lengths is None or lengths.device.type != "cpu":
        return
    bad = ((lengths < 0) | (lengths > steps)).nonzero()
    if bad.numel():
        row = int(bad[0, 0])
        raise RuntimeError(f"rnnkernels triton backend: lengths[{row}] = {int(lengths[row])} "
                           f"is outside [0, {steps}]")
