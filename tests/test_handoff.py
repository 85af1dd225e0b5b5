"""`auto` hands a layer to torch.nn where a measured table says torch.nn is
faster (rnnkernels/handoff.py), and nowhere else; the tables come from the
benchmark suite's JSON (`python -m rnnkernels handoff-table`)."""

import json

import pytest
import torch
from torch import nn

import rnnkernels
from rnnkernels import handoff
from rnnkernels.__main__ import main

T, B, I, H = 32, 16, 8, 128  # the quick CPU suite's "small" shape, but for the input size


def _record(cell, mode, impl, ms, dtype="fp32", shape="small"):
    return {"cell": cell, "dtype": dtype, "mode": mode, "impl": impl, "median_ms": ms, "status": "ok",
            "shape": shape}


def _bench_json(path, records, device=None, threads=None, device_type="cpu"):
    run = {"device": device or handoff.cpu_name(), "device_type": device_type,
           "cpu_threads": torch.get_num_threads() if threads is None else threads,
           "torch": torch.__version__, "commit": "test", "date": "2026-12-04", "records": records}
    path.write_text(json.dumps(run))
    return str(path)


@pytest.fixture
def tables(tmp_path, monkeypatch):
    """A table for this CPU and thread count: torch.nn faster for the LSTM in
    training and the GRU in inference; the cpu backend faster otherwise."""
    records = [
        _record("lstm", "fwd+bwd", "torch.nn", 5.0), _record("lstm", "fwd+bwd", "cpu", 6.0),
        _record("lstm", "fwd", "torch.nn", 3.0), _record("lstm", "fwd", "cpu", 2.0),
        _record("gru", "fwd", "torch.nn", 2.0), _record("gru", "fwd", "cpu", 2.5),
        _record("gru", "fwd+bwd", "torch.nn", 9.0), _record("gru", "fwd+bwd", "cpu", 4.0),
    ]
    folder = tmp_path / "tables"
    folder.mkdir()
    source = _bench_json(tmp_path / "run.json", records)
    assert main(["handoff-table", source, "--out", str(folder / "here.json")]) == 0
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", str(folder))
    return folder


def _pair(kind, **options):
    torch.manual_seed(0)
    reference = getattr(nn, kind)(I, H, **options)
    ours = getattr(rnnkernels, kind)(I, H, **options)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _run(module, x):
    out, _ = module(x)
    out.square().sum().backward()
    return out


def test_training_lstm_is_handed_to_torch_nn_where_it_was_faster(tables):
    reference, ours = _pair("LSTM")
    x = torch.randn(T, B, I)
    x_ours = x.clone().requires_grad_()
    expected = _run(reference, x.clone().requires_grad_())
    got = _run(ours, x_ours)
    assert ours.last_backend == ours.last_path == "torch.nn"
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for (name, p), q in zip(reference.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=f"grad of {name}")


def test_mode_decides_from_its_own_measurements(tables):
    _, lstm = _pair("LSTM")
    with torch.no_grad():  # inference: the cpu backend was faster
        lstm(torch.randn(T, B, I))
    assert lstm.last_backend == "cpu"
    _, gru = _pair("GRU")
    with torch.no_grad():
        gru(torch.randn(T, B, I))
    assert gru.last_backend == "torch.nn"
    gru(torch.randn(T, B, I, requires_grad=True))
    assert gru.last_backend == "cpu"


