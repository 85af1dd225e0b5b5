"""LSTMCell, GRUCell and RNNCell: drop-ins for their torch.nn namesakes.

A cell is one step of the op contract (T = 1) on the selected backend.
Constructor, parameters and state_dict are torch.nn's (subclassing);
forward repeats torch.nn's input handling and error messages.
"""

from torch import nn

from ..function import apply_recurrence, kernel_path
from .checks import check_cell_hidden, check_cell_input, check_matmul_dtype
from .options import BackendOption, autocast_disabled, autocast_dtype
from .stack import project_input, recurrent_bias


class _Cell(BackendOption):
    """The step shared by the three cells; mixed in before the torch.nn class."""

    def _init_options(self, backend):
        self.backend = backend
        self.last_backend = None
        self.last_path = None

    def extra_repr(self):
        return super().extra_repr() + self._options_repr()

    def _check_dims(self, input, hx, cls_name):
        if input.dim() not in (1, 2):
            raise ValueError(f"{cls_name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"{cls_name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")

    def _batched_state(self, input, hx, is_batched):
        """hx as [B, H] for the batched `input`; zeros when not given."""
        if hx is None:
            return input.new_zeros(input.size(0), self.hidden_size)
        return hx if is_batched else hx.unsqueeze(0)

    def _step(self, cell, input, h0, c0=None):
        """(h_1, c_1) for batched input [B, I], h0 [B, H] (c0 [B, H] for lstm)."""
        check_cell_input(input, self.weight_ih.size(1))
        hidden_size = self.weight_hh.size(1)
        states = [h0] if c0 is None else [h0, c0]
        for label, state in enumerate(states):
            check_cell_hidden(input, state, hidden_size, label)
        device_type = input.device.type
        amp_dtype = autocast_dtype(device_type, self.weight_ih.dtype)
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        if amp_dtype is None:
            check_matmul_dtype(input, self.weight_ih, self.bias_ih)
            for state in states:
                check_matmul_dtype(state, self.weight_hh, self.bias_hh)
        else:  # under autocast torch.nn's matmuls cast instead of failing
            input, *states = (t.to(amp_dtype) for t in [input] + states)
            weights = [None if w is None else w.to(amp_dtype) for w in weights]
        w_ih, w_hh, b_ih, b_hh = weights
        with autocast_disabled(device_type, amp_dtype):
            backend = self._select_backend(input)
            xg = project_input(backend, cell, input, w_ih, b_ih, b_hh).unsqueeze(0)
            self._record_paths([kernel_path(backend, cell, xg, w_hh, None)])
            _, h, c = apply_recurrence(
                backend, cell, None, xg, w_hh, states[0], states[1] if len(states) == 2 else None,
                recurrent_bias(cell, b_hh), None, None)
        return h, c


class LSTMCell(_Cell, nn.LSTMCell):
    """torch.nn.LSTMCell on rnnkernels; keyword-only `backend` as for rnnkernels.LSTM."""

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_options(backend)

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = self._batched_state(input, None, is_batched)
            hx = (zeros, zeros)
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        if not isinstance(hx, (tuple, list)):
            raise TypeError(
                f"lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, "
                f"not {type(hx).__name__}")
        if len(hx) != 2:
            raise RuntimeError("lstm_cell expects two hidden states")
        h, c = self._step("lstm", input, hx[0], hx[1])
        if not is_batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c


class GRUCell(_Cell, nn.GRUCell):
    """torch.nn.GRUCell on rnnkernels; keyword-only `backend` as for rnnkernels.LSTM."""

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_options(backend)

    def forward(self, input, hx=None):
        self._check_dims(input, hx, "GRUCell")
        is_batched = input.dim() == 2
        input = input if is_batched else input.unsqueeze(0)
        h, _ = self._step("gru", input, self._batched_state(input, hx, is_batched))
        return h if is_batched else h.squeeze(0)


class RNNCell(_Cell, nn.RNNCell):
    """torch.nn.RNNCell on rnnkernels; keyword-only `backend` as for rnnkernels.LSTM."""

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_options(backend)

    def forward(self, input, hx=None):
        self._check_dims(input, hx, "RNNCell")
        is_batched = input.dim() == 2
        input = input if is_batched else input.unsqueeze(0)
        state = self._batched_state(input, hx, is_batched)
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        h, _ = self._step(f"rnn_{self.nonlinearity}", input, state)
        return h if is_batched else h.squeeze(0)
