"""Corners of the drop-in where a new user found rnnkernels differing from
torch.nn: in-place ops on outputs, hidden_size=0 cells, PackedSequences that
torch.nn accepts although malformed, and the checks of rnnkernels.recurrence."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import rnnkernels
from helpers import MODULE_KINDS, make_cell_twins, make_op_inputs, make_twins
from tolerance import assert_close


def _in_place(out):
    out += 1
    F.relu(out, inplace=True)
    return out


@pytest.mark.parametrize("kind", sorted(MODULE_KINDS))
def test_in_place_ops_on_outputs(kind, backend):
    """Backward never reads a tensor the caller got back, so changing one in
    place is safe on every backend (torch.nn allows it except for its fp32
    oneDNN LSTM)."""
    theirs, ours = make_twins(kind, 3, 4, 2, backend=backend)
    x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for module in (theirs, ours):
        leaf = x.clone().requires_grad_()
        out, hidden = module(leaf)
        states = hidden if isinstance(hidden, tuple) else (hidden,)
        loss = _in_place(out).pow(2).sum()
        for state in states:
            state.mul_(2)
            loss = loss + state.sum()
        loss.backward()
        grads.append(leaf.grad)
    assert_close("grad input", grads[1], grads[0])


def test_in_place_on_float32_output(backend):
    gru = rnnkernels.GRU(3, 4, backend=backend)
    x = torch.randn(5, 2, 3, requires_grad=True)
    _in_place(gru(x)[0]).sum().backward()
    assert x.grad is not None and not torch.isnan(x.grad).any()


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_cells_with_hidden_size_zero(kind, backend):
    theirs, ours = make_cell_twins(kind, 3, 0, backend=backend)
    x = torch.randn(2, 3, dtype=torch.float64)
    for module in (theirs, ours):
        leaf = x.clone().requires_grad_()
        out = module(leaf)
        out = out[0] if isinstance(out, tuple) else out
        assert out.shape == (2, 0)
        out.sum().backward()
        assert_close("grad input", leaf.grad, torch.zeros_like(x))


def test_packed_data_beyond_the_batch_sizes_runs_like_torch_nn(backend):
    """torch.nn runs the rows batch_sizes count and ignores the rest, and it never
    permutes zero initial states, so unused sorted_indices do not matter."""
    theirs, ours = make_twins("gru", 3, 4, 1, backend=backend)
    data = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    packed = PackedSequence(data, torch.tensor([3, 2]), torch.tensor([0, 1]), torch.tensor([0, 1]))
    expected, actual = theirs(packed), ours(packed)
    assert_close("output", actual[0].data, expected[0].data)
    assert_close("h_n", actual[1], expected[1])


def test_recurrence_refuses_an_unknown_cell(backend):
    inputs = make_op_inputs("rnn_tanh", 2, 1, 2)
    with pytest.raises(ValueError, match="cell must be one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu', got 'relu'"):
        rnnkernels.recurrence("relu", inputs["xg"], inputs["w_hh"], inputs["h0"], backend=backend)


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_recurrence_checks_tbptt(value, backend):
    inputs = make_op_inputs("gru", 2, 1, 2)
    with pytest.raises(ValueError, match="tbptt must be None"):
        rnnkernels.recurrence("gru", inputs["xg"], inputs["w_hh"], inputs["h0"], tbptt=value, backend=backend)


def test_tbptt_longer_than_any_sequence_is_full_bptt(backend):
    theirs, ours = make_twins("lstm", 3, 4, 1, backend=backend, tbptt=10**30)
    x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = []
    for module in (theirs, ours):
        leaf = x.clone().requires_grad_()
        module(leaf)[0].pow(2).sum().backward()
        grads.append(leaf.grad)
    assert_close("grad input", grads[1], grads[0])


@pytest.mark.parametrize("operand", ["w_hh", "h0", "b_hn"])
def test_recurrence_refuses_operands_of_another_dtype(operand, backend):
    inputs = {k: v for k, v in make_op_inputs("gru", 2, 1, 2).items() if k not in ("c0", "w_hr", "lengths")}
    inputs[operand] = inputs[operand].float()
    with pytest.raises(RuntimeError, match=f"{operand} has dtype"):
        rnnkernels.recurrence("gru", inputs["xg"], inputs["w_hh"], inputs["h0"], b_hn=inputs["b_hn"],
                              backend=backend)


def test_module_weight_of_another_dtype_raises_like_torch_nn(backend):
    theirs, ours = nn.GRU(3, 4, dtype=torch.float64), rnnkernels.GRU(3, 4, dtype=torch.float64, backend=backend)
    for module in (theirs, ours):
        module.weight_hh_l0 = nn.Parameter(module.weight_hh_l0.float())
        with pytest.raises(RuntimeError):
            module(torch.randn(2, 1, 3, dtype=torch.float64))
