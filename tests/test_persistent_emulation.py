"""The cuda backend's persistent kernels (csrc/cuda/persistent_forward.cu,
persistent_backward.cu) run on CPU: their own C++ (plan, W and h/dG staging,
MMA fragment loads and stores, K-split partial sums, pointwise steps, grid
barrier with its timeout and abort path), compiled by g++ with only the
inline PTX replaced (tests/persistent_emulator/patch_sources.py). One process
per CTA, one thread per CUDA thread, global memory shared between them;
mma.sync is computed from the PTX ISA's fragment tables, independently of the
kernels' mma_fragments.h (tests/persistent_emulator/emulator.cpp).

Every case: forward then backward against the reference backend in float64,
every output and gradient, the barrier counter (each CTA passes one barrier
per step), no NaN (dynamic shared memory and outputs start as NaN). Planted
faults in the kernels' sources (a wrong accumulator map, a barrier one epoch
early) must be caught. What a CPU cannot show is left to scripts/gpu_run.sh:
the real memory model, timing, and the compiled code's registers.
"""

import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "persistent_emulator"))
import driver  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator is built with g++")

LSTM, GRU, TANH, RELU = "lstm", "gru", "rnn_tanh", "rnn_relu"
F16, BF16, TF32, F32, F64 = (driver.ENGINES[name] for name in ("mma_f16", "mma_bf16", "mma_tf32",
                                                                 "fma_f32", "fma_f64"))


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    return driver.build(str(tmp_path_factory.mktemp("persistent_emulator")))


def _assert_within(errors, what):
    assert "refused" not in errors, f"{what}: the plan refused the case: {errors['refused']}"
    bad = {name: e for name, e in errors.items() if not e[0] <= e[1]}
    assert not bad, f"{what}: (error, bound) past the bound: {bad}"


# Each cell with each engine, at shapes whose plan splits H over 3 CTAs with a
# last, shorter slice; lengths (one row empty) and truncated BPTT alternate.
ENGINE_CASES = [(cell, engine) for cell in (LSTM, GRU, TANH, RELU) for engine in (F16, BF16, TF32, F32, F64)]


@pytest.mark.parametrize("cell,engine", ENGINE_CASES,
                         ids=[f"{c}-{n}" for c, e in ENGINE_CASES for n in driver.ENGINES if driver.ENGINES[n] == e])
def test_each_cell_and_engine_matches_the_reference(emulator, cell, engine):
    odd = (engine + len(cell)) % 2 == 1
    errors, fplan, bplan = driver.check_case(emulator, cell, engine, T=3, B=5, H=19, sms=3,
                                             lengths=[3, 1, 0, 2, 3] if odd else None,
                                             tbptt=0 if odd else 2, seed=engine)
    _assert_within(errors, f"{cell} engine {engine}")
    assert fplan["ctas"] == bplan["ctas"] == "3"


# Plans past the simple one: K split across warps (partial sums), K staged in
# double-buffered chunks, tensor-core tiles with at most 8 real rows (half
# fragments), several units per CTA and one CTA per unit.
PLAN_CASES = {
    "k_splits": dict(cell=LSTM, engine=BF16, T=3, B=4, H=64, sms=4, max_shared=20000,
                     expect=dict(fwd={"k_splits": "2"}, bwd={"k_splits": "8"})),
    "chunks_gru_bf16": dict(cell=GRU, engine=BF16, T=2, B=64, H=256, sms=16, max_shared=100000, tbptt=1,
                            expect=dict(bwd={"chunks": "3"})),
    "chunks_lstm_tf32": dict(cell=LSTM, engine=TF32, T=2, B=32, H=256, sms=16, max_shared=140000,
                             expect=dict(bwd={"chunks": "4", "k_splits": "2"})),
    "half_rows": dict(cell=TANH, engine=F16, T=3, B=2, H=16, sms=4, expect=dict(fwd={"half_rows": "1"})),
    "one_unit_per_cta": dict(cell=GRU, engine=F32, T=3, B=9, H=6, sms=6, lengths=[3, 3, 2, 2, 1, 1, 0, 3, 1],
                             expect=dict(fwd={"units": "1", "ctas": "6"})),
}


