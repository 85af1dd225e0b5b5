"""Randomized parity (hypothesis) over sizes and options: every backend
against the reference module (and torch.nn wherever it has an equivalent,
i.e. without tbptt), float64; and float32 within the tolerance policy.

The default run is derandomized so CI is repeatable; `-m slow` explores
afresh with more examples."""

import pytest
import torch

pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install hypothesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after the importorskip
from hypothesis import strategies as st  # noqa: E402

from conftest import CPU_BACKENDS
from helpers import forward_backward, make_hx, make_input, make_twins
from tolerance import assert_all_close, assert_close, max_error

REPEATABLE = settings(max_examples=40, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])
EXPLORING = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def configurations(draw):
    kind = draw(st.sampled_from(["lstm", "gru", "rnn_tanh", "rnn_relu"]))
    hidden = draw(st.integers(1, 7))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    return {
        "kind": kind,
        "features": draw(st.integers(1, 6)),
        "hidden": hidden,
        "proj": draw(st.integers(0, hidden - 1)) if kind == "lstm" else 0,
        "layers": draw(st.integers(1, 3)),
        "bidirectional": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "mode": draw(st.sampled_from(["dense", "unbatched", "packed", "packed_unsorted"])),
        "steps": steps,
        "batch": batch,
        "lengths": sorted((draw(st.integers(1, steps)) for _ in range(batch)), reverse=True),
        "with_hx": draw(st.booleans()),
        "tbptt": draw(st.one_of(st.none(), st.integers(1, steps + 1))),
    }


def _twins(c, backend, dtype=torch.float64):
    kwargs = {"proj_size": c["proj"]} if c["kind"] == "lstm" else {}
    return make_twins(c["kind"], c["features"], c["hidden"], c["layers"], bias=c["bias"],
                      batch_first=c["batch_first"], bidirectional=c["bidirectional"],
                      backend=backend, tbptt=c["tbptt"], dtype=dtype, **kwargs)


def _run(module, c, dtype=torch.float64):
    inputs = make_input(c["mode"], c["steps"], c["batch"], c["features"], dtype=dtype,
                        batch_first=c["batch_first"], seed=1, lengths=c["lengths"])
    batch = None if c["mode"] == "unbatched" else c["batch"]
    hx = make_hx(module, batch, dtype=dtype, seed=2) if c["with_hx"] else (None, ())
    return forward_backward(module, inputs, hx, seed=3)


def _check_float64(c, backend):
    theirs, ours = _twins(c, backend)
    _, reference = _twins(c, "reference")
    reference.load_state_dict(theirs.state_dict())
    expected = _run(reference, c)
    assert_all_close(_run(ours, c), expected)
    if c["tbptt"] is None:  # torch.nn has no truncated mode to compare with
        assert_all_close(expected, _run(theirs, c))


def _check_float32(c, backend):
    theirs, _ = _twins(c, "reference")
    _, exact = _twins(c, "reference")
    _, reference32 = _twins(c, "reference", dtype=torch.float32)
    _, ours32 = _twins(c, backend, dtype=torch.float32)
    for module in (exact, reference32, ours32):
        module.load_state_dict(theirs.state_dict())
    expected, baseline, actual = _run(exact, c), _run(reference32, c, torch.float32), _run(ours32, c, torch.float32)
    for name in expected:
        assert_close(name, actual[name], expected[name], dtype=torch.float32,
                     reference_error=max_error(baseline[name], expected[name]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@REPEATABLE
@given(c=configurations())
def test_random_configurations_float64(backend, c):
    _check_float64(c, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@REPEATABLE
@given(c=configurations())
def test_random_configurations_float32_within_policy(backend, c):
    _check_float32(c, backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@EXPLORING
@given(c=configurations())
def test_random_configurations_explore(backend, c):
    _check_float64(c, backend)
    _check_float32(c, backend)
