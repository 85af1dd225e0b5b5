"""LSTM, GRU and RNN: drop-ins for their torch.nn namesakes.

Each subclasses the torch.nn class, so the constructor, its validation,
parameter names, order and initialisation, state_dict, pickling,
flatten_parameters and weight reassignment are torch.nn's own. forward
repeats torch.nn's input handling (and its error messages) and then runs the
layers through the op contract on the selected backend.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .. import handoff
from ..backends import BackendUnavailableError, selected_backend_name
from .checks import check_attributes, check_packed, check_sequence_length
from .options import BackendOption, TbpttOption, autocast_disabled, autocast_dtype
from .stack import run_stack

_CELL_OF_MODE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
# The benchmark suite's cell names (its "rnn" is torch.nn.RNN's default, tanh).
_BENCH_CELL_OF_MODE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn_relu"}


class _RecurrentLayers(BackendOption, TbpttOption):
    """forward shared by LSTM, GRU and RNN; mixed in before the torch.nn class."""

    def _init_options(self, backend, tbptt):
        self.backend = backend
        self.tbptt = tbptt
        self.last_backend = None
        self.last_path = None

    def extra_repr(self):
        tbptt = "" if self._tbptt is None else f", tbptt={self._tbptt}"
        return super().extra_repr() + self._options_repr() + tbptt

    def _check_input_dims(self, input):
        if input.dim() not in (2, 3):
            name = self.mode if self.mode in ("LSTM", "GRU") else "RNN"
            what = "tensor " if name == "RNN" else ""
            raise ValueError(
                f"{name}: Expected input to be 2D or 3D, got {input.dim()}D {what}instead")

    def _check_hx_dims(self, hx, is_batched):
        """torch.nn's check that hx matches batched/unbatched input; returns hx batched."""
        dims = 3 if is_batched else 2
        kind = "batched 3-D" if is_batched else "unbatched 2-D"
        if self.mode == "LSTM":
            if hx[0].dim() != dims or hx[1].dim() != dims:
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {dims}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            return hx if is_batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        if hx.dim() != dims:
            raise RuntimeError(
                f"For {kind} input, hx should also be {dims}-D but got {hx.dim()}-D tensor")
        return hx if is_batched else hx.unsqueeze(1)

    def _zero_state(self, input, batch):
        directions = 2 if self.bidirectional else 1

        def zeros(size):
            return input.new_zeros(self.num_layers * directions, batch, size)

        if self.mode != "LSTM":
            return zeros(self.hidden_size)
        return zeros(self.proj_size if self.proj_size > 0 else self.hidden_size), zeros(self.hidden_size)

    def _hands_over(self, input, hx):
        """Whether `auto` runs this call on torch.nn's own implementation
        (rnnkernels/handoff.py: where a measured table says it is faster)."""
        if self._backend != "auto" or self._tbptt is not None or torch.compiler.is_compiling():
            return False
        if torch._C._are_functorch_transforms_active():  # torch.nn's layers do not vmap
            return False
        shape = handoff.call_shape(input, self.batch_first)
        if shape is None:
            return False
        data = input.data if isinstance(input, PackedSequence) else input
        device = data.device
        dtype = autocast_dtype(device.type, self._flat_weights[0].dtype) or data.dtype
        name = handoff.dtype_name(dtype)
        if name is None:
            return False
        states = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
        training = torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad for t in (data, *states, *self._flat_weights))
        call = (device.type, handoff.device_name(device), torch.get_num_threads() if device.type == "cpu" else None)
        case = (_BENCH_CELL_OF_MODE[self.mode], name, training, self.num_layers, self.bidirectional,
                isinstance(input, PackedSequence), self.proj_size > 0, shape[1], self.hidden_size, shape[0])
        try:
            return handoff.hands_over(call, case, lambda: selected_backend_name("auto", device.type, dtype))
        except BackendUnavailableError:
            return False

    def forward(self, input, hx=None):
        self._update_flat_weights()
        if self._hands_over(input, hx):
            if self.last_path != handoff.BASELINE:  # nn.Module's __setattr__ costs microseconds
                self.last_backend = self.last_path = handoff.BASELINE
            return super().forward(input, hx)
        is_lstm = self.mode == "LSTM"
        packed = isinstance(input, PackedSequence)
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
            check_packed(input, batch_sizes)
            # torch.nn runs the rows the batch sizes count and ignores any beyond
            input = input[: int(batch_sizes.sum())]
            batch = int(batch_sizes[0])
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            self._check_input_dims(input)
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            if hx is not None:
                hx = self._check_hx_dims(hx, is_batched)
            batch = input.size(batch_dim)
        given_hx = hx is not None
        if not given_hx:
            hx = self._zero_state(input, batch)
        # torch.nn checks hx after permuting it (and packed LSTM input not at
        # all); checking the caller's hx first also catches a wrong batch size.
        self.check_forward_args(input, hx, batch_sizes)
        if is_lstm and len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        if given_hx:  # as torch.nn: zero states are not permuted
            hx = self.permute_hidden(hx, sorted_indices)
        h0, c0 = hx if is_lstm else (hx, None)

        device_type = input.device.type
        amp_dtype = autocast_dtype(device_type, self._flat_weights[0].dtype)
        if amp_dtype is not None:
            input, h0 = input.to(amp_dtype), h0.to(amp_dtype)
            c0 = None if c0 is None else c0.to(amp_dtype)
        check_attributes(input, [h0] if c0 is None else [h0, c0], self._flat_weights,
                         check_param_dtype=amp_dtype is None)
        if not packed:
            check_sequence_length(input.size(1 if self.batch_first else 0))
            if self.batch_first:
                input = input.transpose(0, 1)

        with autocast_disabled(device_type, amp_dtype):
            output, h_n, c_n = run_stack(
                self, _CELL_OF_MODE[self.mode], input, batch_sizes, h0, c0, amp_dtype)

        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        else:
            if self.batch_first:
                output = output.transpose(0, 1)
            if not is_batched:
                output = output.squeeze(batch_dim)
                h_n = h_n.squeeze(1)
                c_n = None if c_n is None else c_n.squeeze(1)
        hidden = (h_n, c_n) if is_lstm else h_n
        return output, self.permute_hidden(hidden, unsorted_indices)


class LSTM(_RecurrentLayers, nn.LSTM):
    """torch.nn.LSTM on rnnkernels' fused recurrence.

    Same arguments as torch.nn.LSTM, plus keyword-only `backend` ('auto',
    'reference', 'cpu', 'triton', 'cuda') and `tbptt` (None, or k to cut the
    gradient carried through (h, c) every k steps). `last_backend` names the
    backend the last forward ran on, `last_path` its kernel path(s).
    """

    def __init__(self, *args, backend="auto", tbptt=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_options(backend, tbptt)


class GRU(_RecurrentLayers, nn.GRU):
    """torch.nn.GRU on rnnkernels' fused recurrence; extras as for LSTM."""

    def __init__(self, *args, backend="auto", tbptt=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_options(backend, tbptt)


class RNN(_RecurrentLayers, nn.RNN):
    """torch.nn.RNN (tanh or relu) on rnnkernels' fused recurrence; extras as for LSTM."""

    def __init__(self, *args, backend="auto", tbptt=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_options(backend, tbptt)
