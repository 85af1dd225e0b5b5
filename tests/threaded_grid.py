"""A test-only executor for Triton's interpreter: one thread per program, so
kernels whose programs wait on each other (a grid barrier) run on CPU.

Triton's interpreter (TRITON_INTERPRET=1) runs the programs of a grid one
after another, each to completion, so a program spinning until a later one
arrives never ends. Within `threaded_grid(seed=...)` every interpreted launch
runs each program on its own thread instead, under a baton: exactly one program
runs at a time, and at every atomic operation the running program hands the
baton to a live program drawn from a seeded RNG (itself included) before the
atomic takes effect. A spin barrier then completes, and the plain loads and
stores between atomics interleave across programs in an order the seed fixes:
a barrier that lets a program through too early shows up in the data it reads.
The launcher code above the kernel runs unchanged.

What it cannot show: the memory model (one program runs at a time, so every
schedule is sequentially consistent; a relaxed arrive or a missing acquire is
correct here, which is what the compile gate's lint of the PTX is for), and
co-residency.

It replaces triton 3.9's `GridExecutor.__call__` and the interpreter
builder's atomics for the duration of the block; `unsupported_reason()` says
why it cannot run with the installed triton. Never imported by the package.
"""

import contextlib
import ctypes
import inspect
import os
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from packaging.version import Version

try:
    import triton
except ImportError:  # unsupported_reason() says so
    triton = None

# The interpreter whose internals this executor was written against; the
# setup script pins it (scripts/setup_env.sh).
WRITTEN_AGAINST = Version("3.9.0")

# What of triton.runtime.interpreter the executor reaches into.
_INTERPRETER_NAMES = ("GridExecutor", "InterpreterError", "_patch_lang", "_implicit_cvt", "interpreter_builder")
_EXECUTOR_METHODS = ("_init_args_hst", "_restore_args_dev")
_BUILDER_METHODS = ("set_grid_idx", "set_grid_dim", "create_atomic_rmw", "create_atomic_cas")
# Present in 3.9, not in 3.6: wrapped when present.
_OPTIONAL_BUILDER_METHODS = ("create_atomic_load", "create_atomic_store", "create_atomic_poll")
# Atomic read-modify-writes that change nothing when their operand is zero:
# the spin idiom `atomic_add(p, 0)` is a read, not an update.
_NEUTRAL_WITH_ZERO = ("ADD", "FADD", "OR", "XOR")


def unsupported_reason():
    """None when the executor can run here, else why not (for a pytest skip)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return "the threaded grid executor needs Triton's interpreter (TRITON_INTERPRET=1)"
    if triton is None:
        return "triton is not installed"
    from triton.runtime import interpreter
    version = Version(triton.__version__)
    if version.release[:2] != WRITTEN_AGAINST.release[:2]:
        return (f"the threaded grid executor leans on triton {WRITTEN_AGAINST.major}.{WRITTEN_AGAINST.minor}'s "
                f"interpreter internals; triton {triton.__version__} is installed")
    missing = [name for name in _INTERPRETER_NAMES if not hasattr(interpreter, name)]
    if not missing:
        missing += [f"GridExecutor.{name}" for name in _EXECUTOR_METHODS
                    if not hasattr(interpreter.GridExecutor, name)]
        missing += [f"InterpreterBuilder.{name}" for name in _BUILDER_METHODS
                    if not hasattr(interpreter.interpreter_builder, name)]
    if missing:
        return f"triton {triton.__version__}'s interpreter lacks {', '.join(missing)}"
    return None


class GridStalled(AssertionError):
    """A threaded launch made no end within its bound: every live program kept
    spinning (a barrier that never fills), or one ran without any atomic for
    longer than the wall-clock bound."""


class _Aborted(BaseException):
    """Unwinds a program's thread when the launch is abandoned; a BaseException
    so that no `except Exception` in the code under test swallows it."""


@dataclass
class AtomicUpdate:
    """One element of an atomic that may change memory (a read-modify-write
    other than an add of zero, a compare-and-swap, an atomic store)."""
    op: str  # 'ADD', 'XCHG', 'CAS', 'STORE', ...
    sem: str  # 'RELEASE', 'ACQUIRE', 'ACQUIRE_RELEASE', 'RELAXED'
    address: int
    value: object


@dataclass
class ProgramTrace:
    """What one program of a threaded launch did, for the tests to check."""
    index: tuple  # (x, y, z) program id
    atomics: int = 0  # every atomic it executed, spins included
    updates: list = field(default_factory=list)  # its AtomicUpdates, in order
    finished: bool = False

    def arrivals(self, address=None):
        """Atomic adds of a positive amount (barrier arrivals), at `address`
        or anywhere."""
        return sum(1 for u in self.updates
                   if u.op == "ADD" and u.value > 0 and (address is None or u.address == address))


@dataclass
class LaunchTrace:
    kernel: str
    grid: tuple  # (nx, ny, nz)
    threaded: bool  # False for a kernel outside `kernels=`: it ran the stock way
    withheld: tuple = ()  # linear program ids that never ran
    late: tuple = ()  # linear program ids that started only once every other program had finished
    programs: dict = field(default_factory=dict)  # linear program id -> ProgramTrace
    baton_passes: int = 0
    # the kernel's arguments by parameter name, as the programs saw them (tensors share the caller's memory)
    arguments: dict = field(default_factory=dict)


class ThreadedGrid:
    """The executor's settings and the record of its launches (see `threaded_grid`)."""

    def __init__(self, seed, max_baton_passes=100_000, withhold=(), run_late=(), kernels=None,
                 wall_timeout_s=300.0):
        self.seed = seed
        self.max_baton_passes = max_baton_passes
        self.withhold = tuple(withhold)
        self.run_late = tuple(run_late)
        self.kernels = None if kernels is None else tuple(kernels)
        self.wall_timeout_s = wall_timeout_s
        self.rng = random.Random(seed)
        self.launches = []
        self.active = None  # the _GridRun in progress, if any

    def takes(self, fn):
        return self.kernels is None or fn.__name__ in self.kernels

    def launches_of(self, kernel):
        return [launch for launch in self.launches if launch.kernel == kernel]


