"""The triton backend's own kernel paths against the reference, at op level.

The backend-parametrized suites run the triton backend on the path its
launcher picks; here every path (per-step kernels launched one by one or
replayed from a graph, fake_graph.FakeGraph without a GPU, and the
whole-sequence kernel) is forced, with tiles shrunk to 16 so odd sizes span several row,
unit and K tiles. On a machine without a GPU this runs under Triton's
interpreter (tests/conftest.py sets TRITON_INTERPRET=1).
"""

import pytest
import torch
from torch.autograd import gradcheck

triton = pytest.importorskip("triton", reason="triton is not installed")

import rnnkernels
from helpers import (MODULE_KINDS, OP_CELLS, forward_backward, make_hx, make_input, make_op_inputs, make_twins,
                     op_forward_backward)
from tolerance import assert_all_close, max_error

from rnnkernels.backends import unavailable_reason  # noqa: E402
from rnnkernels.triton_kernels import launch  # noqa: E402

if unavailable_reason("triton") is not None:
    pytest.skip(f"triton backend: {unavailable_reason('triton')}", allow_module_level=True)

DEVICE = "cuda" if not launch.is_interpreted() else "cpu"
VARIANTS = [("lstm", None), ("lstm", 2)] + [(cell, None) for cell in OP_CELLS[1:]]
VARIANT_PARAMS = [pytest.param(c, p, id=c if p is None else f"{c}_proj{p}") for c, p in VARIANTS]


@pytest.fixture(autouse=True)
def _ieee_fp32_on_gpu(monkeypatch):
    """fp32 follows torch.nn's RNN precision, TF32 by default on a GPU; these
    tests hold fp32 to the fp32 tolerance, so they run it in IEEE there."""
    if not launch.is_interpreted():
        monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "ieee")


# The persistent path has its own file (tests/test_triton_persistent.py): its
# launch-per-stage form would add minutes here under the interpreter. On a
# GPU it joins the others.
FIXTURE_PATHS = [p for p in launch.PATHS if p != "persistent" or not launch.is_interpreted()]


@pytest.fixture(params=FIXTURE_PATHS)
def path(request, monkeypatch):
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", request.param)
    return request.param


@pytest.fixture
def small_tiles(monkeypatch):
    """16-wide tiles: sizes above 16 then cross tile boundaries in every dimension."""
    monkeypatch.setattr(launch, "MAX_BLOCK", 16)


def _on_device(inputs):
    return {k: v if v is None or k == "lengths" else v.detach().to(DEVICE).requires_grad_(v.requires_grad)
            for k, v in inputs.items()}


@pytest.mark.parametrize("cell, proj", VARIANT_PARAMS)
@pytest.mark.parametrize("lengths, tbptt", [(None, None), ([5, 1, 0, 3], 2)],
                         ids=["full-bptt", "ragged_with_empty-tbptt2"])
def test_path_matches_reference(cell, proj, lengths, tbptt, path):
    batch = 3 if lengths is None else len(lengths)
    inputs = make_op_inputs(cell, 5, batch, 4, proj=proj, lengths=lengths, seed=21)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=tbptt)
    actual = op_forward_backward(cell, _on_device(inputs), backend="triton", tbptt=tbptt)
    assert_all_close({k: v.cpu() for k, v in actual.items()}, expected)


@pytest.mark.parametrize("cell, proj", VARIANT_PARAMS)
@pytest.mark.parametrize("steps, batch, hidden", [(1, 1, 1), (3, 17, 33)], ids=lambda v: str(v))
def test_odd_sizes_across_tiles(cell, proj, steps, batch, hidden, path, small_tiles):
    lengths = None if batch == 1 else [steps] + [max(steps - 1, 1)] * (batch - 1)
    inputs = make_op_inputs(cell, steps, batch, hidden, proj=proj and min(proj, hidden), lengths=lengths, seed=23)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=2)
    actual = op_forward_backward(cell, _on_device(inputs), backend="triton", tbptt=2)
    assert_all_close({k: v.cpu() for k, v in actual.items()}, expected)


# the interpreter computes bfloat16 wrongly (DESIGN.md): bf16 is checked on a GPU only
LOW_DTYPES = [torch.float32, torch.float16] + ([] if launch.is_interpreted() else [torch.bfloat16])


