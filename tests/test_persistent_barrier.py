"""The persistent Triton kernels with their real grid barrier ON, on CPU.

Elsewhere the interpreter runs the persistent kernels one launch per stage
(the launch boundary stands in for the barrier). Here the launcher's
INTERPRETER_BARRIER makes it launch each kernel once for the whole sequence
with grid_sync.grid_barrier compiled in, and the threaded grid executor
(tests/threaded_grid.py) runs the P programs as threads under a seeded baton,
so the production launcher, kernels and barrier run unchanged: values and
every gradient against the reference, the number of barriers each program
passes, a planted off-by-one barrier, and the timeout path.

What this cannot show (the compile gate's lint and a GPU run do): the
memory order of the atomics (one program runs at a time here), co-residency.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")
import triton.language as tl  # noqa: E402 - after the importorskip

import rnnkernels  # noqa: E402
from helpers import make_op_inputs, op_forward_backward  # noqa: E402
from threaded_grid import threaded_grid, unsupported_reason  # noqa: E402
from tolerance import assert_all_close  # noqa: E402

from rnnkernels.backends import unavailable_reason  # noqa: E402

if unsupported_reason() is not None:
    pytest.skip(unsupported_reason(), allow_module_level=True)
if unavailable_reason("triton") is not None:
    pytest.skip(f"triton backend: {unavailable_reason('triton')}", allow_module_level=True)

from rnnkernels.triton_kernels import persistent, persistent_launch  # noqa: E402
from rnnkernels.triton_kernels.grid_sync import grid_barrier  # noqa: E402

CPU = torch.device("cpu")
STEPS = 5
LENGTHS = [5, 2, 0, 4]  # unequal rows and an empty one
TBPTT = 2  # cuts at t = 2 and 4
# (cell, proj, hidden) per number of programs: persistent_launch.BLOCK_U = 16
# units per program under the interpreter, so H = 33 gives P = 3 and 99 gives
# P = 7 (neither a multiple of P nor of 16); with a projection the wider of H
# and H_out counts.
LAYERS = {
    3: [("lstm", None, 33), ("lstm", 5, 33), ("gru", None, 33), ("rnn_tanh", None, 33), ("rnn_relu", None, 33)],
    7: [("lstm", None, 99), ("lstm", 7, 99), ("gru", None, 99), ("rnn_tanh", None, 99), ("rnn_relu", None, 99)],
}


def _layer_id(cell, proj, hidden):
    return f"{cell}{'' if proj is None else f'_proj{proj}'}-H{hidden}"


LAYER_LIST = [(programs, *layer) for programs, layers in LAYERS.items() for layer in layers]


def _case(programs, cell, proj, hidden, seed, tbptt=TBPTT, marks=()):
    return pytest.param(programs, cell, proj, hidden, seed, tbptt, marks=marks,
                        id=f"P{programs}-{_layer_id(cell, proj, hidden)}-seed{seed}-tbptt{tbptt}")


# Default run: each layer once, each under a schedule of its own; more
# schedules, and full BPTT, under -m slow.
DEFAULT_CASES = [_case(*layer, seed) for seed, layer in enumerate(LAYER_LIST)]
SLOW_CASES = [_case(*layer, seed, tbptt, marks=pytest.mark.slow) for layer in LAYER_LIST
              for seed, tbptt in [(101, TBPTT), (102, TBPTT), (103, None)]]


@pytest.fixture
def barrier_on(monkeypatch):
    """The persistent path forced, launched whole with the barrier; the
    error flag cleared before and after, so a failure here cannot leak into
    later tests.

    Fresh buffers are filled with NaN (torch's deterministic mode fills
    uninitialized memory): a program let through a barrier early then reads
    NaN, not a stale buffer of an earlier run that happens to hold the right
    values (which hid the planted off-by-one under some seeds)."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "persistent")
    monkeypatch.delenv("RNNKERNELS_TRITON_SYNC_CHECK", raising=False)
    monkeypatch.setattr(persistent_launch, "INTERPRETER_BARRIER", True)
    persistent_launch.error_flag(CPU).reset()
    yield
    persistent_launch.error_flag(CPU).reset()
    torch.use_deterministic_algorithms(deterministic)


