"""The cpu backend's 16-bit GEMMs (csrc/cpu/gemm16.h): the input projection
hook of bfloat16/float16 modules (rnnkernels/cpu_projection.py), its
gradients, and the recurrent weight gradients, on every 16-bit GEMM path
(torch's own matmul, MKL's 16-bit GEMM, the float32 fallback), forced with
RNNKERNELS_CPU_GEMM16 / RNNKERNELS_CPU_GEMM=aten. Values and gradients
against the reference backend in float64 on the same 16-bit values, within
the tolerance policy; double backward, forward-mode AD and torch.func keep
working on the eager 16-bit path."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad
from torch.nn.utils.rnn import pack_sequence

import rnnkernels
from helpers import forward_backward, make_hx, make_input, make_twins
from rnnkernels import cpu_projection
from tolerance import assert_close, max_error

pytestmark = pytest.mark.skipif(rnnkernels.backends.unavailable_reason("cpu") is not None,
                                reason="the cpu backend's extension is not built")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _extension():
    from rnnkernels import _C
    return _C


# (RNNKERNELS_CPU_GEMM16, RNNKERNELS_CPU_GEMM) -> the path name reported
PATHS = {
    "torch": ("torch", None, "torch"),
    "mkl_16bit": ("mkl_16bit", None, "mkl_16bit"),
    "float32_fallback": (None, "aten", "float32"),
}


@pytest.fixture(params=PATHS.keys())
def gemm16_path(request, monkeypatch):
    forced16, forced32, name = PATHS[request.param]
    monkeypatch.delenv("RNNKERNELS_CPU_GEMM16", raising=False)
    monkeypatch.delenv("RNNKERNELS_CPU_GEMM", raising=False)
    if forced16:
        monkeypatch.setenv("RNNKERNELS_CPU_GEMM16", forced16)
    if forced32:
        monkeypatch.setenv("RNNKERNELS_CPU_GEMM", forced32)
    reported = _extension().cpu_gemm_path("bfloat16")
    if name == "mkl_16bit" and reported == "float32":
        pytest.skip("this torch does not export MKL's cblas_gemm_bf16bf16f32")
    assert reported == name
    return name


@pytest.fixture
def linear16_calls(monkeypatch):
    """Counts the calls of the eager 16-bit projection Function."""
    calls = []
    apply = cpu_projection.Linear16Function.apply

    def counting(*args):
        calls.append(args[0].dtype)
        return apply(*args)

    monkeypatch.setattr(cpu_projection.Linear16Function, "apply", counting)
    return calls


def _leaf(t, dtype):
    return t.detach().to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("shape", [(13, 5, 11), (1, 0, 3), (4, 2, 1)], ids=["odd", "no_rows", "I1"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear16_op_matches_float64(dtype, shape, bias, gemm16_path):
    """The op alone: 3-D non-contiguous x (a transposed batch_first view),
    forward and all three gradients, against float64 on the same values."""
    steps, batch, features = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, steps, features, generator=g).to(dtype).transpose(0, 1)
    weight = torch.randn(9, features, generator=g).to(dtype)
    b = torch.randn(9, generator=g).to(dtype) if bias else None
    dy = torch.randn(steps, batch, 9, generator=g).to(dtype)
    ops = torch.ops.rnnkernels
    out = ops.linear16(x, weight, b)
    dx, dweight, dbias = ops.linear16_backward(dy, x, weight, [True, True, bias])
    x64, w64, dy64 = x.double(), weight.double(), dy.double()
    expected = {"output": F.linear(x64, w64, None if b is None else b.double()),
                "dx": dy64 @ w64, "dweight": dy64.reshape(-1, 9).T @ x64.reshape(-1, features)}
    torch_path = {"output": F.linear(x, weight, b), "dx": dy @ weight,
                  "dweight": dy.reshape(-1, 9).T @ x.reshape(-1, features)}
    actual = {"output": out, "dx": dx, "dweight": dweight}
    if bias:
        expected["dbias"] = dy64.reshape(-1, 9).sum(0)
        torch_path["dbias"] = dy.reshape(-1, 9).sum(0)
        actual["dbias"] = dbias
    for name in expected:
        assert actual[name].dtype == dtype, f"{name}: dtype {actual[name].dtype}"
        assert_close(name, actual[name], expected[name], dtype=dtype,
                     reference_error=max_error(torch_path[name], expected[name]))


def test_linear16_op_schema_and_fakes():
    x, w, b = (torch.randn(3, 2, 5), torch.randn(4, 5), torch.randn(4))
    args = [t.to(torch.bfloat16) for t in (x, w, b)]
    tests = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.rnnkernels.linear16.default, args, test_utils=tests)
    dy = torch.randn(3, 2, 4).to(torch.bfloat16)
    torch.library.opcheck(torch.ops.rnnkernels.linear16_backward.default,
                          (dy, args[0], args[1], [True, False, True]), test_utils=tests)


def test_linear16_op_refuses_mismatched_shapes():
    x = torch.randn(3, 5).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"shape \[3, 5\] and weight of shape \[4, 6\] cannot"):
        torch.ops.rnnkernels.linear16(x, torch.randn(4, 6).to(torch.bfloat16), None)
    with pytest.raises(RuntimeError, match="weight has dtype Half but x has dtype BFloat16"):
        torch.ops.rnnkernels.linear16(x, torch.randn(4, 5).half(), None)


def test_gemm16_path_is_reported_and_bad_names_refused(monkeypatch):
    monkeypatch.delenv("RNNKERNELS_CPU_GEMM", raising=False)
    monkeypatch.delenv("RNNKERNELS_CPU_GEMM16", raising=False)
    for dtype in ("bfloat16", "float16"):
        assert _extension().cpu_gemm_path(dtype) in ("torch", "mkl_16bit", "float32")
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM16", "amx")
    with pytest.raises(ValueError, match="RNNKERNELS_CPU_GEMM16=amx is not a path"):
        _extension().cpu_gemm_path("bfloat16")
    lstm = rnnkernels.LSTM(3, 4, dtype=torch.bfloat16, backend="cpu")
    with pytest.raises(ValueError, match="RNNKERNELS_CPU_GEMM16=amx is not a path"):
        lstm(torch.randn(2, 1, 3, dtype=torch.bfloat16))


# kind, constructor extras, input mode: bidirectional stacks, a projection,
# batch_first (a non-contiguous layer input), packed sequences.
MODULE_CASES = {
    "lstm_bidir2_batch_first": ("lstm", {"num_layers": 2, "bidirectional": True,
                                         "batch_first": True}, "dense"),
    "lstm_proj_packed": ("lstm_proj", {}, "packed"),
    "gru_bidir_packed": ("gru", {"bidirectional": True}, "packed"),
    "rnn_tanh_2layers": ("rnn_tanh", {"num_layers": 2}, "dense"),
    "rnn_relu_no_bias": ("rnn_relu", {"bias": False}, "dense"),
}


def _copies(mode, leaves, dtype):
    """(module input or hx, its leaves): new leaves in `dtype` holding the
    values of `leaves`, packed into a PackedSequence or an LSTM's (h, c)."""
    copies = [_leaf(t, dtype) for t in leaves]
    if mode == "packed":
        return pack_sequence(copies), copies
    return (tuple(copies) if len(copies) == 2 else copies[0]), copies


