"""The cuda backend (csrc/cuda/): on a GPU, the op contract against the
float64 reference (variable lengths, projection, tbptt, odd and
non-contiguous shapes), modules against torch.nn, float32/float16/bfloat16
under the tolerance policy, gradcheck in float64, bad input, the fake
implementations and the measured grid-barrier floor. Without a GPU those skip
with the reason, and the host-side behaviour (availability, device and dtype
checks) runs on CPU."""

import contextlib
import math
import os
import shutil
import subprocess

import pytest
import torch
from torch.autograd import gradcheck

import rnnkernels
from helpers import (MODULE_KINDS, OP_CELLS, forward_backward, make_hx, make_input, make_op_inputs,
                     make_twins)
from rnnkernels import cuda_backend
from rnnkernels.backends import BackendUnavailableError
from tolerance import TF32_FLOOR, assert_all_close, assert_close, max_error

UNAVAILABLE = cuda_backend.CudaBackend().unavailable_reason()
needs_cuda = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"backend cuda: {UNAVAILABLE}")

VARIANTS = [("lstm", None), ("lstm", 2)] + [(cell, None) for cell in OP_CELLS[1:]]
VARIANT_PARAMS = [pytest.param(c, p, id=c if p is None else f"{c}_proj{p}") for c, p in VARIANTS]
CSRC_CUDA = os.path.join(os.path.dirname(__file__), os.pardir, "csrc", "cuda")

# The forward's kernel path, chosen by RNNKERNELS_CUDA_PATH (csrc/cuda/path_rule.h).
PATHS = ["step", "persistent"]


@pytest.fixture(params=PATHS)
def kernel_path(request, monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", request.param)
    return request.param


def _skip_projection_on_persistent(kernel_path, proj):
    if kernel_path == "persistent" and proj is not None:
        pytest.skip("the persistent path has no projection (test_persistent_refuses_projection)")


@contextlib.contextmanager
def rnn_fp32_precision(value):
    """float32 recurrences at `value` ('tf32' or 'ieee'): torch.nn's RNN
    precision, which the cuda backend follows (csrc/fp32_precision.h)."""
    cudnn = torch.backends.cudnn
    if hasattr(getattr(cudnn, "rnn", None), "fp32_precision"):
        saved = cudnn.rnn.fp32_precision
        cudnn.rnn.fp32_precision = value
        try:
            yield
        finally:
            cudnn.rnn.fp32_precision = saved
    else:
        saved = cudnn.allow_tf32
        cudnn.allow_tf32 = value == "tf32"
        try:
            yield
        finally:
            cudnn.allow_tf32 = saved


def _to(value, device, dtype=None):
    if value is None or not torch.is_tensor(value):
        return value
    if dtype is None or not value.is_floating_point():
        return value.detach().to(device)
    return value.detach().to(device, dtype)


def _op_run(cell, inputs, *, backend, device, dtype=None, tbptt=None, seed=0):
    """recurrence() on copies of `inputs` moved to device/dtype, with a backward
    of random upstream gradients drawn on the CPU; everything returned on the CPU
    in float64."""
    fresh = {k: _to(v, device, dtype) for k, v in inputs.items()}
    for k, v in fresh.items():
        if k != "lengths" and v is not None:
            v.requires_grad_()
    y, h_n, c_n = rnnkernels.recurrence(cell, **fresh, tbptt=tbptt, backend=backend)
    outputs = {"y": y, "h_n": h_n, "c_n": c_n}
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t)).sum()
               for t in outputs.values() if t is not None)
    loss.backward()
    results = {k: v.detach() for k, v in outputs.items() if v is not None}
    results.update({f"grad {k}": v.grad for k, v in fresh.items()
                    if k != "lengths" and v is not None})
    return {k: v.cpu().double() for k, v in results.items()}


# ------------------------------------------------------------ runs on CPU

def test_unavailable_reason_names_what_is_missing():
    if UNAVAILABLE is None:
        assert torch.cuda.is_available() and cuda_backend.cuda_built()
    else:
        assert ("CUDA" in UNAVAILABLE) or ("extension" in UNAVAILABLE), UNAVAILABLE


@pytest.mark.parametrize("device, dtype, expected", [
    ("cpu", torch.float32, "it runs on CUDA tensors, got tensors on cpu"),
    ("cuda", torch.int32, "it supports torch.float32, torch.float64, torch.float16 and "
                          "torch.bfloat16, got torch.int32"),
    ("cuda", torch.bfloat16, None), ("cuda", torch.float64, None)])
