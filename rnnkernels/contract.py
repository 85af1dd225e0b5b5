"""The op contract (DESIGN.md): the one seam between modules and backends.

A backend runs one layer, one direction, one cell type of the recurrence and
nothing else: the module has already computed the input projection
``xg = x @ W_ih^T + b_ih (+ b_hh)`` for every step, and it turns ``dxg`` back
into ``dx``, ``dW_ih`` and the biases' gradients with autograd.

Shapes (T steps, B rows, H units per gate, G gates, H_out = H or the LSTM
projection size P):

    xg [T, B, G*H]   w_hh [G*H, H_out]   h0 [B, H_out]   c0 [B, H] (lstm)
    b_hn [H] (gru: last third of bias_hh, kept out of xg)
    w_hr [P, H] (lstm projection)   lengths int64 [B] (variable lengths)
    -> y [T, B, H_out], h_n [B, H_out], c_n [B, H] (lstm)

Rows with ``t >= lengths[b]`` keep their state and write zeros to y.
``tbptt=k`` cuts the gradient carried through (h, c) into step t-1 at
t = k, 2k, ...; the forward pass does not change.
"""

from typing import NamedTuple, Protocol

import torch
from torch import Tensor

CELL_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def check_tbptt(tbptt):
    """ValueError unless tbptt is None (full BPTT) or a positive int."""
    if tbptt is None:
        return
    if isinstance(tbptt, bool) or not isinstance(tbptt, int) or tbptt < 1:
        raise ValueError(
            f"tbptt must be None (full BPTT) or a positive int number of steps, got {tbptt!r}")


def check_cell(cell):
    """ValueError unless `cell` is one of CELL_GATES."""
    if cell not in CELL_GATES:
        raise ValueError(f"cell must be one of {', '.join(repr(c) for c in CELL_GATES)}, got {cell!r}")


class RecurrenceGrads(NamedTuple):
    """What a backend's backward returns; None for inputs the cell lacks."""

    dxg: Tensor
    dw_hh: Tensor
    dh0: Tensor
    dc0: Tensor | None
    db_hn: Tensor | None
    dw_hr: Tensor | None


class Backend(Protocol):
    """A set of launchers implementing the contract for some devices/dtypes.

    A backend may also define `emulated = True` when it runs correctly but far
    too slowly for real work (Triton's interpreter): `auto` then passes it over.
    """

    name: str

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run on this machine at all, or None."""

    def unsupported_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this backend cannot run tensors of this device and dtype, or None."""

    def forward(self, cell: str, xg: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor | None,
                b_hn: Tensor | None, w_hr: Tensor | None, lengths: Tensor | None,
                needs_backward: bool) -> tuple[Tensor, Tensor, Tensor | None, tuple]:
        """Returns y, h_n, c_n (None unless lstm) and the tensors backward needs."""

    def backward(self, cell: str, tbptt: int | None, saved: tuple, dy: Tensor,
                 dh_n: Tensor, dc_n: Tensor | None) -> RecurrenceGrads:
        """Gradients of the forward's inputs, with the carry cut every tbptt steps."""
