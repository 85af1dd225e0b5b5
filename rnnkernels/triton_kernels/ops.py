"""The Triton launchers as torch.library custom ops, with fake implementations,
so torch.compile traces a model using the triton backend as one graph.

Absent outputs (c_n of a GRU, db_hn without a bias, ...) are empty tensors,
as in the C++ ops of csrc/ops.cpp.
"""

import torch
from torch import Tensor

from ..contract import CELL_GATES
from . import launch


@torch.library.custom_op("rnnkernels::triton_forward", mutates_args=())
def triton_forward(cell: str, xg: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor | None, b_hn: Tensor | None,
                   w_hr: Tensor | None, lengths: Tensor | None, save: bool
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """y, h_n, c_n and the saved hs, cs, gates, aux (layouts in forward.py)."""
    return launch.forward(cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, save)


@triton_forward.register_fake
def _(cell, xg, w_hh, h0, c0, b_hn, w_hr, lengths, save):
    steps, batch, gate_width = xg.shape
    hidden, hidden_out = gate_width // CELL_GATES[cell], w_hh.shape[1]
    acc = launch.acc_dtype(xg.dtype)
    slots = steps + 1 if save else 2
    cs_steps = slots if cell == "lstm" else 0
    if cell == "gru":
        aux_shape = (steps if save else 0, batch, hidden)
    elif w_hr is not None:
        aux_shape = (slots, batch, hidden)
    else:
        aux_shape = (0,)
    return (xg.new_empty((steps, batch, hidden_out)), xg.new_empty((batch, hidden_out)),
            xg.new_empty((batch, hidden) if cell == "lstm" else (0,)),
            xg.new_empty((slots, batch, hidden_out)), xg.new_empty((cs_steps, batch, hidden), dtype=acc),
            xg.new_empty((steps if save else 0, batch, gate_width), dtype=acc), xg.new_empty(aux_shape, dtype=acc))


@torch.library.custom_op("rnnkernels::triton_backward", mutates_args=())
def triton_backward(cell: str, tbptt: int, w_hh: Tensor, w_hr: Tensor | None, lengths: Tensor | None, hs: Tensor,
                    cs: Tensor, gates: Tensor, aux: Tensor, dy: Tensor, dh_n: Tensor, dc_n: Tensor | None,
                    has_b_hn: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """dxg, dw_hh, dh0, dc0, db_hn, dw_hr; tbptt 0 means full BPTT."""
    return launch.backward(cell, tbptt, w_hh, w_hr, lengths, hs, cs, gates, aux, dy, dh_n, dc_n, has_b_hn)


@triton_backward.register_fake
def _(cell, tbptt, w_hh, w_hr, lengths, hs, cs, gates, aux, dy, dh_n, dc_n, has_b_hn):
    steps, batch, gate_width = gates.shape
    hidden = gate_width // CELL_GATES[cell]
    return (dy.new_empty((steps, batch, gate_width)), w_hh.new_empty(w_hh.shape), dy.new_empty(dh_n.shape),
            dy.new_empty((batch, hidden) if cell == "lstm" else (0,)),
            dy.new_empty((hidden,) if has_b_hn else (0,)),
            w_hr.new_empty(w_hr.shape) if w_hr is not None else dy.new_empty((0,)))
