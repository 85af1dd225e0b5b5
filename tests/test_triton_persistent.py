"""The triton backend's 'persistent' path (triton_kernels/persistent.py,
persistent_launch.py, grid_sync.py) against the reference.

Without a GPU the kernels run under Triton's interpreter in their
launch-per-stage form: every stage (a step, or a phase of a step with a
projection) is one launch of the full grid of P programs with the barrier
compiled out, so the unit partitioning, the exchange of h (dG backward)
between programs and the truncated-BPTT cuts run as on a GPU. P is set
through H (16 units per program): H = 13 gives 1 program, 33 gives 3, 100
gives 7, none a multiple of 16 or of P. The barrier itself runs here with
P = 1 (it completes) and P = 3 (the sequential interpreter cannot complete
it: the timeout, the NaN poisoning and the error flag are what run), and,
where tests/threaded_grid.py (one thread per program, branch
issue12-threaded-executor) is present, with P = 3 and 7 in one launch:
persistent_launch.INTERPRETER_BARRIER = True is the knob.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")

import rnnkernels  # noqa: E402
from helpers import (MODULE_KINDS, forward_backward, make_hx, make_input, make_op_inputs,  # noqa: E402
                     make_twins, op_forward_backward)
from tolerance import assert_all_close, max_error  # noqa: E402

from rnnkernels.backends import unavailable_reason  # noqa: E402
from rnnkernels.triton_kernels import launch, persistent, persistent_launch  # noqa: E402

if unavailable_reason("triton") is not None:
    pytest.skip(f"triton backend: {unavailable_reason('triton')}", allow_module_level=True)
if not launch.is_interpreted():
    pytest.skip("these tests run the interpreter's launch-per-stage form; the GPU runs the real grid "
                "(tests/test_triton_kernels.py with RNNKERNELS_TRITON_PATH=persistent, scripts/gpu_run.sh)",
                allow_module_level=True)

VARIANTS = [pytest.param(c, p, id=c if p is None else f"{c}_proj{p}")
            for c, p in [("lstm", None), ("lstm", 5), ("gru", None), ("rnn_tanh", None), ("rnn_relu", None)]]
# hidden size -> programs (persistent_launch.BLOCK_U = 16 units each)
PROGRAMS = {13: 1, 33: 3, 100: 7}


@pytest.fixture(autouse=True)
def persistent_path(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "persistent")
    monkeypatch.delenv("RNNKERNELS_TRITON_SYNC_CHECK", raising=False)


class LaunchCounter:
    """Counts launches of the persistent kernels (and their grids) while installed."""

    def __init__(self, monkeypatch):
        self.grids = {"forward_persistent_kernel": [], "backward_persistent_kernel": []}
        for name, grids in self.grids.items():
            monkeypatch.setattr(persistent, name, self._Counting(getattr(persistent, name), grids))

    class _Counting:
        def __init__(self, kernel, grids):
            self.kernel, self.grids = kernel, grids

        def __getitem__(self, grid):
            self.grids.append(tuple(grid))
            return self.kernel[grid]


@pytest.mark.parametrize("cell, proj", VARIANTS)
@pytest.mark.parametrize("hidden", sorted(PROGRAMS), ids=lambda h: f"P{PROGRAMS[h]}_H{h}")
def test_values_and_gradients_float64(cell, proj, hidden, monkeypatch):
    """Lengths with an empty row, tbptt cuts inside the sequence, every gradient."""
    counter = LaunchCounter(monkeypatch)
    steps, lengths, tbptt = 4, [4, 0, 3], 3
    inputs = make_op_inputs(cell, steps, len(lengths), hidden, proj=proj, lengths=lengths, seed=31)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=tbptt)
    actual = op_forward_backward(cell, inputs, backend="triton", tbptt=tbptt)
    assert_all_close(actual, expected)
    programs = PROGRAMS[hidden]  # the projection's 5 outputs need only 1
    phases = 2 if proj else 1
    assert counter.grids["forward_persistent_kernel"] == [(programs,)] * (steps * phases)
    assert counter.grids["backward_persistent_kernel"] == [(programs,)] * (steps * phases + 1)


@pytest.mark.parametrize("cell, proj", VARIANTS)
def test_float32_within_policy(cell, proj):
    """Against the float64 reference, bounded by the reference's own float32 error;
    3 programs, 17 rows (two row blocks per program), tbptt 2."""
    inputs64 = make_op_inputs(cell, 5, 17, 33, proj=proj and 18, lengths=[5] * 8 + [3] * 8 + [0], seed=33)
    low = {k: v if v is None or k == "lengths" else v.detach().float().requires_grad_() for k, v in inputs64.items()}
    exact = op_forward_backward(cell, inputs64, backend="reference", tbptt=2)
    reference_low = op_forward_backward(cell, low, backend="reference", tbptt=2)
    actual = op_forward_backward(cell, low, backend="triton", tbptt=2)
    for name, expected in exact.items():
        assert actual[name].dtype == torch.float32, name
        assert_all_close({name: actual[name]}, {name: expected}, dtype=torch.float32,
                         reference_error=max_error(reference_low[name], expected))


@pytest.mark.parametrize("cell, proj", [pytest.param("lstm", 5, id="lstm_proj5"), pytest.param("gru", None, id="gru")])
@pytest.mark.parametrize("forward_path, backward_path", [("persistent", "step"), ("step", "persistent")],
                         ids=["persistent_then_step", "step_then_persistent"])
def test_mixed_with_the_step_path(cell, proj, forward_path, backward_path, monkeypatch):
    """The saved buffers have one layout: a forward on one path, its backward on the other."""
    inputs = make_op_inputs(cell, 4, 3, 33, proj=proj, lengths=[4, 2, 0], seed=35)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=2)
    fresh = {k: v if v is None or k == "lengths" else v.detach().clone().requires_grad_()
             for k, v in inputs.items()}
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", forward_path)
    y, h_n, c_n = rnnkernels.recurrence(cell, fresh["xg"], fresh["w_hh"], fresh["h0"], fresh["c0"],
                                        b_hn=fresh["b_hn"], w_hr=fresh["w_hr"], lengths=fresh["lengths"],
                                        tbptt=2, backend="triton")
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", backward_path)
    g = torch.Generator().manual_seed(0)
    outputs = {"y": y, "h_n": h_n, "c_n": c_n}
    sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outputs.values()
        if t is not None).backward()
    actual = {k: v.detach() for k, v in outputs.items() if v is not None}
    actual.update({f"grad {k}": v.grad for k, v in fresh.items() if v is not None and k != "lengths"})
    assert_all_close(actual, expected)


@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
def test_module_matches_torch_nn_and_names_the_path(kind):
    """A bidirectional layer over an unsorted packed batch, every output and gradient
    against torch.nn in float64; last_path names the programs."""
    theirs, ours = make_twins(kind, 4, 33, 1, bidirectional=True, backend="triton")

    def run(module):
        return forward_backward(module, make_input("packed_unsorted", 4, 3, 4, seed=1), make_hx(ours, 3, seed=2),
                                seed=3)

    assert_all_close(run(ours), run(theirs))
    assert ours.last_backend == "triton"
    assert ours.last_path == "persistent(P=3)"


def test_one_program_runs_the_real_barrier(monkeypatch):
    """With INTERPRETER_BARRIER the whole grid is one launch with the barrier compiled
    in; one program passes every barrier alone (P = 1 here: the sequential
    interpreter cannot run P > 1 programs that wait on each other)."""
    monkeypatch.setattr(persistent_launch, "INTERPRETER_BARRIER", True)
    counter = LaunchCounter(monkeypatch)
    inputs = make_op_inputs("lstm", 3, 2, 13, proj=5, lengths=[3, 1], seed=37)
    expected = op_forward_backward("lstm", inputs, backend="reference", tbptt=2)
    actual = op_forward_backward("lstm", inputs, backend="triton", tbptt=2)
    assert_all_close(actual, expected)
    assert counter.grids["forward_persistent_kernel"] == [(1,)]
    assert counter.grids["backward_persistent_kernel"] == [(1,)]


def _timed_out_forward(monkeypatch):
    """A forward whose barrier cannot complete: 3 programs run one after another
    by the sequential interpreter, the first waits 5 polls and gives up."""
    monkeypatch.setattr(persistent_launch, "INTERPRETER_BARRIER", True)
    monkeypatch.setattr(persistent_launch, "INTERPRETER_POLLS", 5)
    inputs = make_op_inputs("gru", 3, 2, 33, seed=39)
    args = {k: None if v is None or k == "lengths" else v.detach() for k, v in inputs.items()}
    y, h_n, _ = rnnkernels.recurrence("gru", args["xg"], args["w_hh"], args["h0"], b_hn=args["b_hn"],
                                      backend="triton")
    return y, h_n, args


def test_timed_out_barrier_poisons_outputs_and_the_next_call_raises(monkeypatch):
    y, h_n, args = _timed_out_forward(monkeypatch)
    assert torch.isnan(y).all() and torch.isnan(h_n).all(), "every program poisons what it owns"
    flag = persistent_launch.error_flag(y.device)
    assert int(flag.host_word[0]) == 1 and int(flag.device_word[0]) == 1
    monkeypatch.setattr(persistent_launch, "INTERPRETER_BARRIER", False)
    with pytest.raises(RuntimeError, match="grid barrier timed out .* outputs were filled with NaN"):
        rnnkernels.recurrence("gru", args["xg"], args["w_hh"], args["h0"], b_hn=args["b_hn"], backend="triton")
    assert int(flag.host_word[0]) == 0 and int(flag.device_word[0]) == 0, "reported once, then reset"
    y, _, _ = rnnkernels.recurrence("gru", args["xg"], args["w_hh"], args["h0"], b_hn=args["b_hn"],
                                    backend="triton")
    assert not torch.isnan(y).any()


def test_sync_check_raises_from_the_failing_call(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_TRITON_SYNC_CHECK", "1")
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        _timed_out_forward(monkeypatch)
    assert int(persistent_launch.error_flag(torch.device("cpu")).host_word[0]) == 0


def test_flag_is_not_read_while_capturing(monkeypatch):
    """Inside a graph capture the replay, not this call, runs the kernels: no check."""
    flag = persistent_launch.error_flag(torch.device("cpu"))
    flag.host_word.fill_(1)
    monkeypatch.setattr(persistent_launch, "_capturing", lambda device: True)
    persistent_launch.raise_pending_error(torch.device("cpu"))
    monkeypatch.setattr(persistent_launch, "_capturing", lambda device: False)
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        persistent_launch.raise_pending_error(torch.device("cpu"))


def test_path_rule_on_a_gpu(monkeypatch):
    """The stated model (persistent_launch.refusal), with the GPU's choices, no GPU needed:
    persistent where the grid fits the SMs and each program's weights the budget."""
    monkeypatch.delenv("RNNKERNELS_TRITON_PATH")
    monkeypatch.setattr(launch, "is_interpreted", lambda: False)
    monkeypatch.setattr(persistent_launch, "sm_count", lambda: 132)
    assert launch.choose_path("lstm", 16, 32, 32, torch.bfloat16) == "sequence"
    assert launch.choose_path("lstm", 16, 256, 256, torch.bfloat16) == "persistent"
    assert launch.choose_path("gru", 64, 512, 512, torch.float16) == "persistent"
    assert launch.choose_path("lstm", 16, 1024, 1024, torch.bfloat16) == "persistent"
    assert launch.choose_path("lstm", 16, 1024, 1024, torch.float64) == "step-graph", "fp64: forced only"
    assert launch.choose_path("lstm", 16, 4096, 4096, torch.bfloat16) == "step-graph", "more programs than SMs"
    monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "tf32")
    big = next(h for h in (256, 512, 1024, 2048)
               if persistent_launch.resident_bytes("lstm", h, h, torch.float32, False)
               > persistent_launch.RESIDENT_BUDGET["tf32"])
    assert launch.choose_path("lstm", 16, big // 2, big // 2, torch.float32) == "persistent"
    assert launch.choose_path("lstm", 16, big, big, torch.float32) == "step-graph", "over the budget"
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "persistent")
    assert launch.choose_path("lstm", 16, big, big, torch.float32) == "persistent", "forced: the launch checks"
    with pytest.raises(ValueError, match=r"persistent cannot run this layer: it needs 256 programs .* 132 SMs"):
        launch.choose_path("lstm", 16, 4096, 4096, torch.bfloat16)


