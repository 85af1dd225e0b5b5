"""rnnkernels.LSTMCell / GRUCell / RNNCell against torch.nn in float64:
outputs and gradients of input, hx and every parameter."""

import itertools

import pytest
import torch

from helpers import CELL_KINDS, make_cell_twins
from tolerance import assert_all_close

BATCH, FEATURES, HIDDEN = 3, 4, 5


def _run(cell, kind, batched, with_hx):
    g = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    lead = (BATCH,) if batched else ()
    x = leaf(*lead, FEATURES)
    leaves = [x]
    hx = None
    if with_hx:
        states = [leaf(*lead, HIDDEN) for _ in range(2 if kind == "lstm" else 1)]
        leaves += states
        hx = tuple(states) if kind == "lstm" else states[0]
    out = cell(x, hx)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    results = {f"output[{i}]": o.detach() for i, o in enumerate(outs)}
    results.update({f"grad leaf[{i}]": t.grad for i, t in enumerate(leaves)})
    results.update({f"grad {n}": p.grad for n, p in cell.named_parameters()})
    return results


@pytest.mark.parametrize("kind, batched, with_hx, bias", [
    pytest.param(kind, batched, with_hx, bias, id="-".join([
        kind, "batched" if batched else "unbatched", "hx" if with_hx else "no_hx",
        "bias" if bias else "nobias"]))
    for kind, batched, with_hx, bias in itertools.product(
        CELL_KINDS, (True, False), (True, False), (True, False))])
def test_cell_matches_torch_nn(kind, batched, with_hx, bias, backend):
    theirs, ours = make_cell_twins(kind, FEATURES, HIDDEN, bias=bias, backend=backend)
    assert_all_close(_run(ours, kind, batched, with_hx), _run(theirs, kind, batched, with_hx))
    assert ours.last_backend == backend


def test_cell_with_empty_batch(backend):
    theirs, ours = make_cell_twins("gru", FEATURES, HIDDEN, backend=backend)
    x = torch.randn(0, FEATURES, dtype=torch.float64)
    assert ours(x).shape == theirs(x).shape == (0, HIDDEN)
