"""The cpu backend's kernels at every instruction-set level this CPU supports
(RNNKERNELS_CPU_ISA), through both GEMM paths, at 1 and several threads:
values and gradients of every cell in float32 against the reference backend
in float64, within the tolerance policy; bfloat16 with and without AMX tiles.
The rest of the suite runs at the detected level only."""

import pytest
import torch

import rnnkernels
from helpers import make_op_inputs, op_forward_backward
from tolerance import assert_close

pytestmark = pytest.mark.skipif(rnnkernels.backends.unavailable_reason("cpu") is not None,
                                reason="the cpu backend's extension is not built")

ALL_LEVELS = ("base", "avx2", "avx512", "amx")


def _extension():
    from rnnkernels import _C
    return _C


def _supported_levels():
    if rnnkernels.backends.unavailable_reason("cpu") is not None:
        return []
    return _extension().cpu_isas().split(", ")


def level_param(level):
    supported = _supported_levels()
    marks = () if level in supported else pytest.mark.skip(
        reason=f"this CPU does not support {level} (it supports {', '.join(supported)})")
    return pytest.param(level, id=level, marks=marks)


# (cell, steps, batch, hidden, proj, lengths, tbptt): B=1, H not a multiple of
# the vector widths (8, 16) nor of the thread count, H smaller than the
# threads, ended rows, truncation, projection.
CASES = {
    "lstm_B1_H19": ("lstm", 5, 1, 19, None, None, None),
    "lstm_lengths_tbptt_H37": ("lstm", 6, 3, 37, None, [6, 2, 4], 2),
    "lstm_proj_H40_P13": ("lstm", 4, 2, 40, 13, [4, 3], None),
    "lstm_proj_lengths_tbptt": ("lstm", 5, 3, 21, 17, [5, 1, 3], 3),
    "gru_B1_H19": ("gru", 5, 1, 19, None, None, None),
    "gru_lengths_tbptt_H37": ("gru", 6, 3, 37, None, [6, 2, 4], 2),
    "gru_H3": ("gru", 3, 2, 3, None, None, None),
    "rnn_tanh_H37_lengths": ("rnn_tanh", 6, 3, 37, None, [6, 2, 4], 4),
    "rnn_tanh_H3": ("rnn_tanh", 4, 1, 3, None, None, None),
    "rnn_relu_H37_tbptt": ("rnn_relu", 6, 2, 37, None, None, 2),
}


def _as(inputs, dtype):
    return {k: v if v is None or k == "lengths" else v.detach().to(dtype).requires_grad_()
            for k, v in inputs.items()}


def _check_float32(case):
    cell, steps, batch, hidden, proj, lengths, tbptt = case
    inputs = make_op_inputs(cell, steps, batch, hidden, proj=proj, lengths=lengths, seed=4,
                            scale=0.8)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=tbptt)
    baseline = op_forward_backward(cell, _as(inputs, torch.float32), backend="reference",
                                   tbptt=tbptt)
    actual = op_forward_backward(cell, _as(inputs, torch.float32), backend="cpu", tbptt=tbptt)
    assert actual.keys() == expected.keys()
    for name in expected:
        error = (baseline[name].double() - expected[name]).abs().max().item() \
            if expected[name].numel() else 0.0
        assert_close(name, actual[name], expected[name], dtype=torch.float32,
                     reference_error=error)


