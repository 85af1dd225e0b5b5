"""The 'step-graph' path (rnnkernels/triton_kernels/graphs.py): the step loop
captured once per shape and replayed.

Without a GPU the graph is fake_graph.FakeGraph: the launcher code runs, its
launches are recorded against the graph's fixed buffers and replayed on
them, so a call that overwrote buffers an earlier call's results still use
fails here as on a GPU. The ownership tests compare against the reference
with several calls of one shape alive at once (two layers, two directions,
two forwards before one backward) and check that the graphs were replayed,
not only captured. On a GPU the same tests run real CUDA graphs.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")

import rnnkernels
from helpers import forward_backward, make_hx, make_input, make_op_inputs, make_twins
from tolerance import assert_all_close, assert_close

from rnnkernels.backends import unavailable_reason  # noqa: E402
from rnnkernels.triton_kernels import backward as bwd  # noqa: E402
from rnnkernels.triton_kernels import fake_graph, graphs, launch  # noqa: E402
from rnnkernels.triton_kernels import forward as fwd  # noqa: E402

if unavailable_reason("triton") is not None:
    pytest.skip(f"triton backend: {unavailable_reason('triton')}", allow_module_level=True)

DEVICE = "cpu" if launch.is_interpreted() else "cuda"
VARIANTS = [pytest.param("lstm", None, id="lstm"), pytest.param("lstm", 2, id="lstm_proj2"),
            pytest.param("gru", None, id="gru"), pytest.param("rnn_relu", None, id="rnn_relu")]
WEIGHTS = ("w_hh", "b_hn", "w_hr")


@pytest.fixture(autouse=True)
def _ieee_fp32_on_gpu(monkeypatch):
    if not launch.is_interpreted():
        monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "ieee")


@pytest.fixture
def outcomes(monkeypatch):
    """Forces step-graph from an empty graph cache; yields [(loop, 'captured' |
    'replayed' | 'direct')] of every graphs.run_steps call."""
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "step-graph")
    graphs.CACHE.clear()
    seen = []
    run_steps = graphs.run_steps

    def spy(loop, *args):
        outcome = run_steps(loop, *args)
        seen.append((loop.func.__name__, outcome))
        return outcome

    monkeypatch.setattr(graphs, "run_steps", spy)
    yield seen
    graphs.CACHE.clear()


def _leaves(inputs, device):
    return {k: None if v is None else v.detach().to(device).requires_grad_() for k, v in inputs.items()
            if k != "lengths"}


def _two_calls_before_backward(cell, proj, scenario, backend, device):
    """Two same-shape recurrence calls sharing the weights, then one backward of
    random upstream gradients into both: 'accumulate' (independent batches,
    the weights' gradients add up) or 'tbptt_chunks' (the second chunk starts
    from the first one's detached final state). {name: result on the CPU}."""
    first = make_op_inputs(cell, 4, 3, 5, proj=proj, lengths=[4, 2, 3], seed=31)
    second = make_op_inputs(cell, 4, 3, 5, proj=proj, lengths=[3, 4, 1], seed=32)
    leaves = {1: _leaves(first, device), 2: _leaves(second, device)}
    for name in WEIGHTS:
        leaves[2][name] = leaves[1][name]
    outputs = {}
    for call, inputs in ((1, first), (2, second)):
        args = dict(leaves[call])
        if scenario == "tbptt_chunks" and call == 2:
            args["h0"] = outputs["h_n 1"].detach()
            args["c0"] = None if outputs.get("c_n 1") is None else outputs["c_n 1"].detach()
        y, h_n, c_n = rnnkernels.recurrence(cell, **args, lengths=inputs["lengths"], backend=backend)
        outputs.update({f"y {call}": y, f"h_n {call}": h_n, f"c_n {call}": c_n})
    outputs = {k: v for k, v in outputs.items() if v is not None}
    g = torch.Generator().manual_seed(33)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in outputs.values())
    loss.backward()
    results = {k: v.detach().cpu() for k, v in outputs.items()}
    for call in (1, 2):
        for name, leaf in leaves[call].items():
            if leaf is not None and (call == 1 or name not in WEIGHTS) and leaf.grad is not None:
                results[f"grad {name} {call}"] = leaf.grad.cpu()
    return results


@pytest.mark.parametrize("scenario", ["accumulate", "tbptt_chunks"])
@pytest.mark.parametrize("cell, proj", VARIANTS)
def test_two_forwards_before_one_backward_match_the_reference(cell, proj, scenario, outcomes):
    expected = _two_calls_before_backward(cell, proj, scenario, "reference", "cpu")
    actual = _two_calls_before_backward(cell, proj, scenario, "triton", DEVICE)
    assert_all_close(actual, expected)
    assert sorted(outcomes) == [("_backward_steps", "captured"), ("_backward_steps", "replayed"),
                                ("_forward_steps", "captured"), ("_forward_steps", "replayed")], outcomes


