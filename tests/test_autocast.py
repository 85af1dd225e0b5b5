"""CPU autocast. torch.nn's own behaviour there is not one policy: its GRU
and RNN run their matmuls in bfloat16 and return float32 (GRU) or bfloat16
(2-layer RNN), and its oneDNN LSTM fails. rnnkernels' layers run in the
weights' dtype on the CPU (under CUDA autocast, in the autocast dtype, as
cuDNN does): the same results as without autocast, within bfloat16 tolerance
of torch.nn's."""

import pytest
import torch

from helpers import make_cell_twins, make_twins
from tolerance import assert_close


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_cpu_autocast_runs_layers_in_weight_dtype(kind, backend):
    theirs, ours = make_twins(kind, 4, 5, 2, dtype=torch.float32, backend=backend)
    x = torch.randn(6, 3, 4)
    eager = ours(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ours(x)
        expected = theirs(x) if kind != "lstm" else None  # torch.nn's oneDNN LSTM fails here
    def h_n(result):
        return result[1][0] if kind == "lstm" else result[1]

    for name, a, b in (("output", auto[0], eager[0]), ("h_n", h_n(auto), h_n(eager))):
        assert a.dtype == torch.float32, f"{name}: computed in {a.dtype}"
        assert torch.equal(a, b), f"{name}: autocast changed the result"
    if expected is not None:
        assert_close("output vs torch.nn autocast", auto[0], expected[0].float(), dtype=torch.bfloat16)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
def test_cpu_autocast_cells_run_in_weight_dtype(kind, backend):
    _, cell = make_cell_twins(kind, 4, 5, dtype=torch.float32, backend=backend)
    x = torch.randn(3, 4)
    eager = cell(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = cell(x)
    as_tuple = (lambda out: out if isinstance(out, tuple) else (out,))  # noqa: E731 - local reshaping helper
    for a, b in zip(as_tuple(auto), as_tuple(eager), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)
