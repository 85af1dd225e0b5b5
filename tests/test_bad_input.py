"""Bad input gets torch.nn's exception: each case runs the same call on the
torch.nn module and on its rnnkernels twin and compares type and message.

Where torch.nn's message comes from the internals of its CPU kernels rather
than from a check (DEVIATIONS), the type must match and the message is the
one torch.nn's own checks use for that mistake, naming the shapes/dtypes.
"""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import rnnkernels

TWINS = {
    "LSTM": (nn.LSTM, rnnkernels.LSTM), "GRU": (nn.GRU, rnnkernels.GRU), "RNN": (nn.RNN, rnnkernels.RNN),
    "LSTMCell": (nn.LSTMCell, rnnkernels.LSTMCell), "GRUCell": (nn.GRUCell, rnnkernels.GRUCell),
    "RNNCell": (nn.RNNCell, rnnkernels.RNNCell),
}


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


def _zeros(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


# name -> (module, constructor args, constructor kwargs, call(module))
FORWARD_CASES = {
    "lstm_4d_input": ("LSTM", (5, 4), {}, lambda m: m(_x(2, 3, 5, 1))),
    "gru_1d_input": ("GRU", (5, 4), {}, lambda m: m(_x(5))),
    "rnn_4d_input": ("RNN", (5, 4), {}, lambda m: m(_x(2, 3, 5, 1))),
    "lstm_feature_size": ("LSTM", (5, 4), {}, lambda m: m(_x(2, 3, 6))),
    "gru_feature_size_batch_first": ("GRU", (5, 4), {"batch_first": True}, lambda m: m(_x(3, 2, 6))),
    "lstm_hidden_shape": ("LSTM", (5, 4, 2), {}, lambda m: m(_x(2, 3, 5), (_zeros(2, 3, 3), _zeros(2, 3, 4)))),
    "lstm_cell_shape": ("LSTM", (5, 4, 2), {}, lambda m: m(_x(2, 3, 5), (_zeros(2, 3, 4), _zeros(2, 2, 4)))),
    "lstm_proj_hidden_shape": ("LSTM", (5, 4), {"proj_size": 2},
                               lambda m: m(_x(2, 3, 5), (_zeros(1, 3, 4), _zeros(1, 3, 4)))),
    "gru_hidden_layers": ("GRU", (5, 4), {"bidirectional": True}, lambda m: m(_x(2, 3, 5), _zeros(1, 3, 4))),
    "gru_2d_hx_batched": ("GRU", (5, 4), {}, lambda m: m(_x(2, 3, 5), _zeros(1, 4))),
    "rnn_3d_hx_unbatched": ("RNN", (5, 4), {}, lambda m: m(_x(2, 5), _zeros(1, 1, 4))),
    "lstm_2d_hx_batched": ("LSTM", (5, 4), {}, lambda m: m(_x(2, 3, 5), (_zeros(1, 4), _zeros(1, 4)))),
    "lstm_3d_hx_unbatched": ("LSTM", (5, 4), {}, lambda m: m(_x(2, 5), (_zeros(1, 1, 4), _zeros(1, 1, 4)))),
    "lstm_hx_single_tensor": ("LSTM", (5, 4, 2), {}, lambda m: m(_x(2, 3, 5), _zeros(2, 3, 4))),
    "lstm_hx_three_states": ("LSTM", (5, 4), {}, lambda m: m(_x(2, 3, 5), (_zeros(1, 3, 4),) * 3)),
    "gru_hx_tuple": ("GRU", (5, 4), {}, lambda m: m(_x(2, 3, 5), (_zeros(1, 3, 4), _zeros(1, 3, 4)))),
    "input_dtype": ("LSTM", (5, 4), {}, lambda m: m(_x(2, 3, 5, dtype=torch.float64))),
    "integer_input": ("GRU", (5, 4), {}, lambda m: m(torch.ones(2, 3, 5, dtype=torch.int64))),
    "zero_length_sequence": ("LSTM", (5, 4), {}, lambda m: m(_x(0, 3, 5))),
    "zero_length_batch_first": ("GRU", (5, 4), {"batch_first": True}, lambda m: m(_x(3, 0, 5))),
    "zero_length_unbatched": ("RNN", (5, 4), {}, lambda m: m(_x(0, 5))),
    "packed_dtype": ("GRU", (5, 4), {}, lambda m: m(pack_sequence([_x(3, 5, dtype=torch.float64)]))),
    "packed_hidden_2d": ("GRU", (5, 4), {}, lambda m: m(pack_sequence([_x(3, 5), _x(2, 5)]), _zeros(1, 4))),
    "packed_gru_feature_size": ("GRU", (5, 4), {}, lambda m: m(pack_sequence([_x(3, 6), _x(2, 6)]))),
    "packed_gru_hidden_batch": ("GRU", (5, 4), {}, lambda m: m(pack_sequence([_x(3, 5), _x(2, 5)]), _zeros(1, 3, 4))),
    "gru_hidden_dtype": ("GRU", (5, 4), {}, lambda m: m(_x(2, 3, 5), _zeros(1, 3, 4, dtype=torch.float64))),
    "rnn_hidden_dtype": ("RNN", (5, 4), {}, lambda m: m(_x(2, 3, 5), _zeros(1, 3, 4, dtype=torch.float64))),
    "lstm_hidden_dtype": ("LSTM", (5, 4), {},
                          lambda m: m(_x(2, 3, 5), (_zeros(1, 3, 4, dtype=torch.float64), _zeros(1, 3, 4)))),
    "lstm_cell_state_dtype": ("LSTM", (5, 4), {},
                              lambda m: m(_x(2, 3, 5), (_zeros(1, 3, 4), _zeros(1, 3, 4, dtype=torch.float64)))),
    "packed_lstm_feature_size": ("LSTM", (5, 4), {}, lambda m: m(pack_sequence([_x(3, 6), _x(2, 6)]))),
    "packed_lstm_hidden_batch": ("LSTM", (5, 4), {},
                                 lambda m: m(pack_sequence([_x(3, 5), _x(2, 5)]), (_zeros(1, 3, 4), _zeros(1, 3, 4)))),
    "lstm_weight_hh_dtype": ("LSTM", (5, 4), {}, lambda m: (
        setattr(m, "weight_hh_l0", nn.Parameter(m.weight_hh_l0.double())), m(_x(2, 3, 5)))),
    "gru_bias_hh_dtype": ("GRU", (5, 4), {}, lambda m: (
        setattr(m, "bias_hh_l0", nn.Parameter(m.bias_hh_l0.double())), m(_x(2, 3, 5)))),
    "packed_increasing_batch_sizes": ("GRU", (5, 4), {},
                                      lambda m: m(PackedSequence(_x(5, 5), torch.tensor([2, 3])))),
    "packed_batch_sizes_beyond_data": ("LSTM", (5, 4), {},
                                       lambda m: m(PackedSequence(_x(4, 5), torch.tensor([3, 2])))),
    "packed_float_batch_sizes": ("RNN", (5, 4), {},
                                 lambda m: m(PackedSequence(_x(5, 5), torch.tensor([3.0, 2.0])))),
    "packed_2d_batch_sizes": ("GRU", (5, 4), {}, lambda m: m(PackedSequence(_x(5, 5), torch.tensor([[3, 2]])))),
    "packed_empty": ("LSTM", (5, 4), {},
                     lambda m: m(PackedSequence(_x(0, 5), torch.tensor([], dtype=torch.int64)))),
    # cells
    "lstmcell_3d_input": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5, 1))),
    "lstmcell_3d_hx": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5), (_zeros(1, 3, 4), _zeros(3, 4)))),
    "grucell_3d_hx": ("GRUCell", (5, 4), {}, lambda m: m(_x(3, 5), _zeros(1, 3, 4))),
    "rnncell_3d_input": ("RNNCell", (5, 4), {}, lambda m: m(_x(3, 5, 1))),
    "lstmcell_feature_size": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 6))),
    "grucell_feature_size": ("GRUCell", (5, 4), {}, lambda m: m(_x(3, 6))),
    "lstmcell_hx_batch": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5), (_zeros(2, 4), _zeros(2, 4)))),
    "lstmcell_cx_batch": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5), (_zeros(3, 4), _zeros(2, 4)))),
    "lstmcell_hx_size": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5), (_zeros(3, 5), _zeros(3, 4)))),
    "lstmcell_cx_size": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5), (_zeros(3, 4), _zeros(3, 5)))),
    "lstmcell_hx_single_tensor": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5), _zeros(3, 4))),
    "grucell_hx_batch": ("GRUCell", (5, 4), {}, lambda m: m(_x(3, 5), _zeros(2, 4))),
    "grucell_hx_size": ("GRUCell", (5, 4), {}, lambda m: m(_x(3, 5), _zeros(3, 5))),
    "grucell_unbatched_input_batched_hx": ("GRUCell", (5, 4), {}, lambda m: m(_x(5), _zeros(3, 4))),
    "grucell_batched_input_unbatched_hx": ("GRUCell", (5, 4), {}, lambda m: m(_x(3, 5), _zeros(4))),
    "rnncell_hx_batch": ("RNNCell", (5, 4), {}, lambda m: m(_x(3, 5), _zeros(2, 4))),
    "lstmcell_input_dtype": ("LSTMCell", (5, 4), {}, lambda m: m(_x(3, 5, dtype=torch.float64))),
    "grucell_nobias_input_dtype": ("GRUCell", (5, 4), {"bias": False}, lambda m: m(_x(3, 5, dtype=torch.float64))),
    "grucell_hidden_dtype": ("GRUCell", (5, 4), {}, lambda m: m(_x(3, 5), _zeros(3, 4, dtype=torch.float64))),
    "rnncell_unknown_nonlinearity": ("RNNCell", (5, 4), {},
                                     lambda m: (setattr(m, "nonlinearity", "sigmoid"), m(_x(3, 5)))),
}

