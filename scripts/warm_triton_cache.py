"""Fill a TRITON_CACHE_DIR for a GPU on a machine without one, and count, on
the GPU machine, how much of it hits.

The benchmark suite's shapes (rnnkernels/bench/suite.py, plus the headline
anchors) are recorded as the launchers launch them (record.py), every cell,
float32 (TF32 and IEEE), bfloat16 and float16, forward alone and forward +
backward, and each distinct launch is compiled with the JIT's own
specialization for the target (compile_worker.py), under triton 3.6 (the GPU
machines') by default. Compiled kernels land in --cache, which then travels
with the tree; on the GPU, the same command with the same --cache compiles
only what misses, and the summary counts hits (a compile that added no cache
entry) and misses.

    python scripts/warm_triton_cache.py --cache .triton-cache            # CPU machine
    python scripts/warm_triton_cache.py --cache .triton-cache --triton here    # on the GPU

Writes --summary (JSON: specs, hits, misses, findings) and prints it.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "0")  # recording needs no interpreter, compiling none at all

import torch  # noqa: E402

from rnnkernels.bench import suite  # noqa: E402
from rnnkernels.triton_kernels import compile_gate, record  # noqa: E402

CELLS = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}
# The headline anchors of the first GPU run: LSTM and GRU, B 16 and 64, H 768 and 1024.
ANCHORS = [(batch, hidden, 0, False) for batch in (16, 64) for hidden in (768, 1024)]
STEPS = 3  # launches do not specialize on T; S = T + 1 keeps the class of T = 100, 1024


def shapes(anchors_only):
    found = list(ANCHORS)
    if not anchors_only:
        found += [(s.batch, s.hidden_size, s.proj_size, s.packed) for s in suite.FULL_SHAPES]
    return sorted(set(found))


# The headline forces each kernel path in turn (scripts/gpu_run.sh: triton:persistent,
# triton:step-graph); None is the path rule's own choice.
FORCED_PATHS = (None, "persistent", "step-graph")


def record_specs(anchors_only=False):
    saved_path = os.environ.pop("RNNKERNELS_TRITON_PATH", None)
    try:
        with record.recording() as rec:
            for batch, hidden, proj, packed in shapes(anchors_only):
                for name, cell in CELLS.items():
                    if proj and cell != "lstm":
                        continue
                    for dtype in suite.DTYPES.values():
                        for precision in ("tf32", "ieee") if dtype == torch.float32 else ("ieee",):
                            torch.backends.cudnn.rnn.fp32_precision = precision
                            for forced in FORCED_PATHS:
                                _record_forced(forced, cell, dtype, batch, hidden, proj, packed)
    finally:
        os.environ.pop("RNNKERNELS_TRITON_PATH", None)
        if saved_path is not None:
            os.environ["RNNKERNELS_TRITON_PATH"] = saved_path
    return list(rec.specs.values())


def _record_forced(forced, cell, dtype, batch, hidden, proj, packed):
    """The launches of one case with a path forced (None: the rule's); a path
    that refuses the shape records nothing."""
    if forced is None:
        os.environ.pop("RNNKERNELS_TRITON_PATH", None)
    else:
        os.environ["RNNKERNELS_TRITON_PATH"] = forced
    for save in (False, True):
        try:
            record.record_case(cell, dtype, STEPS, batch, hidden, proj=proj or None, lengths=packed, save=save)
        except (ValueError, RuntimeError):  # forced onto a path this shape cannot take
            return


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="the TRITON_CACHE_DIR to fill")
    parser.add_argument("--triton", default="3.6", choices=("3.6", "here"),
                        help="3.6: a separate install (compile_gate.triton36_dir); here: this environment's "
                             "(on the GPU machine: count the hits of a carried cache)")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--anchors-only", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="compile only the first N launches (tests)")
    parser.add_argument("--summary", default=None, help="JSON file to write (default: CACHE/warm-summary.json)")
    args = parser.parse_args(argv)
    began = time.time()
    specs = record_specs(args.anchors_only)
    if args.limit:
        specs = specs[:args.limit]
    half = (len(specs) + 1) // 2  # two processes, as many cores as the CPU machines have
    jobs = {f"part{i}": (args.triton, part, [args.arch]) for i, part in enumerate((specs[:half], specs[half:])) if part}
    outcome = compile_gate.compile_all(jobs, os.path.abspath(args.cache), timeout=3600)
    summary = {"specs": len(specs), "triton": args.triton, "arch": args.arch, "hits": 0, "misses": 0,
               "failures": [], "findings": []}
    for name, results in outcome.items():
        if isinstance(results, str):
            summary["failures"].append(f"{name}: {results[-1000:]}")
            continue
        part = jobs[name][1]
        summary["hits"] += sum(r.get("cache_hit", False) for r in results)
        summary["misses"] += sum(not r.get("cache_hit", False) for r in results)
        summary["findings"] += compile_gate.findings(part, results)
    summary["seconds"] = round(time.time() - began, 1)
    path = args.summary or os.path.join(args.cache, "warm-summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "findings"}, indent=1))
    print(f"{len(summary['findings'])} findings" + "".join(f"\n  {f}" for f in summary["findings"][:20]))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