@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
def test_stacked_bidirectional_layers_match_torch_nn(kind, outcomes):
    """Two layers x two directions: four same-shape calls forward and four
    backward share one graph each, over an unsorted packed batch."""
    theirs, ours = make_twins(kind, 4, 5, 2, bidirectional=True, backend="triton")
    ours.to(DEVICE)
    hx = make_hx(ours, 3, seed=2)
    expected = forward_backward(theirs, make_input("packed_unsorted", 5, 3, 4, seed=1), hx, seed=3)
    actual = forward_backward(ours, make_input("packed_unsorted", 5, 3, 4, seed=1), hx, seed=3, device=DEVICE)
    assert_all_close(actual, expected)
    assert ours.last_path == "step-graph"
    for loop in ("_forward_steps", "_backward_steps"):
        assert [o for name, o in outcomes if name == loop] == ["captured"] + ["replayed"] * 3, outcomes


def _lstm_call_inputs(steps, seed=41):
    inputs = make_op_inputs("lstm", steps, 3, 5, seed=seed)
    return {k: None if v is None else v.detach().to(DEVICE) for k, v in inputs.items()}


def _forward(inputs, save=True):
    return launch.forward("lstm", inputs["xg"], inputs["w_hh"], inputs["h0"], inputs["c0"], None, None, None, save)


def test_handing_out_the_fixed_buffers_fails_the_ownership_check(outcomes, monkeypatch):
    """The planted fault an ownership test must catch: outputs that alias the
    graph's buffers (copy-out replaced by sharing their storage)."""
    monkeypatch.setattr(graphs, "_copy_out", lambda fixed, tensors, writes: [
        tensors[name].set_(fixed[name]) for name in writes])
    with pytest.raises(AssertionError, match="max error"):
        test_two_forwards_before_one_backward_match_the_reference("lstm", None, "accumulate", outcomes)


def test_one_graph_serves_inference_mode_and_no_grad(outcomes):
    """The fixed buffers are normal tensors even when the first call ran in
    inference mode, so a later call outside it can copy into them."""
    inputs = _lstm_call_inputs(3)
    with torch.inference_mode():
        expected = _forward(inputs, save=False)[0]
    for mode in (torch.no_grad, torch.inference_mode, torch.enable_grad):
        with mode():
            assert torch.equal(_forward(inputs, save=False)[0], expected), mode.__name__
    assert [o for _, o in outcomes] == ["captured"] + ["replayed"] * 3


@pytest.mark.skipif(DEVICE != "cpu", reason="the stand-in graph runs on CPU tensors; test_real_capture is its twin")
def test_caller_already_capturing_gets_direct_launches(outcomes):
    """Inside someone else's capture the loop launches into that capture: no
    graph of ours, and replaying theirs computes the layer into the buffers
    of the call made during the capture (h_n and c_n are clones taken after
    the loop, torch ops that the stand-in does not replay: read the states)."""
    inputs = _lstm_call_inputs(3)
    expected = rnnkernels.recurrence("lstm", *(inputs[k] for k in ("xg", "w_hh", "h0", "c0")), backend="reference")
    outer = fake_graph.FakeGraph()
    with fake_graph.capture(outer):
        y, _, _, hs, cs, _, _ = _forward(inputs)
    assert outcomes == [("_forward_steps", "direct")] and len(graphs.CACHE) == 0
    assert [launched[0] for launched in outer.launches] == [fwd.forward_step_kernel] * 3
    outer.replay()
    assert_all_close({"y": y, "h_n": hs[-1], "c_n": cs[-1]}, dict(zip(("y", "h_n", "c_n"), expected)))


def test_graph_cache_is_bounded_least_recently_used(outcomes, monkeypatch):
    """One graph per T; the least recently used one goes first."""
    monkeypatch.setattr(graphs.CACHE, "capacity", 2)
    for steps in (1, 2, 3, 2, 1, 3):
        _forward(_lstm_call_inputs(steps), save=False)
        assert len(graphs.CACHE) <= 2
    # 1, 2, 3 (1 evicted), 2 (hit), 1 (3 evicted), 3 (2 evicted)
    assert [o for _, o in outcomes] == ["captured"] * 3 + ["replayed"] + ["captured"] * 2