def _inputs(cell, proj, hidden, seed=3):
    return make_op_inputs(cell, STEPS, len(LENGTHS), hidden, proj=proj, lengths=LENGTHS, seed=seed)


def _barriers(proj):
    """Barriers per program: forward runs PHASES*T stages, backward one more
    (the last carry, dh0); a barrier between consecutive stages."""
    stages = (2 if proj else 1) * STEPS
    return {"forward_persistent_kernel": stages - 1, "backward_persistent_kernel": stages}


@pytest.mark.parametrize("programs, cell, proj, hidden, seed, tbptt", DEFAULT_CASES + SLOW_CASES)
def test_barrier_on_matches_reference(programs, cell, proj, hidden, seed, tbptt, barrier_on):
    inputs = _inputs(cell, proj, hidden)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=tbptt)
    with threaded_grid(seed=seed) as grid:
        actual = op_forward_backward(cell, inputs, backend="triton", tbptt=tbptt)
    assert_all_close(actual, expected)
    launches = [launch for launch in grid.launches if launch.kernel in _barriers(proj)]
    assert [launch.kernel for launch in launches] == list(_barriers(proj)), "one forward and one backward launch"
    for launch in launches:
        sync = launch.arguments["p_sync"]
        expected_barriers = _barriers(proj)[launch.kernel]
        assert launch.grid[0] == programs, f"{launch.kernel}: grid {launch.grid}"
        arrivals = {pid: program.arrivals(sync.data_ptr()) for pid, program in launch.programs.items()}
        assert arrivals == dict.fromkeys(range(programs), expected_barriers), (
            f"{launch.kernel}: barriers passed per program")
        assert sync.tolist() == [expected_barriers * programs, 0], f"{launch.kernel}: counter, abort word"
    assert persistent_launch.error_flag(CPU).device_word.item() == 0, "error flag"


@triton.jit
def barrier_short_by_one(p_sync, epoch, num_programs, limit, USE_CLOCK: tl.constexpr):
    """The production barrier after one phantom arrival (program 0, at its
    first barrier): every barrier from then on completes one arrival early."""
    if (epoch == 1) & (tl.program_id(0) == 0):
        tl.atomic_add(p_sync, 1, sem="relaxed", scope="gpu")
    return grid_barrier(p_sync, epoch, num_programs, limit, USE_CLOCK)


def _schedules_caught(cell, proj, hidden, seeds):
    inputs = _inputs(cell, proj, hidden)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=TBPTT)
    caught = []
    for seed in seeds:
        with threaded_grid(seed=seed):
            actual = op_forward_backward(cell, inputs, backend="triton", tbptt=TBPTT)
        try:
            assert_all_close(actual, expected)
        except AssertionError:
            caught.append(seed)
    return caught


def test_off_by_one_barrier_fails(barrier_on, monkeypatch):
    """rnn_tanh, P = 3: seeds 0-9 catch the planted off-by-one in 9 runs (all
    but seed 5; seeds 0-19 in 19; at P = 7, seeds 0-19: lstm 17, gru 17,
    lstm+proj 12). Each seed's schedule is deterministic (the same seed
    gives the same baton passes, program by program); the floor of 6 leaves
    room for a changed RNG stream, and a barrier that works (or an executor
    that does not interleave) catches none."""
    monkeypatch.setattr(persistent, "grid_barrier", barrier_short_by_one)
    caught = _schedules_caught("rnn_tanh", None, 33, range(10))
    assert len(caught) >= 6, f"the planted off-by-one was caught only under seeds {caught} of 0-9"


@pytest.mark.slow
@pytest.mark.parametrize("cell, proj, hidden", LAYERS[7][:3], ids=lambda v: str(v))
def test_off_by_one_barrier_fails_at_seven_programs(cell, proj, hidden, barrier_on, monkeypatch):
    """Seeds 0-19 catch it in 17 (lstm), 12 (lstm+proj), 17 (gru) runs; the floor is 8."""
    monkeypatch.setattr(persistent, "grid_barrier", barrier_short_by_one)
    caught = _schedules_caught(cell, proj, hidden, range(20))
    assert len(caught) >= 8, f"the planted off-by-one was caught only under seeds {caught} of 0-19"