def test_unsupported_reason(device, dtype, expected):
    assert cuda_backend.CudaBackend().unsupported_reason(torch.device(device), dtype) == expected


def test_auto_never_picks_cuda_for_cpu_tensors():
    gru = rnnkernels.GRU(3, 4)
    gru(torch.randn(2, 2, 3))
    assert gru.last_backend != "cuda"


@pytest.mark.skipif(UNAVAILABLE is None, reason="the cuda backend runs here")
def test_without_cuda_asking_for_it_raises():
    with pytest.raises(BackendUnavailableError, match="backend 'cuda' cannot run on this machine"):
        rnnkernels.LSTM(3, 4, backend="cuda")
    with pytest.raises(RuntimeError, match="measure_barrier_floor needs the cuda backend"):
        cuda_backend.measure_barrier_floor(10)


PATH_RULE_CHECK = r"""
#include <cassert>
#include <cstdio>
#include "path_rule.h"
using namespace rnnkernels::cuda;

int main() {
  PathRequest r = PathRequest::kAuto;
  assert(parse_path_request(nullptr, &r) && r == PathRequest::kStep);
  assert(parse_path_request("", &r) && r == PathRequest::kStep);
  assert(parse_path_request("step", &r) && r == PathRequest::kStep);
  assert(parse_path_request("persistent", &r) && r == PathRequest::kPersistent);
  assert(parse_path_request("auto", &r) && r == PathRequest::kAuto);
  assert(!parse_path_request("Auto", &r) && !parse_path_request("fast", &r));

  const RecurrenceProblem plain{false, 1024, 16, 768};
  assert(persistent_problem_refusal(plain) == nullptr && auto_prefers_persistent(plain));
  const RecurrenceProblem projected{true, 1024, 16, 768};
  assert(persistent_problem_refusal(projected) != nullptr && !auto_prefers_persistent(projected));
  const RecurrenceProblem empty{false, 10, 0, 768};
  assert(persistent_problem_refusal(empty) != nullptr);
  assert(!auto_prefers_persistent({false, kAutoMinSteps - 1, 16, 768}));
  assert(auto_prefers_persistent({false, kAutoMinSteps, 16, 768}));
  assert(!auto_prefers_persistent({false, 1024, kAutoMaxBatch + 1, 768}));
  std::puts("ok");
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_path_rule_on_the_host(tmp_path):
    """csrc/cuda/path_rule.h (RNNKERNELS_CUDA_PATH and the auto rule) is host
    C++ without torch or CUDA headers: compiled and run here."""
    source = tmp_path / "path_rule_check.cpp"
    source.write_text(PATH_RULE_CHECK)
    binary = tmp_path / "path_rule_check"
    build = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", os.path.abspath(CSRC_CUDA),
                            str(source), "-o", str(binary)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ------------------------------------------------------------ runs on a GPU

@needs_cuda
@pytest.mark.parametrize("cell, proj", VARIANT_PARAMS)
@pytest.mark.parametrize("lengths", [None, [6, 6, 1], [3, 0, 6, 2]],
                         ids=["full", "ragged", "unsorted_with_empty"])
@pytest.mark.parametrize("tbptt", [None, 1, 4], ids=["bptt", "tbptt1", "tbptt4"])
def test_op_matches_reference_float64(cell, proj, lengths, tbptt, kernel_path):
    _skip_projection_on_persistent(kernel_path, proj)
    batch = 3 if lengths is None else len(lengths)
    inputs = make_op_inputs(cell, 6, batch, 5, proj=proj, lengths=lengths, seed=7)
    expected = _op_run(cell, inputs, backend="reference", device="cpu", tbptt=tbptt)
    assert_all_close(_op_run(cell, inputs, backend="cuda", device="cuda", tbptt=tbptt), expected)


@needs_cuda
@pytest.mark.parametrize("cell", OP_CELLS)
@pytest.mark.parametrize("steps", [1, 7, 8, 40], ids=lambda v: f"T{v}")
def test_auto_path_matches_reference_float64(cell, steps, monkeypatch):
    """RNNKERNELS_CUDA_PATH=auto on both sides of its step threshold (path_rule.h)."""
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "auto")
    inputs = make_op_inputs(cell, steps, 4, 37, lengths=[steps, 1, steps // 2, 0], seed=4)
    expected = _op_run(cell, inputs, backend="reference", device="cpu", tbptt=3)
    assert_all_close(_op_run(cell, inputs, backend="cuda", device="cuda", tbptt=3), expected)


@needs_cuda
@pytest.mark.parametrize("cell", OP_CELLS)
def test_non_contiguous_inputs(cell, kernel_path):
    inputs = make_op_inputs(cell, 5, 3, 4, seed=3)
    expected = _op_run(cell, inputs, backend="reference", device="cpu")
    fresh = {k: _to(v, "cuda") for k, v in inputs.items()}
    strided = {k: v if v is None or k == "lengths" or v.dim() < 2
               else v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in fresh.items()}
    assert not strided["w_hh"].is_contiguous()
    assert_all_close(_op_run(cell, strided, backend="cuda", device="cuda"), expected)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("cell, proj", VARIANT_PARAMS)
@pytest.mark.parametrize("steps, batch, hidden", [(1, 1, 1), (9, 2, 17), (12, 5, 33)],
                         ids=lambda v: str(v))
def test_reduced_precision_within_policy(dtype, cell, proj, steps, batch, hidden, kernel_path):
    """Against the float64 reference, bounded by the reference's own error in dtype."""
    _skip_projection_on_persistent(kernel_path, proj)
    if proj is not None and proj >= hidden:
        pytest.skip("proj_size must be smaller than hidden_size")
    lengths = [steps - (i % steps) for i in range(batch)]
    inputs = make_op_inputs(cell, steps, batch, hidden, proj=proj, lengths=lengths, seed=5)
    exact = _op_run(cell, inputs, backend="reference", device="cpu")
    reference = _op_run(cell, inputs, backend="reference", device="cuda", dtype=dtype)
    with rnn_fp32_precision("ieee"):  # float32 at its own floor: IEEE GEMMs and CUDA-core kernels
        actual = _op_run(cell, inputs, backend="cuda", device="cuda", dtype=dtype)
    for name, expected in exact.items():
        assert_close(name, actual[name], expected, dtype=dtype,
                     reference_error=max_error(reference[name], expected))


