"""Backend selection and the compiled ops' plumbing: what runs here, what
`auto` picks, the errors for backends that cannot run, the C++ ops' schemas,
fake implementations and argument checks, and output poisoning."""

import pytest
import torch

import rnnkernels
from conftest import REQUIRE_CPU_BACKEND
from helpers import OP_CELLS, make_op_inputs
from rnnkernels import cpu_backend
from rnnkernels.backends import BackendUnavailableError


def _cpu_built():
    return cpu_backend.load_extension()[0] is not None


needs_cpu = pytest.mark.skipif(not _cpu_built() and not REQUIRE_CPU_BACKEND,
                               reason="the C++ extension rnnkernels._C is not built")


def test_available_backends():
    available = rnnkernels.available_backends()
    assert available[0] == "reference"
    assert set(available) <= set(rnnkernels.BACKEND_NAMES)
    if REQUIRE_CPU_BACKEND:
        assert "cpu" in available, cpu_backend.load_extension()[1]


@needs_cpu
@pytest.mark.parametrize("dtype, expected", [
    (torch.float32, "cpu"), (torch.float64, "cpu"), (torch.bfloat16, "cpu"),
    (torch.float16, "cpu")])
def test_auto_picks_the_best_backend_that_runs(dtype, expected):
    lstm = rnnkernels.LSTM(3, 4, dtype=dtype)
    assert lstm.last_backend is None
    out, _ = lstm(torch.randn(2, 2, 3, dtype=dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert lstm.last_backend == expected


@needs_cpu
def test_explicit_backend_that_cannot_run_the_input():
    inputs = {k: None if v is None else v.detach().to("meta")
              for k, v in make_op_inputs("lstm", 2, 2, 4).items()}
    with pytest.raises(BackendUnavailableError,
                       match=r"backend 'cpu' cannot run this input: it runs on CPU tensors, "
                             r"got tensors on meta"):
        rnnkernels.recurrence("lstm", **inputs, backend="cpu")


def test_triton_without_gpu_or_interpreter_says_how_to_run(monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed")
    from rnnkernels.triton_kernels import launch

    monkeypatch.setattr(launch, "is_interpreted", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError,
                       match=r"backend 'triton' cannot run on this machine: it needs a CUDA GPU; "
                             r"set TRITON_INTERPRET=1 before triton is imported"):
        rnnkernels.GRU(3, 4, backend="triton")
    assert "triton" not in rnnkernels.available_backends()


def test_cuda_backend_without_a_cuda_build_or_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(BackendUnavailableError, match=r"backend 'cuda' cannot run on this machine: "):
        rnnkernels.GRU(3, 4, backend="cuda")
    assert "cuda" not in rnnkernels.available_backends()


def test_without_the_extension_only_reference_runs(monkeypatch):
    """What a user gets after installing where no C++ compiler exists (triton
    may still run here, but only in its interpreter, which `auto` passes over)."""
    monkeypatch.setattr(cpu_backend, "load_extension",
                        lambda: (None, "the C++ extension rnnkernels._C is not built (simulated)"))
    available = rnnkernels.available_backends()
    assert "reference" in available and "cpu" not in available and "cuda" not in available
    gru = rnnkernels.GRU(3, 4)
    gru(torch.randn(2, 2, 3))
    assert gru.last_backend == "reference"
    with pytest.raises(BackendUnavailableError, match=r"backend 'cpu' cannot run on this machine: "
                                                      r"the C\+\+ extension rnnkernels._C is not built"):
        rnnkernels.LSTM(3, 4, backend="cpu")


def _op_calls(cell, lengths, training=True):
    """(forward op, its args, backward op, its args) for one cell."""
    inputs = make_op_inputs(cell, 4, 3, 5, proj=None, lengths=lengths, seed=0)
    args = {k: None if v is None else v.detach() for k, v in inputs.items()}
    ops = torch.ops.rnnkernels
    xg, w_hh, h0, c0, b_hn, lens = (args[k] for k in ("xg", "w_hh", "h0", "c0", "b_hn", "lengths"))
    if cell == "lstm":
        fwd = (ops.lstm_forward, (xg, w_hh, h0, c0, None, lens, training))
        y, h_n, c_n, gates, cells = fwd[0](*fwd[1])
        bwd = (ops.lstm_backward, (torch.randn_like(y), h_n, c_n, w_hh, h0, c0, None, lens, y, gates, cells, 2))
    elif cell == "gru":
        fwd = (ops.gru_forward, (xg, w_hh, h0, b_hn, lens, training))
        y, h_n, gates, hn = fwd[0](*fwd[1])
        bwd = (ops.gru_backward, (torch.randn_like(y), h_n, w_hh, h0, lens, y, gates, hn, True, 2))
    else:
        relu = cell == "rnn_relu"
        fwd = (ops.rnn_forward, (xg, w_hh, h0, lens, relu))
        y, h_n = fwd[0](*fwd[1])
        bwd = (ops.rnn_backward, (torch.randn_like(y), h_n, w_hh, h0, lens, y, relu, 2))
    return fwd, bwd


@needs_cpu
@pytest.mark.parametrize("cell", OP_CELLS)
@pytest.mark.parametrize("lengths", [None, [4, 1, 2]], ids=["full", "ragged"])
def test_compiled_ops_schema_and_fake(cell, lengths):
    """torch.library.opcheck: schema, fake (meta) implementation and real kernel agree."""
    for op, args in _op_calls(cell, lengths):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


@needs_cpu
@pytest.mark.parametrize("cell", OP_CELLS)
def test_compiled_ops_write_every_output_element(cell):
    """Outputs start as NaN (the suite runs poisoned); all must be written, padding as zeros."""
    assert cpu_backend.load_extension()[0].poison_outputs()
    for op, args in _op_calls(cell, [4, 1, 0]):
        for i, out in enumerate(op(*args)):
            assert not torch.isnan(out).any(), f"{op}: output {i} has unwritten elements"


@needs_cpu
def test_inference_ops_save_a_single_step():
    (op, args), _ = _op_calls("lstm", None, training=False)
    y, h_n, c_n, gates, cells = op(*args)
    assert gates.shape[0] == cells.shape[0] == 1 and y.shape[0] == 4


@needs_cpu
@pytest.mark.parametrize("mutation, message", [
    (lambda a: a.update(w_hh=a["w_hh"][:, :-1]), r"w_hh has shape \[20, 4\], which needs a projection"),
    (lambda a: a.update(h0=a["h0"][:2]), r"h0 has shape \[2, 5\], expected \[3, 5\]"),
    (lambda a: a.update(c0=a["c0"].double()), r"c0 has dtype Double but xg has dtype Float"),
    (lambda a: a.update(xg=a["xg"][:, :, :-1]), r"xg's last dimension 19 is not a multiple of the 4 gates"),
    (lambda a: a.update(xg=a["xg"][:0]), r"Expected sequence length to be larger than 0"),
    (lambda a: a.update(xg=a["xg"].int()), r"supports float32, float64, bfloat16 and float16, got Int"),
    (lambda a: a.update(lengths=torch.tensor([5, 1, 1])), r"lengths\[0\] = 5 is outside \[0, 4\]"),
    (lambda a: a.update(lengths=torch.tensor([1, 1])), r"lengths must be an int64 CPU tensor of shape \[3\]"),
], ids=["w_hh_columns", "h0_batch", "c0_dtype", "xg_gates", "zero_steps", "integer", "long_length", "short_lengths"])
def test_compiled_op_argument_errors_name_the_shapes(mutation, message):
    inputs = make_op_inputs("lstm", 4, 3, 5, dtype=torch.float32)
    args = {k: None if v is None else v.detach() for k, v in inputs.items()}
    mutation(args)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.rnnkernels.lstm_forward(args["xg"], args["w_hh"], args["h0"], args["c0"], None,
                                          args["lengths"], True)


def test_cli_lists_backends(capsys):
    from rnnkernels.__main__ import main

    assert main(["backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(rnnkernels.BACKEND_NAMES)
    for line in lines:
        name = line.split()[0]
        assert (line.split()[1] == "available") == (name in rnnkernels.available_backends()), line


def test_cli_demo_runs_and_agrees_with_torch_nn(capsys):
    from rnnkernels.__main__ import main

    assert main(["demo", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "OK: rnnkernels trains like torch.nn" in out
    assert f"ran on backend '{'cpu' if _cpu_built() else 'reference'}'" in out


def test_cli_rejects_a_missing_cuda_device(capsys):
    from rnnkernels.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["demo", "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_last_path_names_the_kernel_path(backend):
    lstm = rnnkernels.LSTM(3, 4, 2, bidirectional=True, backend=backend)
    cell = rnnkernels.GRUCell(3, 4, backend=backend)
    assert lstm.last_path is None and cell.last_path is None
    lstm(torch.randn(5, 2, 3))
    cell(torch.randn(2, 3))
    chosen = rnnkernels.backends.backend_implementation(backend)
    expected = chosen.kernel_path if hasattr(chosen, "kernel_path") else None
    for module in (lstm, cell):
        assert isinstance(module.last_path, str) and module.last_path
        if expected is None:
            assert module.last_path == "loop"