@pytest.fixture(params=[1, 3], ids=["threads1", "threads3"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("level", [level_param(level) for level in ALL_LEVELS])
def test_every_level_matches_reference_float32(case, level, threads, monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CPU_ISA", level)
    assert _extension().cpu_isa() == level
    _check_float32(case)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_aten_gemm_fallback_matches_reference(case, threads, monkeypatch):
    """The path a torch without MKL's packed GEMM (OpenBLAS, aarch64) takes."""
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM", "aten")
    assert _extension().cpu_gemm_path("float32") == "aten"
    assert _extension().cpu_gemm_path("float64") == "aten"
    _check_float32(case)


def test_gemm_paths_are_reported():
    assert _extension().cpu_gemm_path("float32") in ("mkl_packed", "aten")
    assert _extension().cpu_gemm_path("float64") in ("blas", "aten")


def test_unknown_isa_level_is_refused(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="RNNKERNELS_CPU_ISA=sse9 is not a level"):
        _extension().cpu_isa()
    inputs = make_op_inputs("rnn_tanh", 2, 1, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="not a level: choose one of base, avx2, avx512, amx"):
        op_forward_backward("rnn_tanh", inputs, backend="cpu")


@pytest.mark.parametrize("level", [level for level in ALL_LEVELS
                                   if level not in _supported_levels()] or ["none"])
def test_unsupported_isa_level_is_refused(level, monkeypatch):
    if level == "none":
        pytest.skip("this CPU supports every level")
    monkeypatch.setenv("RNNKERNELS_CPU_ISA", level)
    inputs = make_op_inputs("gru", 2, 1, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=f"RNNKERNELS_CPU_ISA={level}: this CPU does not support"):
        op_forward_backward("gru", inputs, backend="cpu")


LOW_PRECISION_CASES = {name: CASES[name] for name in (
    "lstm_lengths_tbptt_H37", "lstm_proj_lengths_tbptt", "gru_lengths_tbptt_H37",
    "rnn_tanh_H37_lengths", "rnn_relu_H37_tbptt")}


@pytest.mark.parametrize("case", LOW_PRECISION_CASES.values(), ids=LOW_PRECISION_CASES.keys())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16bit_inputs_match_reference(case, dtype, threads):
    """float32 state and accumulation, h rounded to the input dtype each step:
    the reference backend's numerics, within the tolerance policy."""
    cell, steps, batch, hidden, proj, lengths, tbptt = case
    inputs = make_op_inputs(cell, steps, batch, hidden, proj=proj, lengths=lengths, seed=5,
                            scale=0.8)
    # Both sides start from the same 16-bit values.
    inputs = _as(_as(inputs, dtype), torch.float64)
    expected = op_forward_backward(cell, inputs, backend="reference", tbptt=tbptt)
    baseline = op_forward_backward(cell, _as(inputs, dtype), backend="reference", tbptt=tbptt)
    actual = op_forward_backward(cell, _as(inputs, dtype), backend="cpu", tbptt=tbptt)
    for name in expected:
        assert actual[name].dtype == dtype, f"{name}: dtype {actual[name].dtype}"
        error = (baseline[name].double() - expected[name]).abs().max().item() \
            if expected[name].numel() else 0.0
        assert_close(name, actual[name], expected[name], dtype=dtype, reference_error=error)


# AMX tiles are 16 rows by 32 bfloat16 of K, and the product runs in blocks
# of 64 columns: batches over 16 rows, H and G*H off those multiples.
AMX_CASES = {**LOW_PRECISION_CASES,
             "lstm_B17_H70": ("lstm", 4, 17, 70, None, None, None),
             "gru_B33_H45_lengths": ("gru", 5, 33, 45, None, [5] * 20 + [2] * 13, 3)}


@pytest.mark.parametrize("case", AMX_CASES.values(), ids=AMX_CASES.keys())
@pytest.mark.parametrize("level", [level_param("avx512"), level_param("amx")])
def test_bfloat16_recurrence_with_and_without_amx(case, level, threads, monkeypatch):
    """bfloat16 layers run their per-step GEMMs on AMX tiles at the amx level
    (h exact in bfloat16 forward; backward's dG in two bfloat16 halves) and on
    the float32 GEMM below it: both within the tolerance policy."""
    monkeypatch.setenv("RNNKERNELS_CPU_ISA", level)
    test_16bit_inputs_match_reference(case, torch.bfloat16, threads)


def test_16bit_modules_pick_the_cpu_backend():
    lstm = rnnkernels.LSTM(3, 4, dtype=torch.bfloat16)
    lstm(torch.randn(2, 2, 3, dtype=torch.bfloat16))
    assert lstm.last_backend == "cpu"
