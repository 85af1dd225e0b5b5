"""The tolerance policy of DESIGN.md, written once.

Compare against the reference run in float64 on the same inputs. A backend
in dtype D passes when its max error is at most 2x the error of the reference
run in dtype D against float64, plus a floor relative to the magnitude of the
expected values. NaN never passes. float64 against float64 uses the floor
only: both sides compute the same math, so only summation order differs.
"""

import torch

RELATIVE_FLOOR = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 2e-2,
    torch.bfloat16: 2e-2,
}
TF32_FLOOR = 1e-3


def max_error(actual, expected):
    if actual.numel() == 0:
        return 0.0
    return (actual.double() - expected.double()).abs().max().item()


def assert_close(name, actual, expected, dtype=None, reference_error=0.0, floor=None):
    """Asserts |actual - expected|_max <= 2 * reference_error + floor * max(1, |expected|_max)."""
    assert actual is not None, f"{name}: missing (None)"
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    assert not torch.isnan(actual).any(), f"{name}: contains NaN"
    dtype = dtype or actual.dtype
    floor = RELATIVE_FLOOR[dtype] if floor is None else floor
    scale = max(1.0, expected.double().abs().max().item()) if expected.numel() else 1.0
    bound = 2 * reference_error + floor * scale
    error = max_error(actual, expected)
    assert error <= bound, (
        f"{name}: max error {error:.3e} exceeds {bound:.3e} "
        f"(2 x reference error {reference_error:.3e} + {floor:g} x {scale:.3g}, {dtype})")


def assert_all_close(results, expected, **kwargs):
    """assert_close on every named tensor of two dicts with the same keys."""
    assert results.keys() == expected.keys(), (
        f"different tensors: {sorted(results.keys() ^ expected.keys())}")
    for name in expected:
        assert_close(name, results[name], expected[name], **kwargs)
