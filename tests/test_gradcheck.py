"""torch.autograd.gradcheck in float64 through every backend: at the op
level for each cell (with variable lengths and projection), through whole
modules, and with truncated BPTT where the truncated gradient is exact."""

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call
from torch.nn.utils.rnn import pack_sequence

import rnnkernels
from helpers import OP_CELLS, OP_INPUT_NAMES, OP_VARIANTS, make_op_inputs, op_function



def _fast(backend):
    """gradcheck's fast mode for the interpreted triton backend: it checks the
    Jacobian along random directions, a few runs of the kernels instead of one
    per input element, which the interpreter cannot afford."""
    return backend == "triton"


@pytest.mark.parametrize("cell, proj", [
    pytest.param(c, p, id=c if p is None else f"{c}_proj") for c, p in OP_VARIANTS])
@pytest.mark.parametrize("lengths", [None, [3, 1]], ids=["full", "ragged"])
def test_op_gradcheck(cell, proj, lengths, backend):
    inputs = make_op_inputs(cell, 3, 2, 3, proj=proj, lengths=lengths, seed=11)
    args = tuple(inputs[name] for name in OP_INPUT_NAMES)
    assert gradcheck(op_function(cell, backend, inputs["lengths"]), args, fast_mode=_fast(backend))


@pytest.mark.parametrize("cell", OP_CELLS)
def test_op_gradcheck_truncated_last_chunk(cell, backend):
    """With tbptt=k the gradient reaching the last chunk's xg never crosses a
    cut, so it equals the true derivative there: gradcheck applies."""
    steps, k = 6, 3
    inputs = make_op_inputs(cell, steps, 2, 3, seed=13)
    head = inputs["xg"][:k].detach()
    rest = {name: None if inputs[name] is None else inputs[name].detach() for name in OP_INPUT_NAMES[1:]}
    op = op_function(cell, backend, None, tbptt=k)

    def last_chunk(xg_tail):
        return op(torch.cat([head, xg_tail]), **rest)

    assert gradcheck(last_chunk, (inputs["xg"][k:].detach().requires_grad_(),), fast_mode=_fast(backend))


def test_module_gradcheck_packed_bidirectional(backend):
    lstm = rnnkernels.LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2,
                           dtype=torch.float64, backend=backend)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randn(n, 2, generator=g, dtype=torch.float64, requires_grad=True) for n in (3, 1, 2)]
    h0 = torch.randn(4, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def run(a, b, c, h, cx):
        out, (h_n, c_n) = lstm(pack_sequence([a, b, c], enforce_sorted=False), (h, cx))
        return out.data, h_n, c_n

    assert gradcheck(run, (*seqs, h0, c0), fast_mode=_fast(backend))


@pytest.mark.parametrize("mode", ["gru", "rnn_relu"])
def test_module_gradcheck_over_weights(mode, backend):
    """Every parameter through torch.func.functional_call: weights are read by name."""
    module = (rnnkernels.GRU(2, 3, bidirectional=True, dtype=torch.float64, backend=backend)
              if mode == "gru" else
              rnnkernels.RNN(2, 3, 2, nonlinearity="relu", dtype=torch.float64, backend=backend))
    names = [name for name, _ in module.named_parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def run(*params):
        out, h_n = functional_call(module, dict(zip(names, params, strict=True)), (x,))
        return out, h_n

    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    assert gradcheck(run, params, fast_mode=_fast(backend))
