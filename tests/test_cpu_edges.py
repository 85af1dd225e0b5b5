"""The cpu backend's edge cases at the op level: empty batch or hidden size,
and outputs modified in place before backward (the saved-tensor rule)."""

import pytest
import torch

import rnnkernels
from helpers import OP_CELLS, make_op_inputs, op_forward_backward
from tolerance import assert_all_close

pytestmark = pytest.mark.skipif(rnnkernels.backends.unavailable_reason("cpu") is not None,
                                reason="the cpu backend's extension is not built")


@pytest.mark.parametrize("cell", OP_CELLS)
@pytest.mark.parametrize("batch, hidden, proj", [(0, 5, None), (3, 0, None), (0, 0, None),
                                                 (2, 4, 3), (0, 4, 3)],
                         ids=["B0", "H0", "B0_H0", "proj", "B0_proj"])
def test_empty_batch_or_hidden_matches_reference(cell, batch, hidden, proj):
    if proj and cell != "lstm":
        pytest.skip("projection is an LSTM feature")
    inputs = make_op_inputs(cell, 3, batch, hidden, proj=proj)
    ours = op_forward_backward(cell, inputs, backend="cpu", tbptt=2)
    spec = op_forward_backward(cell, inputs, backend="reference", tbptt=2)
    assert_all_close(ours, spec)


@pytest.mark.parametrize("cell", OP_CELLS)
def test_outputs_modified_in_place_leave_gradients_unchanged(cell):
    inputs = make_op_inputs(cell, 4, 3, 5, lengths=[4, 2, 3])
    names = [k for k, v in inputs.items() if k != "lengths" and v is not None]

    def run(backend, modify):
        leaves = {k: inputs[k].detach().clone().requires_grad_() for k in names}
        outputs = [t for t in rnnkernels.recurrence(cell, **leaves, lengths=inputs["lengths"],
                                                    backend=backend) if t is not None]
        g = torch.Generator().manual_seed(1)
        # Constant weights: the loss's own graph saves none of the outputs.
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outputs)
        if modify:  # what a caller may do to the returned tensors before backward
            with torch.no_grad():
                for t in outputs:
                    t.data.mul_(-3.0).add_(7.0)
        return dict(zip(names, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    assert_all_close(run("cpu", modify=True), run("reference", modify=False))