@pytest.mark.skipif(DEVICE != "cpu", reason="spies on the stand-in graph's capture")
def test_every_kernel_warms_up_before_its_capture(outcomes, monkeypatch):
    """A miss runs the loop directly (compiling every kernel) before capturing it."""
    events = []

    class Logged:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                events.append(self.name)
                return self.kernel[grid](*args, **kwargs)
            return run

    for module, name in [(fwd, "forward_step_kernel"), (fwd, "forward_projection_step_kernel"),
                         (bwd, "backward_projection_carry_step_kernel"), (bwd, "backward_projection_cell_step_kernel")]:
        monkeypatch.setattr(module, name, Logged(name, getattr(module, name)))
    begin = fake_graph.capture

    def logged_capture(graph):
        events.append("capture")
        return begin(graph)

    monkeypatch.setattr(fake_graph, "capture", logged_capture)
    inputs = make_op_inputs("lstm", 2, 3, 5, proj=2, seed=43)
    rnnkernels.recurrence("lstm", **_leaves(inputs, DEVICE), backend="triton")[0].sum().backward()
    forward_run = ["forward_step_kernel", "forward_projection_step_kernel"] * 2
    backward_run = ["backward_projection_carry_step_kernel", "backward_projection_cell_step_kernel"] * 2 + [
        "backward_projection_carry_step_kernel"]
    assert events == forward_run + ["capture"] + backward_run + ["capture"], events


def test_fake_capture_refuses_a_sync():
    graph = fake_graph.FakeGraph()
    with pytest.raises(RuntimeError, match="_local_scalar_dense inside a graph capture"):
        with fake_graph.capture(graph):
            torch.ones(2).sum().item()
    assert not fake_graph.is_capturing()
    with pytest.raises(RuntimeError, match="nothing was captured"):
        graph.replay()


def test_step_graph_is_the_gpu_default_and_plain_step_the_interpreters(monkeypatch):
    monkeypatch.delenv("RNNKERNELS_TRITON_PATH", raising=False)
    monkeypatch.setattr(launch, "is_interpreted", lambda: True)
    assert launch.choose_path("lstm", 16, 768, 768, torch.float32) == "step"
    monkeypatch.setattr(launch, "is_interpreted", lambda: False)
    assert launch.choose_path("lstm", 16, 768, 768, torch.float32) == "step-graph"
    assert launch.choose_path("lstm", 16, 64, 64, torch.float32) == "sequence"
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "step")
    assert launch.choose_path("lstm", 16, 768, 768, torch.float32) == "step"
    assert "step-graph" in rnnkernels.backends.backend_implementation("triton").paths


@pytest.mark.skipif(DEVICE != "cuda", reason="a real CUDA graph capture needs a CUDA GPU")
def test_real_capture(outcomes):
    """torch.cuda.CUDAGraph holds the loop; inside a caller's own capture the
    loop launches directly into it (warmed up by the calls before)."""
    inputs = _lstm_call_inputs(6)
    expected = _forward(inputs)
    again = _forward(inputs)
    assert all(isinstance(entry.graph, torch.cuda.CUDAGraph) for entry in graphs.CACHE._entries.values())
    for name, a, b in zip(("y", "h_n", "c_n", "hs", "cs", "gates"), again, expected):
        assert torch.equal(a, b), name
    outer = torch.cuda.CUDAGraph()
    with torch.cuda.graph(outer):
        inside = _forward(inputs)
    outer.replay()
    torch.cuda.synchronize()
    for name, a, b in zip(("y", "h_n", "c_n", "hs", "cs", "gates"), inside, expected):
        assert torch.equal(a, b), name
    assert [o for _, o in outcomes] == ["captured", "replayed", "direct"]


@pytest.mark.skipif(DEVICE != "cuda", reason="torch.compile's reduce-overhead mode captures CUDA graphs: a CUDA GPU")
def test_reduce_overhead_compile_launches_into_its_graph(outcomes, monkeypatch):
    """torch.compile(mode="reduce-overhead") captures the whole model in its
    own CUDA graph: the step loop launches straight into it, and the results
    equal eager ones (up to inductor's order of summation in the input
    projection) over several replays."""
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "allow_rnn", True)
    _, eager = make_twins("lstm", 4, 5, 1, backend="triton")
    _, ours = make_twins("lstm", 4, 5, 1, backend="triton")
    ours.load_state_dict(eager.state_dict())
    eager.to(DEVICE), ours.to(DEVICE)
    compiled = torch.compile(ours, mode="reduce-overhead")
    x = torch.randn(6, 3, 4, dtype=torch.float64, device=DEVICE)
    with torch.no_grad():
        expected = eager(x)[0]
        for call in range(4):
            assert_close(f"output of call {call}", compiled(x)[0].clone(), expected)
    assert ("_forward_steps", "direct") in outcomes, f"no launch inside the compiled graph's capture: {outcomes}"
    torch._dynamo.reset()


@pytest.mark.parametrize("value, expected", [("", graphs.DEFAULT_CACHE_SIZE), ("3", 3), ("0", None), ("many", None)],
                         ids=["unset", "three", "zero", "word"])
def test_cache_size_from_the_environment(value, expected, monkeypatch):
    monkeypatch.setenv("RNNKERNELS_GRAPH_CACHE_SIZE", value)
    if expected is None:
        with pytest.raises(ValueError, match=f"RNNKERNELS_GRAPH_CACHE_SIZE must be a positive integer .*{value!r}"):
            graphs.cache_size_from_environment()
    else:
        assert graphs.cache_size_from_environment() == expected
