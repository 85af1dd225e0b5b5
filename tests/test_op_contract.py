"""The op contract, one layer and one direction, backend against the
reference: variable lengths (including rows that never start), projection,
truncated BPTT, odd sizes, non-contiguous inputs, float32 and float64."""

import pytest
import torch

import rnnkernels
from helpers import OP_CELLS, make_op_inputs, op_forward_backward
from tolerance import assert_all_close, max_error

VARIANTS = [("lstm", None), ("lstm", 2)] + [(cell, None) for cell in OP_CELLS[1:]]


def _variant_id(cell, proj):
    return cell if proj is None else f"{cell}_proj{proj}"


@pytest.mark.parametrize("cell, proj", [pytest.param(c, p, id=_variant_id(c, p)) for c, p in VARIANTS])
@pytest.mark.parametrize("lengths", [None, [6, 6, 1], [3, 0, 6, 2]], ids=["full", "ragged", "unsorted_with_empty"])
@pytest.mark.parametrize("tbptt", [None, 1, 4], ids=["bptt", "tbptt1", "tbptt4"])
def test_backend_matches_reference(cell, proj, lengths, tbptt, backend):
    batch = 3 if lengths is None else len(lengths)
    inputs = make_op_inputs(cell, 6, batch, 5, proj=proj, lengths=lengths, seed=7)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=tbptt)
    assert_all_close(op_forward_backward(cell, inputs, backend=backend, tbptt=tbptt), expected)


@pytest.mark.parametrize("cell", OP_CELLS)
def test_variable_lengths_semantics(cell, backend):
    """Ended rows write zeros to y and report their state at their own last step."""
    lengths = [4, 2, 0]
    inputs = make_op_inputs(cell, 4, 3, 3, lengths=lengths, seed=1)
    y, h_n, c_n = rnnkernels.recurrence(cell, **inputs, backend=backend)
    for b, length in enumerate(lengths):
        assert torch.equal(y[length:, b], torch.zeros_like(y[length:, b])), f"y[{length}:, {b}] not zero"
        row = dict(inputs, lengths=None, xg=inputs["xg"][:length, b:b + 1], h0=inputs["h0"][b:b + 1],
                   c0=None if inputs["c0"] is None else inputs["c0"][b:b + 1])
        if length == 0:
            expected_h, expected_c = row["h0"], row["c0"]
        else:  # the row alone, run for exactly its own length
            _, expected_h, expected_c = rnnkernels.recurrence(cell, **row, backend="reference")
        assert_all_close({f"h_n[{b}]": h_n[b:b + 1]}, {f"h_n[{b}]": expected_h})
        if cell == "lstm":
            assert_all_close({f"c_n[{b}]": c_n[b:b + 1]}, {f"c_n[{b}]": expected_c})


@pytest.mark.parametrize("cell", OP_CELLS)
def test_non_contiguous_inputs(cell, backend):
    inputs = make_op_inputs(cell, 5, 3, 4, seed=3)
    expected = op_forward_backward(cell, inputs, backend="reference")
    strided = {}
    for name, t in inputs.items():
        if t is None or name == "lengths" or t.dim() < 2:
            strided[name] = t
        else:  # same values, transposed storage
            strided[name] = t.detach().transpose(-1, -2).contiguous().transpose(-1, -2)
            assert not strided[name].is_contiguous()
    assert_all_close(op_forward_backward(cell, strided, backend=backend), expected)


@pytest.mark.parametrize("cell", OP_CELLS)
@pytest.mark.parametrize("steps, batch, hidden", [(1, 1, 1), (1, 4, 3), (9, 2, 17), (3, 5, 33)],
                         ids=lambda v: str(v))
def test_odd_sizes_float32_within_policy(cell, steps, batch, hidden, backend):
    """float32 against the float64 reference, bounded by the float32 reference's own error."""
    inputs64 = make_op_inputs(cell, steps, batch, hidden, seed=5)
    inputs32 = {k: v if v is None or k == "lengths" else v.detach().float()
                for k, v in inputs64.items()}
    exact = op_forward_backward(cell, inputs64, backend="reference")
    reference32 = op_forward_backward(cell, inputs32, backend="reference")
    actual = op_forward_backward(cell, inputs32, backend=backend)
    for name, expected in exact.items():
        assert_all_close({name: actual[name]}, {name: expected}, dtype=torch.float32,
                         reference_error=max_error(reference32[name], expected))


@pytest.mark.parametrize("cell", OP_CELLS)
def test_inference_forward_equals_training_forward(cell, backend):
    inputs = make_op_inputs(cell, 4, 2, 3, lengths=[4, 2], seed=9)
    args = {k: None if v is None or k == "lengths" else v.detach() for k, v in inputs.items()}
    args["lengths"] = inputs["lengths"]
    with torch.no_grad():
        inference = rnnkernels.recurrence(cell, **args, backend=backend)
    training = rnnkernels.recurrence(cell, **inputs, backend=backend)
    for name, a, b in zip(("y", "h_n", "c_n"), inference, training, strict=True):
        if b is not None:
            assert torch.equal(a, b.detach()), f"{name}: inference forward differs"