# Cases where torch.nn's CPU message reports its kernel's internals (oneDNN,
# a broadcast, a matmul) instead of the mistake; ours is the message
# torch.nn's own checks give for the same mistake elsewhere.
HIDDEN_DTYPE = ("Input and hidden tensors are not the same dtype, found input tensor with Float "
                "and hidden tensor with Double")
DEVIATIONS = {
    "lstm_hidden_dtype": HIDDEN_DTYPE,
    "lstm_cell_state_dtype": HIDDEN_DTYPE,
    "gru_hidden_dtype": HIDDEN_DTYPE,
    "rnn_hidden_dtype": HIDDEN_DTYPE,
    "packed_lstm_feature_size": "input.size(-1) must be equal to input_size. Expected 5, got 6",
    "packed_lstm_hidden_batch": "Expected hidden[0] size (1, 2, 4), got [1, 3, 4]",
    "lstm_weight_hh_dtype": ("Input and parameter tensors are not the same dtype, found input tensor with "
                             "Float and parameter tensor with Double"),
    "gru_bias_hh_dtype": ("Input and parameter tensors are not the same dtype, found input tensor with "
                          "Float and parameter tensor with Double"),
    "packed_increasing_batch_sizes": "PackedSequence batch_sizes must be non-increasing, got [2, 3]",
    "packed_batch_sizes_beyond_data": "PackedSequence batch_sizes sum to 5 rows, but its data has only 4",
    "packed_float_batch_sizes": ("PackedSequence batch_sizes must be a 1-D int64 tensor, got torch.float32 "
                                 "of shape [2]"),
    "packed_2d_batch_sizes": "PackedSequence batch_sizes must be a 1-D int64 tensor, got torch.int64 of shape [1, 2]",
}


