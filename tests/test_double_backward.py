"""Double backward on every backend: gradients taken with create_graph=True are
differentiable, and their derivatives equal torch.nn's.

gradgradcheck in float64 covers each cell with variable lengths, the LSTM
projection and truncated BPTT at op level, and a bidirectional stack at module
level. The gradient-penalty case compares with torch.nn for all six classes.
The interpreted triton backend runs at T, H <= 3 (gradgradcheck reruns the
layer hundreds of times)."""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import rnnkernels
import rnnkernels.function
from helpers import (CELL_KINDS, MODULE_KINDS, OP_CELLS, OP_INPUT_NAMES, OP_VARIANTS, make_cell_twins,
                     make_op_inputs, make_twins, op_function)
from tolerance import assert_close



@pytest.mark.parametrize("cell, proj", [
    pytest.param(c, p, id=c if p is None else f"{c}_proj") for c, p in OP_VARIANTS])
@pytest.mark.parametrize("lengths", [None, [3, 1]], ids=["full", "ragged"])
def test_op_gradgradcheck(cell, proj, lengths, backend):
    inputs = make_op_inputs(cell, 3, 2, 3 if backend != "triton" else 2, proj=proj, lengths=lengths, seed=21)
    args = tuple(inputs[name] for name in OP_INPUT_NAMES)
    assert gradgradcheck(op_function(cell, backend, inputs["lengths"], None), args, fast_mode=backend == "triton")


@pytest.mark.parametrize("cell", OP_CELLS)
def test_op_gradgradcheck_truncated_last_chunk(cell, backend):
    """With tbptt=k the states at the cuts are constants for every derivative
    (as torch.nn's chunk-and-detach loop makes them), so the truncated gradient
    is a true derivative only in the last chunk's xg: gradgradcheck applies there."""
    steps, k = 4, 2
    inputs = make_op_inputs(cell, steps, 2, 2, seed=23)
    head = inputs["xg"][:k].detach()
    rest = [None if inputs[name] is None else inputs[name].detach() for name in OP_INPUT_NAMES[1:]]
    op = op_function(cell, backend, None, k)

    def last_chunk(xg_tail):
        return op(torch.cat([head, xg_tail]), *rest)

    assert gradgradcheck(last_chunk, (inputs["xg"][k:].detach().requires_grad_(),),
                         fast_mode=backend == "triton")


def test_module_gradgradcheck_bidirectional_stack(backend):
    lstm = rnnkernels.LSTM(2, 2, num_layers=2, bidirectional=True, proj_size=1, dtype=torch.float64,
                           backend=backend)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 1, generator=g, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)

    def run(x, h, c):
        out, (h_n, c_n) = lstm(x, (h, c))
        return out, h_n, c_n

    assert gradgradcheck(run, (x, h0, c0), fast_mode=backend == "triton")


