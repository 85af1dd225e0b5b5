"""Quick CPU measurement: rnnkernels' cpu and reference backends against
torch.nn's native CPU path, same inputs, same run.

    .venv/bin/python benchmarks/cpu_quick.py [--repeats N] [--out DIR]

Each implementation's output and gradients are checked against torch.nn
before it is timed; a wrong one is reported as wrong, never timed. Writes a
table to the terminal and JSON (records as the benchmark suite of a later
issue will write them) into benchmarks/results/. The suite against cuDNN on
a GPU is that later issue; this file answers only "how does the cpu backend
compare with torch on a CPU".
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import torch
from torch import nn

import rnnkernels

SHAPES = [  # (seq_len, batch, input_size, hidden_size)
    (100, 16, 128, 128),
    (100, 64, 256, 256),
    (50, 8, 512, 512),
]
CELLS = {"lstm": (nn.LSTM, rnnkernels.LSTM), "gru": (nn.GRU, rnnkernels.GRU)}


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _step(module, x, mode):
    if mode == "fwd":
        with torch.no_grad():
            return module(x)[0]
    x = x.detach().requires_grad_()
    out = module(x)[0]
    out.backward(torch.ones_like(out))
    return out


def _time(module, x, mode, repeats):
    _step(module, x, mode)  # warm-up
    times = []
    for _ in range(repeats):
        module.zero_grad(set_to_none=True)
        start = time.perf_counter()
        _step(module, x, mode)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731 - a local percentile
    return statistics.median(times), pick(0.2), pick(0.8)


def _matches(ours, theirs, x):
    """Output and weight gradient of `ours` agree with torch.nn's (float32)."""
    outs = []
    for module in (ours, theirs):
        module.zero_grad(set_to_none=True)
        outs.append(_step(module, x, "fwd+bwd"))
    grad_ours, grad_theirs = ours.weight_hh_l0.grad, theirs.weight_hh_l0.grad
    scale = max(1.0, grad_theirs.abs().max().item())
    return ((outs[0] - outs[1]).abs().max().item() < 1e-4
            and (grad_ours - grad_theirs).abs().max().item() < 1e-4 * scale)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    records = []
    print(f"{'cell':<5} {'T':>4} {'B':>3} {'H':>4} {'mode':<8} {'impl':<22} {'median ms':>10} "
          f"{'vs torch.nn':>11}")
    for cell, (torch_cls, ours_cls) in CELLS.items():
        for steps, batch, features, hidden in SHAPES:
            torch.manual_seed(0)
            theirs = torch_cls(features, hidden)
            x = torch.randn(steps, batch, features)
            impls = {"torch.nn (native CPU)": theirs}
            for backend in rnnkernels.available_backends():
                module = ours_cls(features, hidden, backend=backend)
                module.load_state_dict(theirs.state_dict())
                impls[f"rnnkernels {backend}"] = module
            for mode in ("fwd", "fwd+bwd"):
                baseline = None
                for impl, module in impls.items():
                    record = {"cell": cell, "dtype": "float32", "batch": batch, "seq_len": steps,
                              "input_size": features, "hidden_size": hidden, "layers": 1,
                              "bidirectional": False, "mode": mode, "impl": impl,
                              "peak_mem_bytes": None}
                    if module is not theirs and not _matches(module, theirs, x):
                        record.update(median_ms=None, p20_ms=None, p80_ms=None, wrong=True)
                        print(f"{cell:<5} {steps:>4} {batch:>3} {hidden:>4} {mode:<8} {impl:<22} "
                              f"{'WRONG':>10}")
                        records.append(record)
                        continue
                    median, p20, p80 = _time(module, x, mode, args.repeats)
                    baseline = baseline or median
                    record.update(median_ms=median, p20_ms=p20, p80_ms=p80, wrong=False)
                    records.append(record)
                    print(f"{cell:<5} {steps:>4} {batch:>3} {hidden:>4} {mode:<8} {impl:<22} "
                          f"{median:>10.2f} {baseline / median:>10.2f}x")

    device = _cpu_name()
    result = {
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rnnkernels_commit": _commit(),
        "date": datetime.date.today().isoformat(),
        "note": "CPU wall-clock (time.perf_counter), median of --repeats after one warm-up",
        "records": records,
    }
    os.makedirs(args.out, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in device.lower()).strip("-")[:40]
    path = os.path.join(args.out, f"{result['date']}-cpu-{slug}-{result['rnnkernels_commit']}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