# Shapes that take the persistent kernels' other branches on an H100/H200:
# several m-tiles and K-splits, half-row tiles (U <= 8), K-chunked staging
# (the backward's dG at B=64, H=1024 outgrows shared memory), batch padding.
TENSOR_CORE_SHAPES = [(5, 20, 200), (4, 64, 1024), (6, 3, 130)]


@needs_cuda
@pytest.mark.parametrize("dtype, precision", [(torch.bfloat16, None), (torch.float16, None),
                                              (torch.float32, "tf32"), (torch.float32, "ieee")],
                         ids=["bf16", "fp16", "fp32_tf32", "fp32_ieee"])
@pytest.mark.parametrize("cell", OP_CELLS)
@pytest.mark.parametrize("steps, batch, hidden", TENSOR_CORE_SHAPES, ids=lambda v: str(v))
def test_persistent_engines_within_policy(dtype, precision, cell, steps, batch, hidden, monkeypatch):
    """The persistent path's tensor-core (mma.sync) and CUDA-core engines
    against the float64 reference, values and every gradient, with lengths
    and tbptt; tf32 at the tf32 floor."""
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "persistent")
    lengths = [steps - (i % steps) for i in range(batch)]
    inputs = make_op_inputs(cell, steps, batch, hidden, lengths=lengths, seed=8, scale=0.1)
    exact = _op_run(cell, inputs, backend="reference", device="cpu", tbptt=2)
    reference = _op_run(cell, inputs, backend="reference", device="cuda", dtype=dtype, tbptt=2)
    with rnn_fp32_precision(precision or "ieee"):
        actual = _op_run(cell, inputs, backend="cuda", device="cuda", dtype=dtype, tbptt=2)
    floor = TF32_FLOOR if precision == "tf32" else None
    for name, expected in exact.items():
        assert_close(name, actual[name], expected, dtype=dtype, floor=floor,
                     reference_error=max_error(reference[name], expected))


