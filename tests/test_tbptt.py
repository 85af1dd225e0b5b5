"""Truncated BPTT: `tbptt=k` gives the gradients of running the sequence in
chunks of k steps through torch.nn with (h, c) detached between chunks
(DESIGN.md's definition), while the forward pass stays unchanged."""

import pytest
import torch

from helpers import forward_backward, make_hx, make_input, make_twins
from tolerance import assert_all_close

STEPS, BATCH, FEATURES, HIDDEN = 7, 3, 4, 5


class ChunkAndDetach:
    """A torch.nn module run in chunks of k steps, state detached in between: the spec."""

    def __init__(self, rnn, k):
        self.rnn, self.k = rnn, k

    def named_parameters(self):
        return self.rnn.named_parameters()

    def __call__(self, x, hx=None):
        time_dim = 1 if self.rnn.batch_first else 0
        outputs, state = [], hx
        for chunk in x.split(self.k, dim=time_dim):
            if state is not None and outputs:
                state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            out, state = self.rnn(chunk, state)
            outputs.append(out)
        return torch.cat(outputs, dim=time_dim), state


@pytest.mark.parametrize("k", [1, 2, 3, 7, 10])
@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
def test_tbptt_equals_chunk_and_detach_over_torch_nn(kind, k, batch_first, backend):
    theirs, ours = make_twins(kind, FEATURES, HIDDEN, 2, batch_first=batch_first,
                              backend=backend, tbptt=k)
    spec = ChunkAndDetach(theirs, k)

    def run(module):
        inputs = make_input("dense", STEPS, BATCH, FEATURES, batch_first=batch_first, seed=1)
        return forward_backward(module, inputs, make_hx(ours, BATCH, seed=2), seed=3)

    assert_all_close(run(ours), run(spec))


def test_tbptt_changes_gradients_only(backend):
    _, full = make_twins("lstm", FEATURES, HIDDEN, 2, backend=backend)
    _, cut = make_twins("lstm", FEATURES, HIDDEN, 2, backend=backend, tbptt=2)
    cut.load_state_dict(full.state_dict())

    def run(module):
        inputs = make_input("dense", STEPS, BATCH, FEATURES, seed=1)
        return forward_backward(module, inputs, make_hx(full, BATCH, seed=2), seed=3)

    a, b = run(full), run(cut)
    for name in ("output", "h_n", "c_n"):
        assert torch.equal(a[name], b[name]), f"{name}: tbptt changed the forward pass"
    assert not torch.allclose(a["grad weight_hh_l0"], b["grad weight_hh_l0"]), (
        "grad weight_hh_l0: tbptt=2 over 7 steps left the gradient unchanged")


def test_tbptt_set_after_construction_takes_effect(backend):
    theirs, ours = make_twins("gru", FEATURES, HIDDEN, backend=backend)
    ours.tbptt = 3

    def run(module):
        inputs = make_input("dense", STEPS, BATCH, FEATURES, seed=1)
        return forward_backward(module, inputs, make_hx(ours, BATCH, seed=2), seed=3)

    assert_all_close(run(ours), run(ChunkAndDetach(theirs, 3)))
