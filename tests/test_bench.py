"""The benchmark suite (`python -m rnnkernels bench`): a tiny run as a smoke
test of the whole path (no timing assertions), the JSON it writes, the
correctness gate before timing, and bad options."""

import io
import json
import subprocess
import sys

import pytest
import torch

from rnnkernels.__main__ import main
from rnnkernels.bench import implementations, runner, suite
from rnnkernels.bench.correctness import check
from rnnkernels.bench.flops import forward_flops, step_flops
from rnnkernels.bench.progress import Progress
from rnnkernels.bench.timing import CPU_QUICK_SETTINGS, percentile

REQUIRED_RECORD_KEYS = (
    "cell", "dtype", "batch", "seq_len", "input_size", "hidden_size", "layers", "bidirectional",
    "mode", "impl", "median_ms", "p20_ms", "p80_ms", "peak_mem_bytes")
STATUSES = {"ok", "wrong", "skipped", "error"}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One tiny run: LSTM, two hidden sizes (so there is a plot against H),
    float32 and bfloat16, both modes, torch.nn beside the CPU backends."""
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    try:
        status = main(["bench", "--quick", "--shape", "small-h64,small", "--cell", "lstm",
                       "--dtype", "fp32,bf16", "--impl", "torch.nn,reference,cpu",
                       "--threads", "1", "--out", str(out), "--note", "test_bench smoke run"])
    finally:
        torch.set_num_threads(threads)
    [path] = out.glob("*.json")
    return status, out, json.loads(path.read_text())


def test_smoke_run_succeeds_and_writes_its_files(smoke_run):
    status, out, result = smoke_run
    assert status == 0
    stem = next(out.glob("*.json")).stem
    assert (out / f"{stem}.txt").read_text().startswith("rnnkernels bench")
    try:
        import matplotlib  # noqa: F401 - only whether it is there
    except ImportError:
        assert "matplotlib" in result["plots_note"]
    else:
        assert (out / f"{stem}-time-vs-H.png").stat().st_size > 0
        assert (out / f"{stem}-ratio-vs-H.png").stat().st_size > 0


def test_json_has_the_run_metadata(smoke_run):
    _, _, result = smoke_run
    for key in ("device", "torch", "triton", "cuda", "cudnn", "date", "commit", "baseline"):
        assert key in result, key
    assert result["device_type"] == "cpu"
    assert result["note"] == "test_bench smoke run"
    assert result["stopped_early"] is False


def test_json_records_have_the_required_keys(smoke_run):
    _, _, result = smoke_run
    records = result["records"]
    # 2 shapes x 2 dtypes x 2 modes, each with 3 implementations
    assert len(records) == 24
    for record in records:
        assert set(REQUIRED_RECORD_KEYS) <= set(record), record
        assert record["mode"] in ("fwd", "fwd+bwd")
        assert record["status"] in STATUSES
        assert record["peak_mem_bytes"] is None  # a CPU keeps no allocator statistics
        if record["status"] == "ok":
            assert 0 < record["p20_ms"] <= record["median_ms"] <= record["p80_ms"]
            assert record["us_per_step"] > 0 and record["tflops"] > 0
        else:
            assert record["median_ms"] is None and record["reason"]


def test_every_implementation_is_checked_or_skipped_with_a_reason(smoke_run):
    _, _, result = smoke_run
    by_impl = {}
    for record in result["records"]:
        by_impl.setdefault((record["impl"], record["dtype"]), set()).add(record["status"])
    assert by_impl[("torch.nn", "fp32")] == {"ok"}
    assert by_impl[("reference", "bf16")] == {"ok"}
    # the cpu backend runs bf16 too (float32 state): checked, then timed
    cpu_bf16 = [r for r in result["records"] if r["impl"] == "cpu" and r["dtype"] == "bf16"]
    assert {r["status"] for r in cpu_bf16} == {"ok"}
    baseline = [r for r in result["records"] if r["impl"] == "torch.nn"]
    assert all(r["ratio_to_baseline"] == 1.0 for r in baseline)


def test_a_spent_time_budget_still_writes_the_json(tmp_path, restore_threads):
    # the budget keeps 15 s for writing the report, so 1 s starts no case
    assert main(["bench", "--shape", "small-h64", "--cell", "rnn", "--time-budget", "1",
                 "--no-plots", "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert result["stopped_early"] is True and result["jobs_not_run"] == 6
    assert result["records"] == []


def test_from_json_renders_an_earlier_run(smoke_run, tmp_path, capsys):
    _, out, _ = smoke_run
    [path] = out.glob("*.json")
    assert main(["bench", "--from-json", str(path), "--out", str(tmp_path), "--no-plots"]) == 0
    assert (tmp_path / f"{path.stem}.txt").read_text() == (out / f"{path.stem}.txt").read_text()


def test_wrong_result_is_reported_as_wrong_and_not_timed(monkeypatch):
    real_build = implementations.build

    def build_with_a_bug(name, workload):
        forward, module = real_build(name, workload)
        if name != "reference":
            return forward, module

        def wrong(*args):
            output, state = forward(*args)
            return output * 1.01, state
        return wrong, module

    monkeypatch.setattr(implementations, "build", build_with_a_bug)
    case = suite.Case(suite.ALL_SHAPES["small-h64"], "gru", "fp32", "fwd")
    records = runner.run_case(runner.Job(case, ["torch.nn", "reference"]), torch.device("cpu"),
                              CPU_QUICK_SETTINGS, set(), Progress(1, stream=io.StringIO()))
    baseline, reference = records
    assert baseline["status"] == "ok"
    assert reference["status"] == "wrong"
    assert reference["median_ms"] is None and "output" in reference["reason"]


def test_correctness_check_allows_twice_the_baselines_error_plus_a_floor():
    oracle = {"output": torch.linspace(-1, 1, 101, dtype=torch.float64)}
    assert check({"output": oracle["output"] + 1e-5}, oracle, "fp32", 0.0)[0] is None
    assert check({"output": oracle["output"] + 1e-3}, oracle, "fp32", 0.0)[0] is not None
    assert check({"output": oracle["output"] + 1e-3}, oracle, "fp32", 1e-3)[0] is None
    assert check({"output": oracle["output"] + 1e-2}, oracle, "bf16", 0.0)[0] is None
    assert check({"output": oracle["output"] + 5e-2}, oracle, "bf16", 0.0)[0] is not None
    assert check({"output": oracle["output"] + 5e-2}, oracle, "bf16", 2e-2)[0] is None
    nan = oracle["output"].clone()
    nan[3] = float("nan")
    assert check({"output": nan}, oracle, "bf16", 1.0)[0] is not None
    assert check({}, oracle, "fp32", 0.0)[0] is not None  # a missing tensor is wrong


def test_flop_formula():
    lstm = suite.Shape("t", seq_len=10, batch=4, input_size=3, hidden_size=5)
    # per row-step: input projection 2*4H*I plus recurrence 2*4H*H
    assert forward_flops("lstm", lstm) == 10 * 4 * (2 * 20 * 3 + 2 * 20 * 5)
    assert step_flops("gru", lstm, "fwd+bwd") == 3 * 10 * 4 * (2 * 15 * 3 + 2 * 15 * 5)
    two_layer_bidir = suite.Shape("t", 10, 4, 3, 5, layers=2, bidirectional=True)
    per_direction = (2 * 5 * 3 + 2 * 5 * 5) + (2 * 5 * 10 + 2 * 5 * 5)
    assert forward_flops("rnn", two_layer_bidir) == 2 * 10 * 4 * per_direction
    packed = suite.Shape("t", 10, 3, 3, 5, packed=True)
    assert packed.lengths() == [10, 8, 5] and forward_flops("rnn", packed) == 23 * (30 + 50)


def test_percentiles_interpolate():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([1.0, 2.0], 0.2) == pytest.approx(1.2)
    assert percentile([7.0], 0.8) == 7.0


def test_progress_writes_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(2, stream=stream)
    progress.start_case("lstm fp32 fwd small")
    progress.end_case()
    progress.finish()
    assert stream.getvalue().startswith("[1/2] lstm fp32 fwd small")
    assert "\r" not in stream.getvalue()


def test_progress_draws_one_line_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(4, stream=stream)
    progress.start_case("gru bf16 fwd+bwd long")
    progress.show("reference")
    progress.end_case()
    progress.finish()
    text = stream.getvalue()
    assert "\r[......" in text and "gru bf16 fwd+bwd long: reference" in text
    assert "\r[######..." in text and "1/4" in text
    assert "\n" not in text and text.endswith("\r")


@pytest.mark.parametrize("options, message", [
    (["--cell", "cnn"], "unknown cell 'cnn'"),
    (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["--shape", "fastrnns,huge"], "unknown shape 'huge'"),
    (["--mode", "backward"], "unknown mode 'backward'"),
    (["--impl", "cudnn"], "unknown impl 'cudnn'"),
    (["--shape", "proj", "--cell", "gru"], "no case matches"),
    (["--time-budget", "0"], "--time-budget"),
    (["--device", "tpu"], "--device"),
], ids=["cell", "dtype", "shape", "mode", "impl", "empty-selection", "budget", "device"])
def test_bad_options_exit_2_with_a_message(options, message, capsys, tmp_path, restore_threads):
    assert main(["bench", "--out", str(tmp_path), *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rnnkernels", "bench", "--device", "cuda",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error: --device cuda asked for, but torch sees no CUDA device here" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_becomes_a_hand_off_table_that_auto_follows(smoke_run, tmp_path, monkeypatch, restore_threads):
    """bench -> handoff-table -> auto, end to end: at the smoke run's thread
    count and shapes, `auto` runs torch.nn exactly where the run measured it
    faster than the cpu backend (by more than handoff.MARGIN)."""
    import rnnkernels
    from rnnkernels import handoff

    _, out, result = smoke_run
    folder = tmp_path / "tables"
    folder.mkdir()
    assert main(["handoff-table", str(next(out.glob("*.json"))), "--out", str(folder / "t.json")]) == 0
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", str(folder))
    torch.set_num_threads(1)
    times = {(r["shape"], r["dtype"], r["mode"], r["impl"]): r["median_ms"] for r in result["records"]}
    for shape, hidden in (("small-h64", 64), ("small", 128)):
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            lstm = rnnkernels.LSTM(hidden, hidden).to(dtype)
            lstm(torch.randn(32, 16, hidden, dtype=dtype, requires_grad=True))
            faster = (times[(shape, name, "fwd+bwd", "torch.nn")] * handoff.MARGIN
                      < times[(shape, name, "fwd+bwd", "cpu")])
            assert lstm.last_backend == ("torch.nn" if faster else "cpu"), (shape, name)


def test_auto_is_measured_when_asked_for(tmp_path, restore_threads):
    assert main(["bench", "--shape", "small-h64", "--cell", "rnn", "--mode", "fwd", "--dtype", "fp32",
                 "--impl", "torch,auto", "--no-plots", "--threads", "1", "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("*.json")
    records = json.loads(path.read_text())["records"]
    assert [(r["impl"], r["status"]) for r in records] == [("torch.nn", "ok"), ("auto", "ok")]
