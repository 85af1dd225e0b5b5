"""The loop over cases: for each, the oracle first (torch.nn one precision up,
see correctness.py), then each implementation checked against it and, if
right, timed.

A failure in one implementation (an exception, out of memory, a backend that
cannot run the input) becomes that record's status and reason; the run goes
on. A time budget is checked between cases: when it runs out, the remaining
cases are counted as not run and the run ends normally.
"""

import dataclasses
import math
import time

import torch

from ..backends import BackendUnavailableError
from . import implementations
from .correctness import check, compare
from .implementations import BASELINE, COMPILED
from .results import make_record
from .timing import measure
from .workload import Workload

# torch.compile unrolls the time loop: compiling one case took ~40 s at T=20
# on a CPU, so a compile job starts only with this much budget left.
COMPILE_RESERVE_S = 120


@dataclasses.dataclass
class Job:
    case: object
    impls: list


@dataclasses.dataclass
class Outcome:
    jobs: int
    jobs_done: int = 0
    records: list = dataclasses.field(default_factory=list)
    stopped_early: bool = False

    @property
    def jobs_not_run(self):
        return self.jobs - self.jobs_done


def _short(error):
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return text[:300]


@dataclasses.dataclass
class Oracle:
    outputs: dict  # the higher-precision run's tensors, by name
    baseline_error: float  # the baseline's own error against them, in the measured dtype
    checked_against: str  # what ran in higher precision
    baseline_failure: str | None  # why torch.nn could not run the case, if it could not


def _oracle(workload):
    """The oracle and the baseline's error against it. If torch.nn cannot run
    the case (an old cuDNN without bf16, say), the reference backend stands
    in for it, and every record of the case says so."""
    module, name, failure = workload.torch_module, BASELINE, None
    try:
        measured = workload.outputs(module, module)
    except Exception as error:  # noqa: BLE001 - any failure of torch.nn is reported, not raised
        failure = _short(error)
        module, name = workload.rnnkernels_module("reference"), "reference"
        measured = workload.outputs(module, module)
    try:
        outputs = workload.higher_precision_outputs(module)
    except Exception:  # noqa: BLE001 - e.g. a library without float64 kernels: the reference has them
        outputs = workload.higher_precision_outputs(workload.rnnkernels_module("reference"))
    error, _ = compare(measured, outputs)
    # a baseline that gave NaN allows nothing beyond the floor (and fails its own check)
    return Oracle(outputs, error if math.isfinite(error) else 0.0, name, failure)


def _run_impl(name, case, workload, oracle, device, settings):
    """The record of implementation `name` on the case."""
    with implementations.running(name):
        forward, module = implementations.build(name, workload)
        problem, error = check(workload.outputs(forward, module), oracle.outputs, case.dtype,
                               oracle.baseline_error)
        if problem:
            return make_record(case, name, "wrong", reason=problem, error=error)
        step = workload.step(forward)

        def reset():
            workload.clear_grads(module)

        timing, peak = measure(step, reset, device, settings)
    return make_record(case, name, "ok", timing=timing, peak=peak, error=error)


def run_case(job, device, settings, requested_impls, progress):
    case = job.case
    try:
        workload = Workload(case, device)
        oracle = _oracle(workload)
    except Exception as error:  # noqa: BLE001 - a case that cannot be set up must not end the run
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reason = f"setting up the case failed: {_short(error)}"
        return [make_record(case, name, "error", reason=reason) for name in job.impls]
    records = []
    for name in job.impls:
        progress.show(name)
        reason = implementations.skip_reason(name, case, device, name in requested_impls)
        if reason is not None:
            records.append(make_record(case, name, "skipped", reason=reason))
            continue
        if name == BASELINE and oracle.baseline_failure is not None:
            records.append(make_record(case, name, "error", reason=oracle.baseline_failure))
            continue
        try:
            record = _run_impl(name, case, workload, oracle, device, settings)
        except BackendUnavailableError as error:
            record = make_record(case, name, "skipped", reason=str(error))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            record = make_record(case, name, "error", reason="out of GPU memory")
        except Exception as error:  # noqa: BLE001 - one implementation's failure must not end the run
            record = make_record(case, name, "error", reason=_short(error))
        if oracle.checked_against != BASELINE and name != BASELINE:
            record["reason"] = "; ".join(filter(None, [
                record["reason"], "torch.nn failed: checked against the reference backend"]))
        records.append(record)
    return records


def plan_jobs(cases, impl_names, compile_cases):
    """Every case with every implementation but the compiled one; then the
    compile jobs, last, because one compile can take minutes."""
    main = [name for name in impl_names if name != COMPILED]
    jobs = [Job(case, main) for case in cases if main]
    if COMPILED in impl_names:
        jobs += [Job(case, [COMPILED]) for case in compile_cases]
    return jobs


def run_jobs(jobs, outcome, device, settings, requested_impls, progress, deadline=None, on_progress=None):
    """Runs the jobs in order until done or past `deadline` (time.monotonic()),
    filling `outcome`, which the caller holds: after an interrupt it still
    has every record measured so far."""
    try:
        for job in jobs:
            left = None if deadline is None else deadline - time.monotonic()
            needed = COMPILE_RESERVE_S if COMPILED in job.impls else 0
            if left is not None and left <= needed:
                outcome.stopped_early = True
                break
            progress.start_case(job.case.label() + (" (torch.compile)" if COMPILED in job.impls else ""))
            outcome.records += run_case(job, device, settings, requested_impls, progress)
            outcome.jobs_done += 1
            progress.end_case()
            if on_progress is not None:
                on_progress(outcome)
    finally:
        progress.finish()
