"""The floor of a CPU case: every FLOP of the layer (input projection,
recurrence, and in backward the weight and input gradients: flops.py) at the
GEMM rate measured in the same run, at the run's thread count.

The rate is that of one large matmul (torch.mm: MKL's sgemm on the x86
wheel, which the cpu backend's packed GEMM reaches per call), measured once
per dtype at the start of a run. A 16-bit dtype's rate is the better of its
own matmul and float32's: a layer may compute 16-bit inputs in float32 (the
cpu backend does), so a CPU without fast 16-bit matmuls does not lower its
floor. `floor_fraction` = floor time / measured
time: 1 would be a layer that does nothing but GEMMs at that rate.
Also here: which ISA level and GEMM path the cpu backend ran.
"""

import time

import torch

from .suite import DTYPES

# Square enough to reach the library's steady rate, small enough to take
# well under a second at one thread.
_SIZE = 512
_REPEATS = 5


def gemm_gflops(dtype_names, device):
    """{dtype name: GFLOP/s of a _SIZE^3 matmul}, the best of _REPEATS; {} off the CPU."""
    if device.type != "cpu":
        return {}
    rates = {}
    for name in ["fp32"] + sorted(set(dtype_names) - {"fp32"}):
        dtype = DTYPES[name]
        a = torch.randn(_SIZE, _SIZE).to(dtype)
        b = torch.randn(_SIZE, _SIZE).to(dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(_REPEATS):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        rates[name] = max(2 * _SIZE**3 / best / 1e9, rates.get("fp32", 0.0))
    return {name: rates[name] for name in dtype_names}


def cpu_backend_paths():
    """{isa, isas, gemm_fp32, gemm_fp64, gemm_bf16, gemm_fp16} of the cpu backend
    (the 16-bit ones: the path of the input projection and weight gradients of
    16-bit layers), or None without its extension."""
    from ..cpu_backend import load_extension

    extension, _ = load_extension()
    if extension is None:
        return None
    return {"isa": extension.cpu_isa(), "isas": extension.cpu_isas(),
            "gemm_fp32": extension.cpu_gemm_path("float32"),
            "gemm_fp64": extension.cpu_gemm_path("float64"),
            "gemm_bf16": extension.cpu_gemm_path("bfloat16"),
            "gemm_fp16": extension.cpu_gemm_path("float16")}


def cpu_flags():
    """The /proc/cpuinfo flags that decide the vector and GEMM paths."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile",
              "f16c")
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return None


def fill_floors(records, rates):
    """floor_ms and floor_fraction for every timed record whose dtype has a rate."""
    for record in records:
        rate = (rates or {}).get(record["dtype"])
        record["floor_ms"] = record["floor_fraction"] = None
        if record["status"] != "ok" or not rate or not record["median_ms"]:
            continue
        record["floor_ms"] = record["flops"] / (rate * 1e9) * 1e3
        record["floor_fraction"] = record["floor_ms"] / record["median_ms"]