@pytest.mark.parametrize("case", MODULE_CASES.values(), ids=MODULE_CASES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_16bit_modules_match_reference(case, dtype, gemm16_path, linear16_calls):
    """Values and every gradient (input, h0/c0, each weight and bias) with
    random upstream gradients, against the reference backend in float64 on
    the same 16-bit values."""
    kind, extra, mode = case
    _, module = make_twins(kind, 5, 7, backend="cpu", dtype=dtype, **extra)
    # one set of 16-bit values, fed to every run as fresh leaves
    inputs = [t.detach().to(dtype) for t in make_input(
        mode, 6, 3, 5, batch_first=extra.get("batch_first", False), seed=2)[1]]
    states = [t.detach().to(dtype) for t in make_hx(module, 3, seed=3)[1]]

    def run(m, run_dtype):
        return forward_backward(m, _copies(mode, inputs, run_dtype),
                                _copies("states", states, run_dtype), seed=4)

    actual = run(module, dtype)
    assert bool(linear16_calls) == (gemm16_path != "torch"), f"16-bit projections: {linear16_calls}"
    reference = copy.deepcopy(module)
    reference.backend = "reference"
    baseline = run(reference, dtype)
    expected = run(reference.double(), torch.float64)
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name].dtype == dtype, f"{name}: dtype {actual[name].dtype}"
        assert_close(name, actual[name], expected[name], dtype=dtype,
                     reference_error=max_error(baseline[name], expected[name]))


