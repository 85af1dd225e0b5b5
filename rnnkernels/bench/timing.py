"""Timing one step: CUDA events on a GPU, perf_counter on a CPU; warm-up,
then repeats for about `rep_ms`; median with 20th and 80th percentiles.

The GPU loop is what triton.testing.do_bench does (events around each call,
the L2 cache flushed between calls so no call finds the weights left warm by
the one before), written out so that a slow step (the reference backend at
T=1024 takes a good fraction of a second) still gets `min_reps` samples, and
so that the first warm-up call also gives the peak memory.
"""

import dataclasses
import time

import torch

_L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than any current GPU's L2 (H100: 50 MB)


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    warmup_ms: float  # at least one call, unless 0: then the correctness check was the warm-up
    rep_ms: float
    min_reps: int
    max_reps: int


# do_bench defaults to 25 ms warm-up and 100 ms of repeats; 60 ms keeps the
# full suite (about 220 cases) inside the GPU script's few minutes.
GPU_SETTINGS = TimingSettings(warmup_ms=20, rep_ms=60, min_reps=4, max_reps=200)
# On a CPU nothing is compiled or cached on first use beyond what the
# correctness check's call (the same step) already did, so it is the warm-up.
CPU_SETTINGS = TimingSettings(warmup_ms=0, rep_ms=150, min_reps=3, max_reps=30)
CPU_QUICK_SETTINGS = TimingSettings(warmup_ms=0, rep_ms=40, min_reps=3, max_reps=10)


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int


def percentile(sorted_values, q):
    """Linear interpolation between the closest ranks (numpy's default)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _summary(times_ms):
    times_ms = sorted(times_ms)
    return Timing(percentile(times_ms, 0.5), percentile(times_ms, 0.2), percentile(times_ms, 0.8),
                  len(times_ms))


def _reps(estimate_ms, settings):
    wanted = int(settings.rep_ms / max(estimate_ms, 1e-3))
    return max(settings.min_reps, min(settings.max_reps, wanted))


def _time_cuda(step, reset, settings):
    """(Timing, peak bytes); the peak is read on the first warm-up call."""
    flush = torch.empty(_L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    warmup_times, peak = [], None
    while not warmup_times or sum(warmup_times) < settings.warmup_ms:
        reset()
        if peak is None:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        if peak is None:
            peak = torch.cuda.max_memory_allocated() - before
        warmup_times.append(start.elapsed_time(end))
    count = _reps(min(warmup_times), settings)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    for first, last in zip(starts, ends, strict=True):
        reset()  # host-side only (grads to None), outside the timed region
        flush.zero_()
        first.record()
        step()
        last.record()
    torch.cuda.synchronize()
    times = [first.elapsed_time(last) for first, last in zip(starts, ends, strict=True)]
    return _summary(times), peak


def _time_cpu(step, reset, settings):
    warmup_ms = 0.0
    while warmup_ms < settings.warmup_ms:
        reset()
        begin = time.perf_counter()
        step()
        warmup_ms += (time.perf_counter() - begin) * 1e3
    times = []
    while len(times) < max(settings.min_reps, _reps(min(times, default=1e9), settings)):
        reset()
        begin = time.perf_counter()
        step()
        times.append((time.perf_counter() - begin) * 1e3)
        if sum(times) > 2 * settings.rep_ms and len(times) >= settings.min_reps:
            break  # a first call faster than the rest would ask for too many repeats
    return _summary(times), None


def measure(step, reset, device, settings):
    """(Timing of `step()` on `device`, peak memory bytes of one call or None).
    `reset()` runs before each call, untimed. The caller has run `step` once
    already (the correctness check).

    The peak is what one call allocates at most above what was allocated
    before it (weights and inputs): activations, saved tensors, gradients and
    workspaces, by torch.cuda.max_memory_allocated. None on a CPU, where torch
    keeps no allocator statistics."""
    if device.type == "cuda":
        return _time_cuda(step, reset, settings)
    return _time_cpu(step, reset, settings)
