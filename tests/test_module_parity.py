"""rnnkernels.LSTM / GRU / RNN against torch.nn over the full configuration
space, in float64: outputs, h_n/c_n and every gradient (input, hx, each
parameter) under random upstream gradients, for every CPU backend."""

import itertools

import pytest

from helpers import INPUT_MODES, MODULE_KINDS, forward_backward, make_hx, make_input, make_twins
from tolerance import assert_all_close

STEPS, BATCH, FEATURES, HIDDEN = 5, 3, 4, 5  # HIDDEN > proj_size 3, nothing a multiple of 16


def _configurations():
    for kind, layers, bidirectional, batch_first, bias, mode, with_hx in itertools.product(
            MODULE_KINDS, (1, 2, 3), (False, True), (False, True), (True, False), INPUT_MODES,
            (False, True)):
        name = "-".join([
            kind, f"L{layers}", "bidir" if bidirectional else "unidir",
            "batch_first" if batch_first else "seq_first", "bias" if bias else "nobias", mode,
            "hx" if with_hx else "no_hx"])
        yield pytest.param(kind, layers, bidirectional, batch_first, bias, mode, with_hx, id=name)


@pytest.mark.parametrize(
    "kind, layers, bidirectional, batch_first, bias, mode, with_hx", list(_configurations()))
def test_module_matches_torch_nn(kind, layers, bidirectional, batch_first, bias, mode, with_hx,
                                 backend):
    theirs, ours = make_twins(kind, FEATURES, HIDDEN, layers, bias=bias, batch_first=batch_first,
                              bidirectional=bidirectional, backend=backend)
    batch = None if mode == "unbatched" else BATCH

    def run(module):
        inputs = make_input(mode, STEPS, BATCH, FEATURES, batch_first=batch_first, seed=1)
        hx = make_hx(module, batch, seed=2) if with_hx else (None, ())
        return forward_backward(module, inputs, hx, seed=3)

    assert_all_close(run(ours), run(theirs))
    assert ours.last_backend == backend
