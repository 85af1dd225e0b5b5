"""The JSON a run writes: the machine and versions, then one record per
(case, implementation), rewritten after every case so that a run stopped by a
time limit still leaves what it measured.

Record keys (the first fourteen are the issue's; keep them):
cell, dtype, batch, seq_len, input_size, hidden_size, layers, bidirectional,
mode ("fwd" or "fwd+bwd"), impl, median_ms, p20_ms, p80_ms, peak_mem_bytes;
then shape, proj_size, packed, status ("ok", "wrong", "skipped", "error"),
reason, max_rel_error, reps, us_per_step, tflops, ratio_to_baseline, flops (of one
timed step), floor_ms and floor_fraction (CPU: floor.py).
"""

import datetime
import json
import math
import os
import pathlib
import platform
import subprocess

import torch

from .floor import fill_floors
from .flops import step_flops
from .. import handoff
from .implementations import BASELINE

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device):
    return handoff.device_name(device)


def _slug(text, limit=40):
    slug = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    return "-".join(part for part in slug.split("-") if part)[:limit].strip("-")


def file_stem(metadata):
    """<date>-<device>-<commit>, the name shared by the JSON, the .txt and the plots."""
    device = _slug(metadata["device"])
    device = device if metadata["device_type"] == "cuda" else f"cpu-{device}"
    return f"{metadata['date'][:10]}-{device}-{metadata['commit'] or 'unknown'}"


def _triton_version():
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def fp32_precision():
    """How float32 ran on each side: torch.nn's cuDNN RNNs and the triton
    kernels follow the RNN setting; the cuda backend's per-step GEMMs (ATen)
    follow the matmul one."""
    from ..triton_kernels.precision import rnn_fp32_precision

    rnn = rnn_fp32_precision()
    gemm = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return {"torch.nn": rnn, "triton": rnn, "cuda step GEMM": gemm}


def metadata(device, baseline, settings):
    """Everything about the run that is not a record. `settings`: the run's
    options (suite, filters, budget, note), stored as given."""
    cuda = device.type == "cuda"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        # A copy of the tree without .git (a GPU machine's) is told its commit.
        "commit": os.environ.get("RNNKERNELS_COMMIT") or _git("rev-parse", "--short", "HEAD"),
        "commit_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "cpu_threads": torch.get_num_threads(),
        "cuda_capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                 "matmul": torch.backends.cuda.matmul.allow_tf32} if cuda else None,
        "fp32_precision": fp32_precision() if cuda else None,
        "baseline": baseline,
        "ratio": "ratio_to_baseline = baseline median_ms / this median_ms: above 1 is faster",
        "timing": ("CUDA events around each call, L2 flushed between calls, after warm-up"
                   if cuda else "time.perf_counter around each call; the correctness check's call is the warm-up"),
        "peak_mem": ("torch.cuda.max_memory_allocated during one call, minus what was allocated "
                     "before it" if cuda else
                     "null: torch's CPU allocator keeps no peak statistics"),
        "flops": "matrix products only, formulas in rnnkernels/bench/flops.py",
        **settings,
    }


def make_record(case, impl, status, reason=None, timing=None, peak=None, error=None):
    shape = case.shape
    record = {
        "cell": case.cell, "dtype": case.dtype, "batch": shape.batch, "seq_len": shape.seq_len,
        "input_size": shape.input_size, "hidden_size": shape.hidden_size, "layers": shape.layers,
        "bidirectional": shape.bidirectional, "mode": case.mode, "impl": impl,
        "median_ms": None, "p20_ms": None, "p80_ms": None, "peak_mem_bytes": peak,
        "shape": shape.name, "proj_size": shape.proj_size, "packed": shape.packed,
        "status": status, "reason": reason,
        "max_rel_error": error if error is None or math.isfinite(error) else None,
        "reps": None, "us_per_step": None, "tflops": None, "ratio_to_baseline": None,
        "flops": step_flops(case.cell, shape, case.mode), "floor_ms": None, "floor_fraction": None,
    }
    if timing is not None:
        record.update(median_ms=timing.median_ms, p20_ms=timing.p20_ms, p80_ms=timing.p80_ms,
                      reps=timing.reps, us_per_step=timing.median_ms * 1e3 / shape.seq_len,
                      tflops=record["flops"] / (timing.median_ms * 1e-3) / 1e12)
    return record


def case_key(record):
    return (record["shape"], record["cell"], record["dtype"], record["mode"])


def fill_ratios(records):
    """ratio_to_baseline for every timed record whose case has a timed baseline."""
    baselines = {case_key(r): r["median_ms"] for r in records
                 if r["impl"] == BASELINE and r["status"] == "ok"}
    for record in records:
        base = baselines.get(case_key(record))
        if record["status"] == "ok" and base:
            record["ratio_to_baseline"] = base / record["median_ms"]


def write_json(path, meta, records):
    """Atomically (a reader never sees half a file)."""
    fill_ratios(records)
    fill_floors(records, meta.get("gemm_gflops"))
    partial = f"{path}.partial"
    with open(partial, "w") as out:
        json.dump({**meta, "records": records}, out, indent=1)
        out.write("\n")
    os.replace(partial, path)