class _GridRun:
    """One threaded launch: the programs' threads and the baton between them."""

    def __init__(self, grid_executor, fn, args, grid, trace):
        self.executor = grid_executor
        self.fn = fn
        self.args = args
        self.trace = trace
        self.rng = grid_executor.rng
        nx, ny, nz = grid
        self.index = {x + nx * (y + ny * z): (x, y, z) for z in range(nz) for y in range(ny) for x in range(nx)}
        running = [pid for pid in sorted(self.index) if pid not in grid_executor.withhold]
        self.live = [pid for pid in running if pid not in grid_executor.run_late]
        self.late = [pid for pid in running if pid in grid_executor.run_late]
        trace.withheld = tuple(pid for pid in sorted(self.index) if pid in grid_executor.withhold)
        trace.late = tuple(self.late)
        trace.programs = {pid: ProgramTrace(self.index[pid]) for pid in running}
        self.batons = {pid: threading.Semaphore(0) for pid in running}
        self.holder = None
        self.aborted = False
        self.failure = None
        self.stall = None
        self.done = threading.Event()

    def run(self):
        threads = {pid: threading.Thread(target=self._program, args=(pid,), name=f"triton-program-{pid}", daemon=True)
                   for pid in self.trace.programs}
        for thread in threads.values():
            thread.start()
        self._admit_late()
        if self.live:
            self.batons[self.rng.choice(self.live)].release()
            if not self.done.wait(self.executor.wall_timeout_s):
                self.stall = (f"program {self.holder} ran for {self.executor.wall_timeout_s:g} s without an atomic "
                              "(a spin on a plain load never hands the baton on)")
                self._abort()
                _raise_in_thread(threads[self.holder], _Aborted)
        for thread in threads.values():
            thread.join(timeout=10.0)
        if self.failure is not None:
            raise self.failure
        if self.stall is not None:
            raise GridStalled(self._describe(self.stall))

    def _describe(self, what):
        trace = self.trace
        return (f"threaded_grid(seed={self.executor.seed}): {trace.kernel}[grid={trace.grid}] did not finish: {what}; "
                f"live programs {self.live}, withheld {list(trace.withheld)}, late {list(trace.late)}, finished "
                f"{[pid for pid, p in trace.programs.items() if p.finished]}, {trace.baton_passes} baton passes")

    def _program(self, pid):
        try:
            self._take(pid)
            self.fn(**self.args)
        except _Aborted:
            return
        except BaseException as error:  # noqa: B036 - handed to the launching thread, which re-raises it
            if self.failure is None:
                self.failure = error
            self._abort()
            return
        self.trace.programs[pid].finished = True
        self.live.remove(pid)
        self._admit_late()
        if self.live:
            self.batons[self.rng.choice(self.live)].release()
        else:
            self.done.set()

    def _admit_late(self):
        """Once no other program is left, the late ones become live (as a
        program that was not resident starts when the others have exited)."""
        if not self.live and self.late:
            self.live, self.late = self.late, []

    def _take(self, pid):
        self.batons[pid].acquire()
        if self.aborted:
            raise _Aborted
        self.holder = pid
        # The one piece of per-program state of the interpreter: what
        # tl.program_id returns.
        _interpreter().interpreter_builder.set_grid_idx(*self.index[pid])

    def pass_baton(self):
        """Called by the running program at each atomic, before it takes effect."""
        pid = self.holder
        self.trace.programs[pid].atomics += 1
        self.trace.baton_passes += 1
        if self.trace.baton_passes > self.executor.max_baton_passes:
            self.stall = (f"no end within max_baton_passes={self.executor.max_baton_passes}: every live program "
                          "is spinning (or the kernel needs a larger bound)")
            self._abort()
            raise _Aborted
        successor = self.rng.choice(self.live)
        if successor != pid:
            self.batons[successor].release()
            self._take(pid)

    def record(self, op, sem, pointers, values, mask=None):
        """Appends the atomic's updates, element by element, to the running program's trace."""
        shape = np.shape(pointers)
        pointers = np.asarray(pointers).reshape(-1)
        values = np.broadcast_to(np.asarray(values), shape).reshape(-1)
        if mask is not None:
            keep = np.broadcast_to(np.asarray(mask), shape).reshape(-1)
            pointers, values = pointers[keep], values[keep]
        updates = self.trace.programs[self.holder].updates
        for address, value in zip(pointers.tolist(), values.tolist()):
            if op in _NEUTRAL_WITH_ZERO and value == 0:
                continue
            updates.append(AtomicUpdate(op, sem, int(address), value))

    def _abort(self):
        self.aborted = True
        for baton in self.batons.values():
            baton.release()
        self.done.set()