def _tensors(out):
    """Every tensor of a module's output, however nested: (out, (h, c)), (h, c) or h."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for part in out for t in _tensors(part)]


def _gradient_penalty(module, x):
    """d/dW of |dL/dx|^2 (L = sum of squares of every output), for every parameter."""
    loss = sum(t.pow(2).sum() for t in _tensors(module(x)))
    g, = torch.autograd.grad(loss, x, create_graph=True)
    names, params = zip(*module.named_parameters(), strict=True)
    return dict(zip(names, torch.autograd.grad(g.pow(2).sum(), params), strict=True))


@pytest.mark.parametrize("kind", sorted(MODULE_KINDS))
def test_gradient_penalty_matches_torch_nn(kind, backend):
    theirs, ours = make_twins(kind, 3, 4, 2, bidirectional=kind == "gru", backend=backend)
    x = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    expected = _gradient_penalty(theirs, x)
    for name, value in _gradient_penalty(ours, x).items():
        assert_close(f"d|dx|^2/d{name}", value, expected[name])


@pytest.mark.parametrize("kind", sorted(CELL_KINDS))
def test_cell_gradient_penalty_matches_torch_nn(kind, backend):
    theirs, ours = make_cell_twins(kind, 3, 3, backend=backend)
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    expected = _gradient_penalty(theirs, x)
    for name, value in _gradient_penalty(ours, x).items():
        assert_close(f"d|dx|^2/d{name}", value, expected[name])


def test_hessian_vector_product_matches_torch_nn(backend):
    theirs, ours = make_twins("lstm", 3, 3, 1, backend=backend)
    x = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    v = [torch.randn_like(p) for p in theirs.parameters()]

    def hvp(module):
        params = list(module.parameters())
        grads = torch.autograd.grad(module(x)[0].tanh().sum(), params, create_graph=True)
        return torch.autograd.grad(sum((g * d).sum() for g, d in zip(grads, v, strict=True)), params)

    for index, (a, b) in enumerate(zip(hvp(ours), hvp(theirs), strict=True)):
        assert_close(f"Hv[{index}]", a, b)


def test_first_order_gradients_come_from_the_backend_kernels(backend, monkeypatch):
    """Only a backward with grad mode on pays for the differentiable path."""
    calls = []
    real = rnnkernels.function._differentiable_backward
    monkeypatch.setattr(rnnkernels.function, "_differentiable_backward",
                        lambda *a: calls.append("differentiable") or real(*a))
    chosen = rnnkernels.backends.backend_implementation(backend)
    real_backward = type(chosen).backward
    monkeypatch.setattr(type(chosen), "backward", lambda self, *a: calls.append("kernels") or real_backward(self, *a))
    gru = rnnkernels.GRU(3, 4, dtype=torch.float64, backend=backend)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    gru(x)[0].pow(2).sum().backward()
    assert calls == ["kernels"]
    calls.clear()
    torch.autograd.grad(gru(x)[0].pow(2).sum(), x, create_graph=True)
    assert calls == ["differentiable"]


def test_create_graph_gradients_equal_plain_ones(backend):
    gru = rnnkernels.GRU(3, 4, dtype=torch.float64, backend=backend)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    plain, = torch.autograd.grad(gru(x)[0].pow(2).sum(), x)
    with_graph, = torch.autograd.grad(gru(x)[0].pow(2).sum(), x, create_graph=True)
    assert_close("dx with create_graph", with_graph, plain)
    assert with_graph.requires_grad


def test_truncated_double_backward_matches_chunked_torch_nn(backend):
    """With tbptt=k, the gradient is torch.nn's over chunks of k steps with the
    state detached between them, and so is its derivative."""
    theirs, ours = make_twins("lstm", 2, 3, 1, backend=backend, tbptt=2)
    x = torch.randn(5, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8), requires_grad=True)

    def chunked(x):
        outs, hx = [], None
        for start in range(0, x.shape[0], 2):
            out, hx = theirs(x[start:start + 2], hx)
            hx = tuple(h.detach() for h in hx)
            outs.append(out)
        return torch.cat(outs)

    def penalty(run, params):
        g, = torch.autograd.grad(run(x).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), params)

    expected = penalty(chunked, list(theirs.parameters()))
    for (name, _), a, b in zip(ours.named_parameters(), penalty(lambda x: ours(x)[0], list(ours.parameters())),
                               expected, strict=True):
        assert_close(f"d|dx|^2/d{name}", a, b)


def test_gradcheck_of_a_gradient_through_the_op(backend):
    """The first derivative as a function (gradcheck of autograd.grad with create_graph)."""
    inputs = make_op_inputs("gru", 2, 2, 2, seed=9)
    h0, w_hh, b_hn = inputs["h0"], inputs["w_hh"], inputs["b_hn"]

    def first_derivative(xg):
        y, h_n, _ = rnnkernels.recurrence("gru", xg, w_hh, h0, b_hn=b_hn, backend=backend)
        g, = torch.autograd.grad((y.pow(2).sum() + h_n.sum()), xg, create_graph=True)
        return g

    assert gradcheck(first_derivative, (inputs["xg"],), fast_mode=backend == "triton")