@needs_cuda
@pytest.mark.parametrize("debug_sync", [False, True], ids=["next_call", "debug_sync"])
def test_a_barrier_timeout_poisons_and_raises(debug_sync, monkeypatch):
    """RNNKERNELS_CUDA_SPIN_LIMIT_MS=0 makes the first CTA that finds a barrier
    incomplete give up: every CTA leaves, the outputs are NaN, and the next
    call raises (RNNKERNELS_CUDA_DEBUG_SYNC: the call itself); the context
    survives and the call after that runs normally."""
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "persistent")
    monkeypatch.setenv("RNNKERNELS_CUDA_SPIN_LIMIT_MS", "0")
    if debug_sync:
        monkeypatch.setenv("RNNKERNELS_CUDA_DEBUG_SYNC", "1")
    inputs = {k: _to(v, "cuda", torch.float32)
              for k, v in make_op_inputs("lstm", 64, 4, 256, seed=2).items()}
    message = "waited past RNNKERNELS_CUDA_SPIN_LIMIT_MS at a grid barrier"
    with torch.no_grad():
        if debug_sync:
            with pytest.raises(RuntimeError, match=message):
                rnnkernels.recurrence("lstm", **inputs, backend="cuda")
        else:
            y = rnnkernels.recurrence("lstm", **inputs, backend="cuda")[0]
            torch.cuda.synchronize()
            assert torch.isnan(y).all(), "a timed-out launch left outputs that are not NaN"
            with pytest.raises(RuntimeError, match=message):
                rnnkernels.recurrence("lstm", **inputs, backend="cuda")
        torch.cuda.synchronize()
        monkeypatch.delenv("RNNKERNELS_CUDA_SPIN_LIMIT_MS")
        y = rnnkernels.recurrence("lstm", **inputs, backend="cuda")[0]
        torch.cuda.synchronize()
    assert torch.isfinite(y).all()


@needs_cuda
@pytest.mark.parametrize("cell, proj", VARIANT_PARAMS)
@pytest.mark.parametrize("lengths", [None, [3, 1]], ids=["full", "ragged"])
def test_op_gradcheck_float64(cell, proj, lengths, kernel_path):
    _skip_projection_on_persistent(kernel_path, proj)
    inputs = make_op_inputs(cell, 3, 2, 3, proj=proj, lengths=lengths, seed=11)
    names = ("xg", "w_hh", "h0", "c0", "b_hn", "w_hr")
    args = tuple(None if inputs[n] is None else _to(inputs[n], "cuda").requires_grad_() for n in names)
    device_lengths = _to(inputs["lengths"], "cuda")

    def run(xg, w_hh, h0, c0, b_hn, w_hr):
        y, h_n, c_n = rnnkernels.recurrence(cell, xg, w_hh, h0, c0, b_hn=b_hn, w_hr=w_hr,
                                            lengths=device_lengths, backend="cuda")
        return (y, h_n) if c_n is None else (y, h_n, c_n)

    assert gradcheck(run, args)


@needs_cuda
@pytest.mark.parametrize("kind", list(MODULE_KINDS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidir", "bidir"])
@pytest.mark.parametrize("mode", ["dense", "packed_unsorted", "unbatched"])
@pytest.mark.parametrize("tbptt", [None, 2], ids=["bptt", "tbptt2"])
def test_module_matches_torch_nn_float64(kind, bidirectional, mode, tbptt, kernel_path, monkeypatch):
    if kind == "lstm_proj":  # the persistent path has no projection: the step path runs it
        monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "step")
    steps, batch, features, hidden = 5, 3, 4, 5
    theirs, ours = make_twins(kind, features, hidden, 2, bidirectional=bidirectional,
                              backend="reference", tbptt=tbptt)
    ours_cuda = make_twins(kind, features, hidden, 2, bidirectional=bidirectional,
                           backend="cuda", tbptt=tbptt)[1]
    ours_cuda.load_state_dict(theirs.state_dict())
    ours_cuda.to("cuda")
    hx_batch = None if mode == "unbatched" else batch

    def run(module, device):
        inputs = make_input(mode, steps, batch, features, seed=1)
        hx = make_hx(module, hx_batch, seed=2)
        return forward_backward(module, inputs, hx, seed=3, device=device)

    expected = run(ours if tbptt else theirs, "cpu")
    assert_all_close(run(ours_cuda, "cuda"), expected)
    assert ours_cuda.last_backend == "cuda"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["fp64", "bf16"])