def test_kernel_path_names_the_programs_without_launching():
    from rnnkernels.backends import backend_implementation

    backend = backend_implementation("triton")
    for hidden, proj, programs in [(13, None, 1), (33, None, 3), (100, None, 7), (20, 40, 3)]:
        xg = torch.empty(5, 2, 4 * hidden, device="meta")
        w_hh = torch.empty(4 * hidden, proj or hidden, device="meta")
        assert backend.kernel_path("lstm", xg, w_hh, None) == f"persistent(P={programs})"


def test_unknown_path_names_persistent_among_the_choices(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "fastest")
    with pytest.raises(ValueError, match="one of step, step-graph, sequence, persistent, got 'fastest'"):
        launch.choose_path("lstm", 16, 32, 32, torch.float32)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_custom_ops_pass_opcheck_on_the_persistent_path(cell):
    from rnnkernels.triton_kernels import ops

    inputs = {k: None if v is None else v.detach()
              for k, v in make_op_inputs(cell, 3, 2, 33, lengths=[3, 1], seed=41).items()}
    forward_args = (cell, inputs["xg"], inputs["w_hh"], inputs["h0"], inputs["c0"], inputs["b_hn"], None,
                    inputs["lengths"], True)
    torch.library.opcheck(ops.triton_forward, forward_args, test_utils=("test_schema", "test_faketensor"))
    y, h_n, c_n, hs, cs, gates, aux = ops.triton_forward(*forward_args)
    backward_args = (cell, 2, inputs["w_hh"], None, inputs["lengths"], hs, cs, gates, aux, torch.randn_like(y),
                     torch.randn_like(h_n), torch.randn_like(c_n) if cell == "lstm" else None,
                     inputs["b_hn"] is not None)
    torch.library.opcheck(ops.triton_backward, backward_args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MODULE_KINDS))
