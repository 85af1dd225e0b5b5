"""The benchmark's floor (every FLOP at the GEMM rate measured in the run)
and its report of the cpu backend's ISA level and GEMM path."""

import pytest
import torch

import rnnkernels
from rnnkernels.bench import floor


def test_floor_fraction_is_floor_time_over_measured_time():
    records = [{"status": "ok", "dtype": "fp32", "median_ms": 4.0, "flops": 2e9},
               {"status": "wrong", "dtype": "fp32", "median_ms": None, "flops": 2e9},
               {"status": "ok", "dtype": "bf16", "median_ms": 4.0, "flops": 2e9}]
    floor.fill_floors(records, {"fp32": 1000.0})
    assert records[0]["floor_ms"] == pytest.approx(2.0)
    assert records[0]["floor_fraction"] == pytest.approx(0.5)
    assert records[1]["floor_fraction"] is None  # not timed
    assert records[2]["floor_fraction"] is None  # no rate measured for its dtype


def test_gemm_rate_is_measured_on_the_cpu_only():
    rates = floor.gemm_gflops(["fp32"], torch.device("cpu"))
    assert rates["fp32"] > 0
    assert floor.gemm_gflops(["fp32"], torch.device("meta")) == {}


@pytest.mark.skipif(rnnkernels.backends.unavailable_reason("cpu") is not None,
                    reason="the cpu backend's extension is not built")
def test_cpu_backend_paths_name_the_isa_and_gemm(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CPU_ISA", "base")
    paths = floor.cpu_backend_paths()
    assert paths["isa"] == "base"
    assert "base" in paths["isas"].split(", ")
    assert paths["gemm_fp32"] in ("mkl_packed", "aten")
    assert paths["gemm_bf16"] in ("torch", "mkl_16bit", "float32")
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM", "aten")
    assert floor.cpu_backend_paths()["gemm_fp16"] == "float32"


def test_a_16bit_floor_is_never_below_float32s():
    rates = floor.gemm_gflops(["bf16"], torch.device("cpu"))
    assert list(rates) == ["bf16"]
    assert rates["bf16"] >= floor.gemm_gflops(["fp32"], torch.device("cpu"))["fp32"] / 2