@pytest.fixture
def forced_gemm16(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM16", "mkl_16bit")
    monkeypatch.delenv("RNNKERNELS_CPU_GEMM", raising=False)


def test_16bit_cell_takes_the_gemm16_projection(forced_gemm16, linear16_calls):
    cell = rnnkernels.LSTMCell(4, 6, dtype=torch.bfloat16, backend="cpu")
    h, _ = cell(torch.randn(3, 4, dtype=torch.bfloat16))
    h.float().sum().backward()
    assert linear16_calls == [torch.bfloat16]
    assert cell.weight_ih.grad is not None and cell.weight_ih.grad.dtype == torch.bfloat16


def test_16bit_double_backward_through_gemm16(forced_gemm16, linear16_calls, monkeypatch):
    """A gradient penalty (create_graph=True) through the eager 16-bit
    projection equals the same penalty through torch's own matmul."""

    def penalty_grads():
        torch.manual_seed(5)
        gru = rnnkernels.GRU(4, 5, dtype=torch.bfloat16, backend="cpu")
        x = torch.randn(3, 2, 4, dtype=torch.bfloat16, requires_grad=True)
        y, _ = gru(x)
        (gx,) = torch.autograd.grad(y.float().pow(2).sum(), x, create_graph=True)
        gx.float().pow(2).sum().backward()
        return {name: p.grad for name, p in gru.named_parameters()} | {"x": x.grad}

    ours = penalty_grads()
    assert linear16_calls, "the 16-bit projection did not run"
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM16", "torch")
    theirs = penalty_grads()
    for name in theirs:
        assert ours[name] is not None, f"{name}: no gradient"
        assert_close(name, ours[name], theirs[name].double(), dtype=torch.bfloat16)


def test_16bit_forward_ad_through_gemm16(forced_gemm16, linear16_calls):
    g = torch.Generator().manual_seed(6)
    x, weight, bias = (torch.randn(*s, generator=g).to(torch.float16) for s in ((2, 3, 4), (5, 4), (5,)))
    tangents = [torch.randn(t.shape, generator=g).to(torch.float16) for t in (x, weight, bias)]
    with forward_ad.dual_level():
        duals = [forward_ad.make_dual(p.requires_grad_(), t) for p, t in zip((x, weight, bias), tangents)]
        out = cpu_projection.project(*duals)
        jvp = forward_ad.unpack_dual(out).tangent
    assert linear16_calls
    x64, w64, b64 = (t.detach().double() for t in (x, weight, bias))
    dx, dw, db = (t.double() for t in tangents)
    expected = F.linear(dx, w64) + F.linear(x64, dw) + db
    assert_close("jvp", jvp, expected, dtype=torch.float16,
                 reference_error=max_error(F.linear(tangents[0], weight.detach()) + F.linear(
                     x.detach(), tangents[1]) + tangents[2], expected))


def test_16bit_torch_func_takes_torch_ops(forced_gemm16, linear16_calls):
    """Under torch.func the projection is F.linear: grad works and the eager
    16-bit Function is not used."""
    torch.manual_seed(7)
    rnn = rnnkernels.RNN(3, 4, dtype=torch.bfloat16, backend="cpu")
    params = dict(rnn.named_parameters())
    x = torch.randn(2, 1, 3, dtype=torch.bfloat16)

    def loss(p):
        y, _ = torch.func.functional_call(rnn, p, (x,))
        return y.float().sum()

    grads = torch.func.grad(loss)(params)
    assert not linear16_calls
    assert set(grads) == set(params) and all(g.dtype == torch.bfloat16 for g in grads.values())
