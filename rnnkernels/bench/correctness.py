"""Each implementation's outputs checked before it is timed, by the project's
tolerance policy (README, tests/tolerance.py) with torch.nn as the yardstick.

The oracle is torch.nn run one precision up (float64 for float32, float32 for
bf16/fp16) on the same values. torch.nn in the measured dtype has some error
against it; an implementation passes when its error is at most twice that,
plus a floor. So a bf16 kernel is held to bf16 accuracy, not asked to agree
with cuDNN's particular roundings: over T=1024 steps two correct bf16
implementations differ by several percent in dW_hh (seen on a CPU).

The error of a tensor is max|ours - oracle| / max|oracle|: relative to the
tensor's own scale, so gradients that grow with T and outputs in [-1, 1] are
held to the same standard. NaN or inf counts as infinitely wrong.
"""

import math

import torch

# The floor, relative to the scale: what the brief and the policy allow for
# rounding in each dtype when the baseline itself happens to be very close.
FLOOR = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 2e-2}


def relative_error(ours, theirs):
    if ours is None or theirs is None:
        return 0.0 if ours is None and theirs is None else math.inf
    if ours.shape != theirs.shape:
        return math.inf
    ours, theirs = ours.double(), theirs.double()
    if not torch.isfinite(ours).all():
        return math.inf
    scale = theirs.abs().max().item()
    return (ours - theirs).abs().max().item() / max(scale, 1e-30)


def compare(ours, oracle):
    """(worst relative error, name of the tensor it is in) over the oracle's tensors."""
    worst, where = 0.0, None
    for name, expected in oracle.items():
        error = relative_error(ours.get(name), expected)
        if where is None or error > worst:
            worst, where = error, name
    return worst, where


def tolerance(dtype_name, baseline_error):
    return 2 * baseline_error + FLOOR[dtype_name]


def check(ours, oracle, dtype_name, baseline_error):
    """(None, error) when `ours` is within tolerance of the oracle, else
    (a one-line reason, error)."""
    error, where = compare(ours, oracle)
    allowed = tolerance(dtype_name, baseline_error)
    if error <= allowed:
        return None, error
    return (f"{where}: relative error {error:.2e} > {allowed:.1e} "
            f"(2 x the baseline's {baseline_error:.1e} + {FLOOR[dtype_name]:.0e})"), error