@pytest.mark.parametrize("cell", OP_CELLS)
def test_opcheck_on_cuda(cell, dtype):
    """Schemas, fake implementations and the CUDA kernels agree (torch.library.opcheck),
    16-bit included: the CUDA ops keep the saved buffers in the input dtype."""
    inputs = {k: _to(v, "cuda", dtype) for k, v in make_op_inputs(cell, 3, 2, 4, lengths=[3, 1]).items()}
    x, w, h0, c0, b_hn, lengths = (inputs[k] for k in ("xg", "w_hh", "h0", "c0", "b_hn", "lengths"))
    ops = torch.ops.rnnkernels
    if cell == "lstm":
        torch.library.opcheck(ops.lstm_forward.default, (x, w, h0, c0, None, lengths, True))
    elif cell == "gru":
        torch.library.opcheck(ops.gru_forward.default, (x, w, h0, b_hn, lengths, True))
    else:
        torch.library.opcheck(ops.rnn_forward.default, (x, w, h0, lengths, cell == "rnn_relu"))


@needs_cuda
def test_bad_input_raises_clear_errors():
    ops = torch.ops.rnnkernels
    x = torch.randn(4, 2, 12, device="cuda", dtype=torch.float64)
    w = torch.randn(12, 3, device="cuda", dtype=torch.float64)
    h0 = torch.zeros(2, 3, device="cuda", dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"w_hh has shape \[10, 12\], expected \[12, 12\]"):
        ops.rnn_forward(x, torch.randn(10, 12, device="cuda", dtype=torch.float64),
                        torch.zeros(2, 12, device="cuda", dtype=torch.float64), None, False)
    with pytest.raises(RuntimeError, match=r"h0 has dtype Float but xg has dtype Double"):
        ops.gru_forward(x[..., :9], w[:9], h0.float(), None, None, True)
    with pytest.raises(RuntimeError, match=r"lengths\[1\] = 9 is outside \[0, 4\]"):
        ops.gru_forward(x[..., :9], w[:9], h0, None, torch.tensor([4, 9]), True)
    with pytest.raises(RuntimeError, match=r"h0 is on cpu but xg is on cuda"):
        ops.gru_forward(x[..., :9], w[:9], h0.cpu(), None, None, True)
    with pytest.raises(RuntimeError, match="rnnkernels cuda backend supports float32, float64"):
        ops.rnn_forward(x.to(torch.int32), w.to(torch.int32), h0.to(torch.int32), None, False)


@needs_cuda
def test_persistent_refuses_projection(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "persistent")
    inputs = make_op_inputs("lstm", 3, 2, 4, proj=2)
    with pytest.raises(RuntimeError, match="RNNKERNELS_CUDA_PATH=persistent, but lstm cannot run "
                                           "on it: the persistent kernel has no LSTM projection"):
        _op_run("lstm", inputs, backend="cuda", device="cuda")
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "auto")  # auto falls back instead
    _op_run("lstm", inputs, backend="cuda", device="cuda")


@needs_cuda
def test_persistent_refuses_what_does_not_fit_on_chip(monkeypatch):
    """A float64 LSTM with H = 1536 needs over 500 KB of W_hh per CTA with one
    CTA per SM on up to 148 SMs, beyond any GPU's shared memory: a clear error
    when forced, the step path under auto."""
    inputs = make_op_inputs("lstm", 8, 1, 1536, scale=0.05)
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "persistent")
    with pytest.raises(RuntimeError, match="do not fit in shared memory"):
        _op_run("lstm", inputs, backend="cuda", device="cuda")
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "auto")
    assert torch.isfinite(_op_run("lstm", inputs, backend="cuda", device="cuda")["y"]).all()


@needs_cuda
def test_unknown_path_request_raises(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CUDA_PATH", "fastest")
    with pytest.raises(RuntimeError, match="RNNKERNELS_CUDA_PATH must be 'step', 'persistent' or "
                                           "'auto', got 'fastest'"):
        _op_run("gru", make_op_inputs("gru", 2, 1, 3), backend="cuda", device="cuda")


@needs_cuda
def test_barrier_floor_is_measured():
    microseconds = cuda_backend.measure_barrier_floor(200)
    assert math.isfinite(microseconds) and 0 < microseconds < 1000, microseconds


@needs_cuda
def test_barrier_floor_refuses_a_grid_that_cannot_be_resident():
    with pytest.raises(RuntimeError, match="cannot launch .* CTAs cooperatively"):
        cuda_backend.measure_barrier_floor(10, ctas=1 << 20)
    assert cuda_backend.measure_barrier_floor(10) > 0  # the context survived the refusal