def test_every_module_kind_two_layers(kind):
    theirs, ours = make_twins(kind, 3, 20, 2, bidirectional=True, backend="triton", tbptt=None)

    def run(module):
        return forward_backward(module, make_input("packed", 5, 4, 3, seed=4), make_hx(ours, 4, seed=5), seed=6)

    assert_all_close(run(ours), run(theirs))
    assert ours.last_path == "persistent(P=2)"


@pytest.mark.parametrize("programs, completes", [(1, True), (3, False)], ids=["one_program", "three_programs"])
def test_barrier_floor_kernel_counts_its_barriers(programs, completes):
    """The empty barrier loop, with the real barrier under the sequential interpreter:
    one program passes all 5 barriers; three cannot meet, and every one leaves at
    the first barrier through the abort word, the error word set."""
    sync = torch.zeros(2, dtype=torch.int32)
    error = torch.zeros(1, dtype=torch.int32)
    persistent.barrier_floor_kernel[(programs,)](5, sync, error, 7, USE_CLOCK=False)
    if completes:
        assert sync.tolist() == [5, 0] and error.item() == 0
    else:
        assert sync.tolist() == [3, 1] and error.item() == 1


@pytest.mark.parametrize("cell, proj, hidden", [("lstm", 5, 33), ("gru", None, 100)], ids=["lstm_proj5_P3", "gru_P7"])
@pytest.mark.parametrize("seed", [1, 2])
def test_real_barrier_under_the_threaded_executor(cell, proj, hidden, seed, monkeypatch):
    """The whole grid in one launch with the barrier on, one thread per program
    (tests/threaded_grid.py, where present): unequal and empty rows, tbptt cuts."""
    threaded = pytest.importorskip("threaded_grid", reason="tests/threaded_grid.py (the threaded executor) is absent")
    if threaded.unsupported_reason() is not None:
        pytest.skip(threaded.unsupported_reason())
    monkeypatch.setattr(persistent_launch, "INTERPRETER_BARRIER", True)
    monkeypatch.setattr(persistent_launch, "INTERPRETER_POLLS", 10**9)  # the executor's own bound ends a stall
    inputs = make_op_inputs(cell, 4, 3, hidden, proj=proj, lengths=[4, 0, 2], seed=43)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=3)
    with threaded.threaded_grid(seed=seed, kernels=("forward_persistent_kernel", "backward_persistent_kernel")) as grid:
        actual = op_forward_backward(cell, inputs, backend="triton", tbptt=3)
    assert_all_close(actual, expected)
    assert [launch.kernel for launch in grid.launches] == ["forward_persistent_kernel", "backward_persistent_kernel"]