def _raise_in_thread(thread, exception_class):
    """Makes `thread` raise `exception_class` at its next Python instruction:
    the only way to stop a program that spins without ever reaching an atomic
    (left running, it would spin on after the interpreter is restored)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exception_class))


def _interpreter():
    from triton.runtime import interpreter
    return interpreter


def _threaded_call(grid_executor, stock_call):
    """A replacement for GridExecutor.__call__: the stock one's argument
    handling, then the grid on threads."""
    interpreter = _interpreter()

    def call(self, *args_dev, **kwargs):
        if not grid_executor.takes(self.fn):
            grid_executor.launches.append(LaunchTrace(self.fn.__name__, (), threaded=False))
            return stock_call(self, *args_dev, **kwargs)
        argspec = inspect.getfullargspec(self.fn)
        kwargs = {k: v for k, v in kwargs.items() if k in argspec.args or k in argspec.kwonlyargs}
        args_hst, kwargs_hst = self._init_args_hst(args_dev, kwargs)
        for hook in self.pre_run_hooks:
            hook(*args_hst, **kwargs_hst)
        patch_scope = interpreter._patch_lang(self.fn)
        try:
            arguments = inspect.getcallargs(self.fn, *args_hst, **kwargs_hst)
            args = {name: arg if name in self.constexprs else interpreter._implicit_cvt(arg)
                    for name, arg in arguments.items()}
            grid = self.grid(args) if callable(self.grid) else self.grid
            grid = tuple(int(g) for g in grid) + (1, ) * (3 - len(grid))
            interpreter.interpreter_builder.set_grid_dim(*grid)
            trace = LaunchTrace(self.fn.__name__, grid, threaded=True, arguments=arguments)
            grid_executor.launches.append(trace)
            run = _GridRun(grid_executor, self.fn, args, grid, trace)
            grid_executor.active = run
            try:
                run.run()
            except GridStalled:
                raise
            except Exception as error:
                raise interpreter.InterpreterError(repr(error)) from error
            finally:
                grid_executor.active = None
        finally:
            patch_scope.restore()
        self._restore_args_dev(args_dev, args_hst, kwargs, kwargs_hst)

    return call


def _sem_name(sem):
    return getattr(sem, "name", str(sem))


def _wrapped_atomics(grid_executor, builder):
    """Replacements for the builder's atomics: hand the baton on first, then
    do the atomic and record it. Outside a threaded launch they are the stock ones."""
    stock = {name: getattr(builder, name) for name in _BUILDER_METHODS[2:] + _OPTIONAL_BUILDER_METHODS
             if hasattr(builder, name)}

    def rmw(rmw_op, ptr, val, mask, sem, scope):
        run = grid_executor.active
        if run is None:
            return stock["create_atomic_rmw"](rmw_op, ptr, val, mask, sem, scope)
        run.pass_baton()
        result = stock["create_atomic_rmw"](rmw_op, ptr, val, mask, sem, scope)
        run.record(_sem_name(rmw_op), _sem_name(sem), ptr.data, val.data, mask.data)
        return result

    def cas(ptr, cmp, val, sem, scope):
        run = grid_executor.active
        if run is None:
            return stock["create_atomic_cas"](ptr, cmp, val, sem, scope)
        run.pass_baton()
        result = stock["create_atomic_cas"](ptr, cmp, val, sem, scope)
        swapped = np.asarray(result.data) == np.asarray(cmp.data)
        run.record("CAS", _sem_name(sem), ptr.data, val.data, swapped)
        return result

    def load(ptr, mask, sem, scope):
        run = grid_executor.active
        if run is not None:
            run.pass_baton()
        return stock["create_atomic_load"](ptr, mask, sem, scope)

    def store(ptr, val, mask, sem, scope):
        run = grid_executor.active
        if run is None:
            return stock["create_atomic_store"](ptr, val, mask, sem, scope)
        run.pass_baton()
        result = stock["create_atomic_store"](ptr, val, mask, sem, scope)
        run.record("STORE", _sem_name(sem), ptr.data, val.data, mask.data)
        return result

    def poll(ptr, expected, timeout_ns, sem, scope):
        """The stock poll spins inside one call; this one hands the baton on at
        every read, so the value it waits for can be written."""
        run = grid_executor.active
        if run is None:
            return stock["create_atomic_poll"](ptr, expected, timeout_ns, sem, scope)
        start_ns = time.perf_counter_ns()
        matched = np.zeros(ptr.data.shape, dtype=np.bool_)
        for index in np.ndindex(ptr.data.shape):
            element = type(ptr)(np.asarray(ptr.data[index]), ptr.dtype)
            while True:
                run.pass_baton()
                if builder.create_load(element, None, True).data.item() == expected.data[index]:
                    matched[index] = True
                    break
                if timeout_ns is not None and time.perf_counter_ns() - start_ns >= timeout_ns.data.item():
                    break
        return type(ptr)(matched, triton.language.int1)

    replacements = {"create_atomic_rmw": rmw, "create_atomic_cas": cas, "create_atomic_load": load,
                    "create_atomic_store": store, "create_atomic_poll": poll}
    return {name: replacements[name] for name in stock}


@contextlib.contextmanager
def threaded_grid(seed, max_baton_passes=100_000, withhold=(), run_late=(), kernels=None, wall_timeout_s=300.0):
    """Within the block, interpreted Triton launches run one thread per program
    under a baton passed at every atomic (see the module docstring).

    seed: fixes the schedule (the RNG is shared by the block's launches, in order).
    max_baton_passes: per launch; past it the launch raises GridStalled (every
        live program spinning must end in a test failure, not a hang). Larger
        than the kernel's own spin bound when a test wants that bound to fire.
    withhold: linear program ids (x + nx*(y + ny*z)) that never run, as if
        never scheduled: the rest of the grid must cope.
    run_late: linear program ids that start only once every other program
        has finished: a grid that was not co-resident, as a GPU runs it.
    kernels: names of the @triton.jit functions to run threaded; others run
        the stock way (one program after another). None: every launch.
    wall_timeout_s: a program holding the baton this long without an atomic
        ends the launch with GridStalled (its thread is stopped).

    Yields the ThreadedGrid, whose `launches` record each launch's programs
    and their atomic updates. Raises RuntimeError where `unsupported_reason()`
    says it cannot run (tests skip on that reason first).
    """
    reason = unsupported_reason()
    if reason is not None:
        raise RuntimeError(reason)
    interpreter = _interpreter()
    executor = ThreadedGrid(seed, max_baton_passes, withhold, run_late, kernels, wall_timeout_s)
    builder = interpreter.interpreter_builder
    grid_class = interpreter.GridExecutor
    stock_call = grid_class.__call__
    atomics = _wrapped_atomics(executor, builder)
    grid_class.__call__ = _threaded_call(executor, stock_call)
    for name, replacement in atomics.items():
        setattr(builder, name, replacement)
    try:
        yield executor
    finally:
        grid_class.__call__ = stock_call
        for name in atomics:
            delattr(builder, name)