def _assert_same_error(case, actual, expected, message):
    assert type(actual) is type(expected), (
        f"{case}: {type(actual).__name__}: {actual} (torch.nn: {type(expected).__name__}: {expected})")
    assert str(actual) == message, f"{case}: message {str(actual)!r}, expected {message!r}"


def _raised(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_forward_error_matches_torch_nn(case, backend):
    kind, args, kwargs, call = FORWARD_CASES[case]
    theirs_cls, ours_cls = TWINS[kind]
    theirs, ours = theirs_cls(*args, **kwargs), ours_cls(*args, **kwargs, backend=backend)
    expected, actual = _raised(lambda: call(theirs)), _raised(lambda: call(ours))
    _assert_same_error(case, actual, expected, DEVIATIONS.get(case, str(expected)))


CONSTRUCTOR_CASES = {
    "hidden_size_float": ("LSTM", (5, 4.0), {}),
    "hidden_size_zero": ("GRU", (5, 0), {}),
    "input_size_zero": ("RNN", (0, 4), {}),
    "input_size_str": ("LSTM", ("5", 4), {}),
    "num_layers_zero": ("LSTM", (5, 4, 0), {}),
    "num_layers_float": ("GRU", (5, 4, 2.0), {}),
    "dropout_negative": ("LSTM", (5, 4, 2), {"dropout": -0.1}),
    "dropout_above_one": ("GRU", (5, 4, 2), {"dropout": 1.5}),
    "dropout_bool": ("RNN", (5, 4, 2), {"dropout": True}),
    "bias_int": ("LSTM", (5, 4), {"bias": 1}),
    "batch_first_str": ("GRU", (5, 4), {"batch_first": "yes"}),
    "proj_size_negative": ("LSTM", (5, 4), {"proj_size": -1}),
    "proj_size_not_smaller": ("LSTM", (5, 4), {"proj_size": 4}),
    "gru_proj_size": ("GRU", (5, 4), {"proj_size": 2}),
    "rnn_proj_size": ("RNN", (5, 4), {"proj_size": 2}),
    "rnn_nonlinearity": ("RNN", (5, 4), {"nonlinearity": "gelu"}),
    "rnn_nonlinearity_positional": ("RNN", (5, 4, 1, "sigmoid"), {}),
    "unknown_keyword": ("LSTM", (5, 4), {"foo": 1}),
    "cell_negative_hidden": ("LSTMCell", (5, -1), {}),
    "cell_unknown_keyword": ("GRUCell", (5, 4), {"num_layers": 2}),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_CASES))