@pytest.mark.parametrize("name", PLAN_CASES)
def test_plans_past_the_simple_one(emulator, name):
    case = dict(PLAN_CASES[name])
    expect = case.pop("expect")
    cell, engine = case.pop("cell"), case.pop("engine")
    errors, fplan, bplan = driver.check_case(emulator, cell, engine, **case)
    _assert_within(errors, name)
    for direction, plan in (("fwd", fplan), ("bwd", bplan)):
        for key, value in expect.get(direction, {}).items():
            assert plan[key] == value, f"{name}: the {direction} plan has {key}={plan[key]}, the case needs {value}"


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_a_late_cta_is_waited_for(emulator, backward):
    """A CTA that starts its second step 300 ms late (preempted, or not yet
    resident): the others wait at the barrier, and the results are exact."""
    stall = {"stall_cta": 1, "stall_sync": 3, "stall_ms": 300}
    errors, _, _ = driver.check_case(emulator, LSTM, F32, T=3, B=5, H=19, sms=3,
                                     fwd_extra=None if backward else stall, bwd_extra=stall if backward else None)
    _assert_within(errors, "a late CTA")


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_a_cta_past_the_spin_limit_aborts_cleanly(emulator, backward):
    """A CTA stalled past the barrier's spin limit: the launch ends (no hang,
    no trap), the error flag holds the direction's code, every output is NaN."""
    report = driver.check_abort(emulator, GRU, BF16, T=3, B=5, H=19, sms=3, backward=backward,
                                stall_cta=2, stall_sync=3, spin_ms=200, stall_ms=1200)
    assert report["abort_word"] == "1"


# ------------------------------------------------------------ planted faults
# Accumulator rows 0-7 and 8-15 of each tile swapped in the kernels' own map.
WRONG_ACCUMULATOR_MAP = ("cuda/mma_fragments.h",
                         "* out_pitch + m_base + in_tile.row;", "* out_pitch + m_base + (in_tile.row ^ 8);")
# Each barrier waits for one epoch fewer than it should: the first one passes
# at once, before the other CTAs have written their slice of h (dG).
EARLY_BARRIERS = [("cuda/persistent_forward.cu", "static_cast<unsigned long long>(t + 1)",
                   "static_cast<unsigned long long>(t)"),
                  ("cuda/persistent_backward.cu", "static_cast<unsigned long long>(p.steps - t)",
                   "static_cast<unsigned long long>(p.steps - t - 1)")]


def test_a_wrong_accumulator_map_is_caught(tmp_path):
    binary = driver.build(str(tmp_path), [WRONG_ACCUMULATOR_MAP])
    errors, _, _ = driver.check_case(binary, LSTM, BF16, T=3, B=5, H=19, sms=3)
    assert any(error > bound for error, bound in errors.values()), \
        f"the planted accumulator map went unnoticed: {errors}"


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_a_barrier_one_epoch_early_is_caught(tmp_path, backward):
    """With a late CTA, an early barrier lets the others read its slice before
    it is written: NaN (the buffers start as NaN) or wrong values."""
    binary = driver.build(str(tmp_path), [EARLY_BARRIERS[backward]])
    stall = {"stall_cta": 1, "stall_sync": 3, "stall_ms": 300}
    try:
        errors, _, _ = driver.check_case(binary, LSTM, F32, T=3, B=5, H=19, sms=3,
                                         fwd_extra=None if backward else stall,
                                         bwd_extra=stall if backward else None)
    except driver.EmulationError:
        return
    assert any(error > bound for error, bound in errors.values()), \
        f"the planted early barrier went unnoticed: {errors}"