@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("cell, proj", VARIANT_PARAMS)
def test_reduced_precision_within_policy(cell, proj, dtype, path):
    """Against the float64 reference, bounded by the reference's own error in dtype."""
    inputs64 = make_op_inputs(cell, 5, 3, 18, proj=proj, lengths=[5, 4, 2], seed=25)
    low = {k: v if v is None or k == "lengths" else v.detach().to(dtype).requires_grad_()
           for k, v in inputs64.items()}
    exact = op_forward_backward(cell, inputs64, backend="reference", tbptt=4)
    reference_low = op_forward_backward(cell, low, backend="reference", tbptt=4)
    actual = op_forward_backward(cell, _on_device(low), backend="triton", tbptt=4)
    for name, expected in exact.items():
        assert actual[name].dtype == dtype, f"{name}: dtype {actual[name].dtype}, expected {dtype}"
        assert_all_close({name: actual[name].cpu()}, {name: expected}, dtype=dtype,
                         reference_error=max_error(reference_low[name], expected))


@pytest.mark.parametrize("cell, proj", VARIANT_PARAMS)
def test_gradcheck(cell, proj, path):
    """fast_mode: gradcheck along random directions, a few kernel runs instead of one per element."""
    inputs = _on_device(make_op_inputs(cell, 3, 2, 3, proj=proj, lengths=[3, 2], seed=27))
    names = ("xg", "w_hh", "h0", "c0", "b_hn", "w_hr")

    def run(*args):
        y, h_n, c_n = rnnkernels.recurrence(cell, *args[:4], b_hn=args[4], w_hr=args[5],
                                            lengths=inputs["lengths"], backend="triton")
        return (y, h_n) if c_n is None else (y, h_n, c_n)

    assert gradcheck(run, tuple(inputs[name] for name in names), fast_mode=True)


@pytest.mark.parametrize("cell", OP_CELLS)
def test_custom_ops_pass_opcheck(cell):
    """Schemas, fake (meta) implementations and dispatch of the torch.library ops."""
    from rnnkernels.triton_kernels import ops

    inputs = {k: None if v is None else v.detach()
              for k, v in _on_device(make_op_inputs(cell, 3, 2, 3, lengths=[3, 1], seed=29)).items()}
    forward_args = (cell, inputs["xg"], inputs["w_hh"], inputs["h0"], inputs["c0"], inputs["b_hn"], None,
                    inputs["lengths"], True)
    torch.library.opcheck(ops.triton_forward, forward_args, test_utils=("test_schema", "test_faketensor"))
    y, h_n, c_n, hs, cs, gates, aux = ops.triton_forward(*forward_args)
    backward_args = (cell, 2, inputs["w_hh"], None, inputs["lengths"], hs, cs, gates, aux, torch.randn_like(y),
                     torch.randn_like(h_n), torch.randn_like(c_n) if cell == "lstm" else None,
                     inputs["b_hn"] is not None)
    torch.library.opcheck(ops.triton_backward, backward_args, test_utils=("test_schema", "test_faketensor"))


# The step path's loop runs captured in a CUDA graph on a GPU, launch by launch under the interpreter.
STEP = "step" if launch.is_interpreted() else "step-graph"
# Mid-sized layers: the persistent path on a GPU (its W slices fit), the step path under the interpreter.
MID = STEP if launch.is_interpreted() else "persistent"


def test_path_rule_and_override(monkeypatch):
    monkeypatch.delenv("RNNKERNELS_TRITON_PATH", raising=False)
    small = launch.choose_path("lstm", 16, 32, 32, torch.float32)
    large = launch.choose_path("lstm", 16, 1024, 1024, torch.float32)
    widest = launch.choose_path("gru", 256, 64, 64, torch.float32)
    projected = launch.choose_path("lstm", 16, 64, 65, torch.float32)
    assert (small, large, widest, projected) == ("sequence", STEP, "sequence", MID)
    for forced in ("step", "step-graph"):
        monkeypatch.setenv("RNNKERNELS_TRITON_PATH", forced)
        assert launch.choose_path("lstm", 16, 32, 32, torch.float32) == forced
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "sequence")
    with pytest.raises(ValueError, match=r"sequence needs hidden and output sizes <= 64 .* got 65 and 65"):
        launch.choose_path("rnn_tanh", 16, 65, 65, torch.float32)
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "fastest")
    with pytest.raises(ValueError, match="RNNKERNELS_TRITON_PATH must be one of step, step-graph, sequence, "
                                         "persistent"):
        launch.choose_path("lstm", 16, 32, 32, torch.float32)