def test_refused_launch_raises_when_forced_and_falls_back_otherwise(monkeypatch):
    """Past the barrier counter's int32 range (here: shrunk by pretending a huge grid)
    the launch is refused: RuntimeError when forced, the step path with a warning
    under `auto`."""
    monkeypatch.setattr(persistent_launch, "INTERPRETER_BARRIER", True)
    monkeypatch.setattr(persistent_launch, "programs", lambda hidden, hidden_out, units=None: 2**30)
    inputs = make_op_inputs("rnn_tanh", 3, 2, 13, seed=45)
    args = {k: None if v is None or k == "lengths" else v.detach() for k, v in inputs.items()}
    with pytest.raises(RuntimeError, match=r"persistent, but the persistent path cannot run its 1073741824 "
                                           r"programs on cpu: 3 stages x 1073741824 programs overflow"):
        rnnkernels.recurrence("rnn_tanh", args["xg"], args["w_hh"], args["h0"], backend="triton")
    monkeypatch.setattr(launch, "_forced", lambda: "")
    monkeypatch.setattr(launch, "choose_path", lambda *a: "persistent")
    expected = rnnkernels.recurrence("rnn_tanh", args["xg"], args["w_hh"], args["h0"], backend="reference")[0]
    with pytest.warns(RuntimeWarning, match="running the step path instead"):
        y = rnnkernels.recurrence("rnn_tanh", args["xg"], args["w_hh"], args["h0"], backend="triton")[0]
    assert_all_close({"y": y}, {"y": expected})


def test_first_call_inside_a_graph_capture_is_refused(monkeypatch):
    """The error flag's pinned host word cannot be allocated while capturing: a
    first persistent call inside a capture is refused (forced: RuntimeError)."""
    monkeypatch.setattr(persistent_launch, "INTERPRETER_BARRIER", True)
    monkeypatch.setattr(persistent_launch, "_FLAGS", {})
    monkeypatch.setattr(persistent_launch, "_capturing", lambda device: True)
    inputs = make_op_inputs("rnn_tanh", 3, 2, 13, seed=47)
    args = {k: None if v is None or k == "lengths" else v.detach() for k, v in inputs.items()}
    with pytest.raises(RuntimeError, match="error flag is created by a first call outside any graph capture"):
        rnnkernels.recurrence("rnn_tanh", args["xg"], args["w_hh"], args["h0"], backend="triton")