def test_constructor_error_matches_torch_nn(case):
    kind, args, kwargs = CONSTRUCTOR_CASES[case]
    theirs_cls, ours_cls = TWINS[kind]
    expected = _raised(lambda: theirs_cls(*args, **kwargs))
    actual = _raised(lambda: ours_cls(*args, **kwargs))
    _assert_same_error(case, actual, expected, str(expected))


def test_dropout_with_one_layer_warns_like_torch_nn():
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        nn.LSTM(5, 4, dropout=0.5)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        rnnkernels.LSTM(5, 4, dropout=0.5)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert len(theirs) == 1


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "4"])
def test_bad_tbptt(value):
    with pytest.raises(ValueError, match=r"tbptt must be None \(full BPTT\) or a positive int"):
        rnnkernels.LSTM(5, 4, tbptt=value)
    module = rnnkernels.GRU(5, 4)
    with pytest.raises(ValueError, match="tbptt must be None"):
        module.tbptt = value


@pytest.mark.parametrize("value", ["gpu", "CPU", None, 3])
def test_unknown_backend_name(value):
    message = r"backend must be one of 'auto', 'reference', 'cpu', 'triton', 'cuda', got"
    with pytest.raises(ValueError, match=message):
        rnnkernels.LSTM(5, 4, backend=value)
    with pytest.raises(ValueError, match=message):
        rnnkernels.GRUCell(5, 4, backend=value)
    module = rnnkernels.RNN(5, 4)
    with pytest.raises(ValueError, match=message):
        module.backend = value
    assert module.backend == "auto"