@pytest.mark.parametrize("cell, batch, hidden, proj, forced, expected", [
    ("lstm", 3, 64, None, "", "sequence"), ("gru", 3, 65, None, "", MID.replace("persistent", "persistent(P=5)")),
    ("lstm", 3, 32, 80, "", MID.replace("persistent", "persistent(P=5)")), ("rnn_relu", 3, 8, None, "step", "step"),
    ("rnn_tanh", 3, 8, None, "step-graph", "step-graph"),
], ids=["small", "wide", "wide_proj", "forced_step", "forced_step_graph"])
def test_kernel_path_names_the_path_without_launching(cell, batch, hidden, proj, forced, expected, monkeypatch):
    """kernel_path reads shapes, dtype and the environment only: meta tensors (no data) will do."""
    from rnnkernels.backends import backend_implementation

    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", forced)
    g = {"lstm": 4, "gru": 3}.get(cell, 1)
    xg = torch.empty(7, batch, g * hidden, device="meta")
    w_hh = torch.empty(g * hidden, proj or hidden, device="meta")
    w_hr = torch.empty(proj, hidden, device="meta") if proj else None
    backend = backend_implementation("triton")
    assert backend.kernel_path(cell, xg, w_hh, w_hr) == expected
    assert expected.split("(")[0] in backend.paths


def test_other_backends_name_their_paths(monkeypatch):
    from rnnkernels.backends import backend_implementation

    xg, w_hh = torch.empty(20, 16, 4 * 32, device="meta"), torch.empty(4 * 32, 32, device="meta")
    assert backend_implementation("reference").kernel_path("lstm", xg, w_hh, None) == "loop"
    assert backend_implementation("cpu").kernel_path("lstm", xg, w_hh, None) == "loop"
    cuda = backend_implementation("cuda")
    for request, expected in [("", "step"), ("step", "step"), ("persistent", "persistent"), ("auto", "persistent")]:
        monkeypatch.setenv("RNNKERNELS_CUDA_PATH", request)
        assert cuda.kernel_path("lstm", xg, w_hh, None) == expected, request
    assert cuda.kernel_path("lstm", xg[:4], w_hh, None) == "step", "auto: too few steps to repay the setup"
    assert cuda.kernel_path("lstm", xg, w_hh, torch.empty(8, 32, device="meta")) == "step", "auto: projection"


@pytest.mark.parametrize("rnn, matmul, expected", [
    ("tf32", "ieee", "tf32"), ("ieee", "tf32", "ieee"), ("none", "tf32", "ieee"),
], ids=["rnn_tf32", "rnn_ieee", "rnn_none"])
def test_fp32_follows_the_rnn_precision_not_the_matmul_one(rnn, matmul, expected, monkeypatch):
    """As torch.nn's cuDNN RNNs: TF32 by default in torch 2.13, whatever plain matmuls do."""
    monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", rnn)
    monkeypatch.setattr(torch.backends.cuda.matmul, "fp32_precision", matmul)
    assert launch._numerics(torch.float32) == (triton.language.float32, expected)
    for dtype in (torch.float16, torch.bfloat16):
        assert launch._numerics(dtype)[1] == "ieee", dtype
    assert launch._numerics(torch.float64) == (triton.language.float64, "ieee")


def test_fp32_precision_default_and_legacy_flag(monkeypatch):
    import types

    from rnnkernels.triton_kernels.precision import rnn_fp32_precision

    monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "tf32")
    assert rnn_fp32_precision() == "tf32", "torch 2.13's default"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the legacy API sets every level to none
    assert rnn_fp32_precision() == "ieee"
    for allow, expected in [(True, "tf32"), (False, "ieee")]:  # a torch before fp32_precision
        monkeypatch.setattr(torch.backends, "cudnn", types.SimpleNamespace(allow_tf32=allow))
        assert rnn_fp32_precision() == expected


