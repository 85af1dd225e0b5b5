"""Inter-layer dropout: only in training, only between layers, on the same
tensors with the same RNG use as torch.nn, so the masks are identical."""

import pytest
import torch

from helpers import forward_backward, make_hx, make_input, make_twins
from tolerance import assert_all_close


@pytest.mark.parametrize("mode", ["dense", "packed_unsorted", "unbatched"])
@pytest.mark.parametrize("kind, bidirectional", [("lstm", True), ("gru", False), ("rnn_tanh", True)])
def test_training_dropout_masks_match_torch_nn(kind, bidirectional, mode, backend):
    theirs, ours = make_twins(kind, 4, 6, 3, dropout=0.4, bidirectional=bidirectional,
                              batch_first=True, backend=backend)

    def run(module):
        torch.manual_seed(1234)
        inputs = make_input(mode, 5, 3, 4, batch_first=True, seed=1)
        return forward_backward(module, inputs, make_hx(module, None if mode == "unbatched" else 3, seed=2), seed=3)

    result = run(ours)
    assert_all_close(result, run(theirs))
    ours.dropout = 0.0
    assert not torch.allclose(run(ours)["output"], result["output"]), "dropout changed nothing"


def test_no_dropout_in_eval(backend):
    theirs, ours = make_twins("lstm", 4, 6, 2, dropout=0.9, backend=backend)
    theirs.eval()
    ours.eval()
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    torch.manual_seed(0)
    a = ours(x)[0]
    torch.manual_seed(1)
    assert torch.equal(a, ours(x)[0]), "eval forward depends on the RNG"
    assert_all_close({"output": a}, {"output": theirs(x)[0]})


def test_changing_dropout_later_takes_effect(backend):
    _, ours = make_twins("gru", 4, 6, 2, dropout=0.0, backend=backend)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    before = ours(x)[0]
    ours.dropout = 0.99
    assert not torch.allclose(ours(x)[0], before)
    ours.dropout = 0.0
    assert torch.equal(ours(x)[0], before)