# A barrier's wait under the interpreter is a count of polls; a short one
# makes the timeout path quick to reach (the default, 200 000, never fires
# in the runs above: a waiting program polls a few times per barrier there).
SHORT_POLL_LIMIT = 20


def _no_fill(monkeypatch):
    """Fresh buffers as torch leaves them (no NaN fill): NaN in an output
    after a timeout is then the kernel's poison, not the fill's (an
    unpoisoned LSTM+proj d_ht, say, would give a finite grad w_hr)."""
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", False)


def _forward(inputs, cell="lstm"):
    with torch.no_grad():
        return rnnkernels.recurrence(cell, *(inputs[k] for k in ("xg", "w_hh", "h0", "c0")), b_hn=inputs["b_hn"],
                                     w_hr=inputs["w_hr"], lengths=inputs["lengths"], backend="triton")


@pytest.mark.parametrize("schedule", ["withhold", "run_late"])
def test_forward_timeout_poisons_outputs_and_the_next_call_raises(schedule, barrier_on, monkeypatch):
    """Program 1 never runs (withhold) or runs only after the others have
    finished (run_late: a grid that was not co-resident, as a GPU would run
    it): the others give up at the barrier and leave through the abort
    path; NaN over what each running program owns, the error flag set, and
    the next call raises (once)."""
    monkeypatch.setattr(persistent_launch, "INTERPRETER_POLLS", SHORT_POLL_LIMIT)
    _no_fill(monkeypatch)
    inputs = _inputs("lstm", None, 33)
    with threaded_grid(seed=0, **{schedule: (1, )}) as grid:
        y, h_n, c_n = _forward(inputs)
    (launch, ) = grid.launches_of("forward_persistent_kernel")
    assert all(program.finished for program in launch.programs.values()), "every program that ran left"
    assert launch.arguments["p_sync"][1].item() == 1, "abort word set"
    assert persistent_launch.error_flag(CPU).device_word.item() == 1, "error flag"
    # program p owns units [16p, 16p + 16); a withheld program 1 never writes units 16-31
    owned = slice(None) if schedule == "run_late" else [*range(16), 32]
    for name, value in {"y": y, "h_n": h_n, "c_n": c_n}.items():
        assert torch.isnan(value[..., owned]).all(), f"{name}: not NaN where the running programs own it"
    with pytest.raises(RuntimeError, match="grid barrier timed out .* outputs were filled with NaN"):
        _forward(inputs)
    with threaded_grid(seed=0):
        y, _, _ = _forward(inputs)
    assert not torch.isnan(y).any(), "the flag is cleared once raised: the call after runs"


TIMEOUT_LAYERS = [pytest.param(cell, proj, id=cell if proj is None else f"{cell}_proj{proj}")
                  for cell, proj in [("lstm", None), ("lstm", 5), ("gru", None), ("rnn_tanh", None)]]


@pytest.mark.parametrize("cell, proj", TIMEOUT_LAYERS)
def test_backward_timeout_poisons_every_gradient_and_the_next_call_raises(cell, proj, barrier_on, monkeypatch):
    """A forward that completes, then a backward in which program 2 starts
    only after the others have given up."""
    monkeypatch.setattr(persistent_launch, "INTERPRETER_POLLS", SHORT_POLL_LIMIT)
    _no_fill(monkeypatch)
    inputs = _inputs(cell, proj, 33)
    leaves = {k: inputs[k] for k in ("xg", "w_hh", "h0", "c0", "b_hn", "w_hr") if inputs[k] is not None}
    with threaded_grid(seed=0):
        outputs = rnnkernels.recurrence(cell, inputs["xg"], inputs["w_hh"], inputs["h0"], inputs["c0"],
                                        b_hn=inputs["b_hn"], w_hr=inputs["w_hr"], lengths=inputs["lengths"],
                                        backend="triton")
    with threaded_grid(seed=0, run_late=(2, )):
        sum(output.sum() for output in outputs if output is not None).backward()
    assert persistent_launch.error_flag(CPU).device_word.item() == 1, "error flag"
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        _forward(inputs, cell)
    for name, leaf in leaves.items():
        assert torch.isnan(leaf.grad).all(), f"grad {name}: not all NaN after a timed-out backward"