def test_sizes_past_int32_offsets_are_refused():
    """The kernels' offsets are int32: the launcher's arithmetic refuses what
    would wrap, checked on expanded tensors that hold one element."""
    steps, batch, hidden = 4096, 1024, 128  # T * B * 4H = 2**31
    xg = torch.zeros(1).expand(steps, batch, 4 * hidden)
    w_hh, h0, c0 = torch.zeros(4 * hidden, hidden), torch.zeros(batch, hidden), torch.zeros(batch, hidden)
    with pytest.raises(RuntimeError, match=r"T=4096, B=1024, G\*H=512, H_out=128 .* int32 offsets"):
        launch.forward("lstm", xg, w_hh, h0, c0, None, None, None, True)
    from rnnkernels.triton_kernels.checks import check_index_range

    check_index_range(steps // 2 - 1, batch - 64, 4 * hidden, hidden)  # just below the limit
    with pytest.raises(RuntimeError, match="int32 offsets"):
        check_index_range(1, 1, 2**16, 2**15)  # W_hh itself


@pytest.mark.skipif(not launch.is_interpreted(), reason="only the interpreter refuses bfloat16")
def test_interpreter_refuses_bfloat16():
    lstm = rnnkernels.LSTM(3, 4, dtype=torch.bfloat16, backend="triton")
    with pytest.raises(rnnkernels.BackendUnavailableError, match="interpreter computes bfloat16 wrongly"):
        lstm(torch.randn(2, 1, 3, dtype=torch.bfloat16))


class _OnDevice(torch.nn.Module):
    """Runs `module` on DEVICE for CPU inputs and hands back CPU outputs, so the
    CPU-side helpers (forward_backward, make_hx) apply unchanged."""

    def __init__(self, module):
        super().__init__()
        self.inner = module.to(DEVICE)

    def named_parameters(self, *args, **kwargs):
        return self.inner.named_parameters(*args, **kwargs)

    def forward(self, x, hx):
        if hx is not None:
            hx = tuple(h.to(DEVICE) for h in hx) if isinstance(hx, tuple) else hx.to(DEVICE)
        out, hidden = self.inner(x.to(DEVICE), hx)
        hidden = tuple(h.cpu() for h in hidden) if isinstance(hidden, tuple) else hidden.cpu()
        return out.to("cpu"), hidden


@pytest.mark.parametrize("kind", MODULE_KINDS)
def test_module_on_device_matches_torch_nn(kind, path):
    """Two bidirectional layers over an unsorted packed batch: every output and
    gradient against torch.nn on CPU, in float64."""
    theirs, ours = make_twins(kind, 4, 5, 2, bidirectional=True, backend="triton")

    def run(module):
        inputs = make_input("packed_unsorted", 5, 3, 4, seed=1)
        results = forward_backward(module, inputs, make_hx(ours, 3, seed=2), seed=3)
        return {name: value.cpu() for name, value in results.items()}

    assert_all_close(run(_OnDevice(ours)), run(theirs))
    assert ours.last_backend == "triton"


@pytest.mark.skipif(launch.is_interpreted(), reason="GPU only; tests/test_compile.py compiles it on CPU")
@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
def test_fullgraph_compile_on_gpu_matches_eager(kind, monkeypatch):
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "allow_rnn", True)
    _, eager = make_twins(kind, 4, 5, 2, bidirectional=True, backend="triton")
    _, to_compile = make_twins(kind, 4, 5, 2, bidirectional=True, backend="triton")
    to_compile.load_state_dict(eager.state_dict())
    on_device = _OnDevice(to_compile)
    compiled = torch.compile(on_device, fullgraph=True)
    compiled.named_parameters = on_device.named_parameters  # names as the eager module reports them
    inputs, hx = make_input("dense", 5, 3, 4, seed=1), make_hx(eager, 3, seed=2)
    expected = forward_backward(_OnDevice(eager), inputs, hx, seed=3)
    inputs, hx = make_input("dense", 5, 3, 4, seed=1), make_hx(eager, 3, seed=2)
    actual = forward_backward(compiled, inputs, hx, seed=3)
    assert_all_close({k: v.cpu() for k, v in actual.items()}, {k: v.cpu() for k, v in expected.items()})
    torch._dynamo.reset()


@pytest.mark.parametrize("mutation, message", [
    (lambda a: a.update(w_hh=a["w_hh"][:, :-1]), r"w_hh has shape \[20, 4\], which needs a projection"),
    (lambda a: a.update(h0=a["h0"][:2]), r"h0 has shape \[2, 5\], expected \[3, 5\]"),
    (lambda a: a.update(c0=a["c0"].double()), r"c0 has dtype torch.float64 but xg has dtype torch.float32"),
    (lambda a: a.update(xg=a["xg"][:, :, :-1]), r"xg's last dimension 19 is not a multiple of the 4 gates"),
    (lambda a: a.update(xg=a["xg"][:0]), r"Expected sequence length to be larger than 0"),
    (lambda a: a.update(lengths=torch.tensor([5, 1, 1])), r"lengths\[0\] = 5 is outside \[0, 4\]"),
    (lambda a: a.update(lengths=torch.tensor([1, 1])), r"lengths must be an int64 tensor of shape \[3\]"),
], ids=["w_hh_columns", "h0_batch", "c0_dtype", "xg_gates", "zero_steps", "long_length", "short_lengths"])
def test_op_argument_errors_name_the_shapes(mutation, message):
    """The backend refuses what the C++ ops refuse, with the same wording
    (lengths stay on the CPU, where their values are checked without a sync)."""
    inputs = make_op_inputs("lstm", 4, 3, 5, dtype=torch.float32)
    args = {k: None if v is None or k == "lengths" else v.detach().to(DEVICE) for k, v in inputs.items()}
    mutation(args)
    with pytest.raises(RuntimeError, match=message):
        rnnkernels.recurrence("lstm", args["xg"], args["w_hh"], args["h0"], args["c0"],
                              lengths=args["lengths"], backend="triton")