def test_within_reach_of_a_measured_case_only(tables):
    _, lstm = _pair("LSTM")
    lstm(torch.randn(2 * T, B // 2, I, requires_grad=True))  # within 2x in steps and batch
    assert lstm.last_backend == "torch.nn"
    lstm(torch.randn(T, 4 * B, I, requires_grad=True))  # 4x the batch: nothing measured near
    assert lstm.last_backend == "cpu"
    small = rnnkernels.LSTM(I, 16)  # 8x smaller hidden size
    small(torch.randn(T, B, I, requires_grad=True))
    assert small.last_backend == "cpu"


@pytest.mark.parametrize("change", ["tbptt", "explicit backend", "bidirectional", "two layers", "relu"])
def test_what_torch_nn_cannot_do_the_same_way_stays(tables, change):
    options = {"bidirectional": {"bidirectional": True}, "two layers": {"num_layers": 2}}.get(change, {})
    if change == "relu":
        _, module = _pair("RNN", nonlinearity="relu")
    else:
        _, module = _pair("LSTM", **options)
    if change == "tbptt":
        module.tbptt = 4
    if change == "explicit backend":
        module.backend = "cpu"
    module(torch.randn(T, B, I, requires_grad=True))
    assert module.last_backend == "cpu"


def test_batch_first_packed_and_unbatched_inputs_are_measured_by_their_steps_and_rows(tables):
    _, lstm = _pair("LSTM", batch_first=True)
    lstm(torch.randn(B, T, I, requires_grad=True))
    assert lstm.last_backend == "torch.nn"
    lstm(torch.randn(T, I, requires_grad=True))  # unbatched: one row, far from B = 16
    assert lstm.last_backend == "cpu"
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(T, B, I, requires_grad=True), [T] * B)
    _, plain = _pair("LSTM")
    plain(packed)  # packed cases were not measured
    assert plain.last_backend == "cpu"


def test_no_hand_over_under_vmap(tables):
    _, lstm = _pair("LSTM")
    params = dict(lstm.named_parameters())
    x = torch.randn(2, T, B, I)

    def run(x):
        return torch.func.functional_call(lstm, params, (x,))[0].sum()

    expected = torch.stack([run(x[0]), run(x[1])])
    torch.testing.assert_close(torch.func.vmap(run)(x), expected)
    assert lstm.last_backend == "cpu"


def test_off_and_another_device_mean_no_hand_over(tables, tmp_path, monkeypatch):
    _, lstm = _pair("LSTM")
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", "off")
    lstm(torch.randn(T, B, I, requires_grad=True))
    assert lstm.last_backend == "cpu"
    other = tmp_path / "other"
    other.mkdir()
    source = _bench_json(tmp_path / "other.json", [_record("lstm", "fwd+bwd", "torch.nn", 1.0),
                                                    _record("lstm", "fwd+bwd", "cpu", 9.0)], device="Another CPU")
    assert main(["handoff-table", source, "--out", str(other / "t.json")]) == 0
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", str(other))
    lstm(torch.randn(T, B, I, requires_grad=True))
    assert lstm.last_backend == "cpu"
    wrong_threads = tmp_path / "threads"
    wrong_threads.mkdir()
    source = _bench_json(tmp_path / "threads.json", [_record("lstm", "fwd+bwd", "torch.nn", 1.0),
                                                      _record("lstm", "fwd+bwd", "cpu", 9.0)],
                         threads=torch.get_num_threads() + 1)
    assert main(["handoff-table", source, "--out", str(wrong_threads / "t.json")]) == 0
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", str(wrong_threads))
    lstm(torch.randn(T, B, I, requires_grad=True))
    assert lstm.last_backend == "cpu"


def test_table_command_refuses_mixed_devices_and_non_benchmark_files(tmp_path, capsys):
    one = _bench_json(tmp_path / "a.json", [_record("lstm", "fwd", "torch.nn", 1.0), _record("lstm", "fwd", "cpu", 2.0)])
    two = _bench_json(tmp_path / "b.json", [_record("lstm", "fwd", "torch.nn", 1.0)], device="Another CPU")
    assert main(["handoff-table", one, two, "--out", str(tmp_path / "t.json")]) == 2
    assert "more than one device" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("[1, 2")
    assert main(["handoff-table", str(tmp_path / "junk.json"), "--out", str(tmp_path / "t.json")]) == 2
    assert "not a benchmark JSON" in capsys.readouterr().err
    only_torch = _bench_json(tmp_path / "c.json", [_record("lstm", "fwd", "torch.nn", 1.0)])
    assert main(["handoff-table", only_torch, "--out", str(tmp_path / "t.json")]) == 2
    assert "no case" in capsys.readouterr().err


def test_table_keeps_the_fastest_median_of_repeated_runs(tmp_path):
    from rnnkernels.bench.handoff_table import build_table

    first = _bench_json(tmp_path / "a.json", [_record("gru", "fwd", "torch.nn", 3.0), _record("gru", "fwd", "cpu", 2.0)])
    second = _bench_json(tmp_path / "b.json", [_record("gru", "fwd", "torch.nn", 2.5),
                                               _record("gru", "fwd", "cpu", 2.2),
                                               {**_record("gru", "fwd", "reference", 1.0), "status": "wrong"}])
    (case,) = build_table([first, second])["cases"]
    assert case["median_ms"] == {"torch.nn": 2.5, "cpu": 2.0}
    assert (case["seq_len"], case["batch"], case["hidden_size"]) == (32, 16, 128)


def test_committed_tables_load_and_trace_back_to_committed_runs():
    import pathlib

    results = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    for path in handoff.TABLE_DIR.glob("*.json"):
        table = json.loads(path.read_text())
        assert table["format"] == handoff.TABLE_FORMAT, path.name
        for source in table["sources"]:
            assert (results / source["file"]).exists(), f"{path.name}: {source['file']} is not committed"
    handoff._load(str(handoff.TABLE_DIR))


def _lookup(function, backend, **overrides):
    query = dict(device_type="cpu", device=handoff.cpu_name(), threads=torch.get_num_threads(), backend=backend,
                 cell="lstm", dtype="fp32", training=True, layers=1, bidirectional=False, packed=False,
                 projected=False, batch=B, hidden=H, steps=T)
    query.update(overrides)
    return function(**query)


def test_forced_path_measurements_pick_the_path_and_count_as_the_backend(tmp_path, monkeypatch):
    """A run with 'backend:path' implementations: fastest_path names the
    fastest path, and the backend counts as fast as that path (it takes it)."""
    folder = tmp_path / "tables"
    folder.mkdir()
    records = [_record("lstm", "fwd+bwd", "torch.nn", 5.0), _record("lstm", "fwd+bwd", "cpu", 6.0),
               _record("lstm", "fwd+bwd", "cpu:loop", 4.0), _record("lstm", "fwd+bwd", "cpu:other", 7.0),
               _record("gru", "fwd+bwd", "torch.nn", 5.0), _record("gru", "fwd+bwd", "cpu", 6.0)]
    source = _bench_json(tmp_path / "run.json", records)
    assert main(["handoff-table", source, "--out", str(folder / "t.json")]) == 0
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", str(folder))
    assert _lookup(handoff.fastest_path, "cpu") == "loop"
    assert not _lookup(handoff.torch_is_faster, "cpu")
    assert _lookup(handoff.fastest_path, "cpu", cell="gru") is None  # no path measured: the backend's rule
    assert _lookup(handoff.torch_is_faster, "cpu", cell="gru")
    assert _lookup(handoff.fastest_path, "cpu", batch=8 * B) is None  # nothing measured near


def test_the_triton_backend_takes_the_path_a_gpu_table_measured_fastest(tmp_path, monkeypatch):
    """On a GPU (faked here: only the device's name and type are read), a table
    with the suite's 'triton:<path>' measurements picks the path; where it
    measured nothing, the stated model does; a forced path wins over both."""
    from rnnkernels.triton_kernels import launch

    folder = tmp_path / "tables"
    folder.mkdir()
    records = [_record("lstm", "fwd+bwd", impl, ms, shape="long") for impl, ms in
               (("torch.nn", 5.0), ("triton", 6.0), ("triton:step-graph", 4.0), ("triton:persistent", 7.0))]
    source = _bench_json(tmp_path / "run.json", records, device="Fake GPU", device_type="cuda")
    assert main(["handoff-table", source, "--out", str(folder / "gpu.json")]) == 0
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", str(folder))
    monkeypatch.setattr(handoff, "device_name", lambda device: "Fake GPU")
    monkeypatch.setattr(launch, "is_interpreted", lambda: False)
    cuda = torch.device("cuda")
    model = launch.choose_path("lstm", 16, 768, 768, torch.float32)
    assert launch.choose_path("lstm", 16, 768, 768, torch.float32, cuda, 1024, True) == "step-graph"
    assert launch.choose_path("lstm", 16, 768, 768, torch.float32, cuda, 1024, False) == model  # fwd: unmeasured
    assert launch.choose_path("lstm", 16, 768, 768, torch.float32, cuda, 100, True) == model  # 10x fewer steps
    monkeypatch.setenv("RNNKERNELS_TRITON_PATH", "step")
    assert launch.choose_path("lstm", 16, 768, 768, torch.float32, cuda, 1024, True) == "step"
    # the backend counts as fast as the path it takes: torch.nn (5 ms) is slower than step-graph (4 ms)
    assert not handoff.torch_is_faster("cuda", "Fake GPU", None, "triton", "lstm", "fp32", True, 1, False, False,
                                       False, 16, 768, 1024)


def test_within_the_margin_the_call_stays(tmp_path, monkeypatch):
    """torch.nn 3% faster is noise (handoff.MARGIN): the backend keeps the call."""
    folder = tmp_path / "tables"
    folder.mkdir()
    source = _bench_json(tmp_path / "run.json", [_record("lstm", "fwd+bwd", "torch.nn", 5.0),
                                                 _record("lstm", "fwd+bwd", "cpu", 5.15)])
    assert main(["handoff-table", source, "--out", str(folder / "t.json")]) == 0
    monkeypatch.setenv("RNNKERNELS_HANDOFF_TABLES", str(folder))
    assert not _lookup(handoff.torch_is_faster, "cpu")
