"""A grid-wide barrier for persistent Triton kernels, bounded in time.

The sync buffer `p_sync` is int32 [SYNC_WORDS], zeroed by the launcher before
each launch (an async fill on the launch stream, graph-capturable):

    p_sync[0]  counter  monotonic: every program adds 1 per barrier, so the
                        barrier of epoch e (1, 2, ...) is complete when it
                        reaches e * num_programs; never reset within a launch
                        (a reset races with late readers of the last epoch)
    p_sync[1]  abort    0, or 1 once a program's wait ran out of time

Memory order: `tl.debug_barrier()` first makes every thread's stores of the
step visible to the program's own arriving thread, the arrive is a release
at GPU scope (publishes them), the spin an acquire at GPU scope (whatever the
other programs published before their arrive is visible after it), and a
last `tl.debug_barrier()` holds the program's threads until the spin is
over. The spin polls with `atomic_add(p, 0, sem="acquire")`, which both
triton 3.6 and 3.9 have (3.9's `tl.atomic_load` is absent from 3.6), and
which a threaded test executor sees as an atomic, so it can hand the turn to
another program while one spins.

Time bound: a cooperative launch guarantees that every program is resident,
so a wait can only outlast its bound when something is wrong (a program
faulted, or passed fewer barriers than the others). With USE_CLOCK the bound
is `limit` nanoseconds of the GPU's global timer (%globaltimer, inline PTX:
compiled only then, because the interpreter runs no inline assembly), so
time slicing of the GPU between processes delays but does not fail a wait
shorter than the bound; without it (the interpreter) the bound is `limit`
polls. A program whose wait runs out sets the abort word; every waiting
program polls it too, so all programs leave their wait through the same
return (False) instead of hanging, and no program traps: the kernel then
poisons what it owns and raises the error flag (persistent.py), and the
launcher reports it (persistent_launch.py).

Every program must call the barrier the same number of times, outside any
branch that differs between programs; a barrier after an abort returns False
at once.
"""

import triton
import triton.language as tl

SYNC_WORDS = 2
# Bounds for `limit`: 2 s of GPU time (a step is microseconds; seconds
# absorb preemption by other processes), and under the interpreter a poll
# count that a threaded executor, handing the turn to a random program at
# every atomic, exceeds only with vanishing probability.
TIMEOUT_NS = 2_000_000_000
INTERPRETER_POLLS = 200_000


@triton.jit
def global_timer_ns():
    """The GPU's global nanosecond timer (PTX %globaltimer); GPU compiles only."""
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False,
                                     pack=1)


@triton.jit
def grid_barrier(p_sync, epoch, num_programs, limit, USE_CLOCK: tl.constexpr):
    """Wait until all num_programs programs have arrived at barrier `epoch`
    (1 for the first barrier of a launch, then 2, 3, ...).

    p_sync: int32 [counter, abort] (module docstring); limit: nanoseconds
    with USE_CLOCK, polls without. Returns True when the barrier completed,
    False when this or any program's wait ran out (then every program's
    later barriers return False as well)."""
    tl.debug_barrier()
    tl.atomic_add(p_sync, 1, sem="release", scope="gpu")
    target = epoch * num_programs
    arrived = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
    aborted = tl.atomic_add(p_sync + 1, 0, sem="acquire", scope="gpu")
    if USE_CLOCK:
        start = global_timer_ns()
    polls = 0
    expired = arrived < 0  # False, as a tensor: the loop carries it
    while (arrived < target) & (aborted == 0) & (expired == 0):
        arrived = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
        aborted = tl.atomic_add(p_sync + 1, 0, sem="acquire", scope="gpu")
        if USE_CLOCK:
            expired = global_timer_ns() - start > limit
        else:
            polls += 1
            expired = polls > limit
    completed = (arrived >= target) & (aborted == 0)
    if completed == 0:
        tl.atomic_xchg(p_sync + 1, 1, sem="release", scope="gpu")
    tl.debug_barrier()
    return completed
