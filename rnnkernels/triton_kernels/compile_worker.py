"""Compile recorded launches (record.py) for a GPU target on a machine without
one, and report each cubin's registers, spills and shared memory.

Run as a script, by path, under any triton with nothing else on its path (no
torch: the kernel files import only triton):

    python compile_worker.py SPECS.json RESULTS.json --arch 90 --arch 80

With a driver whose target is GPUTarget("cuda", arch, 32) set active,
`kernel.warmup(*args, grid=..., **options)` compiles exactly the variant and
cache key a launch of these arguments would on that GPU, so the same run also
fills TRITON_CACHE_DIR for a GPU machine. Tensors are stand-ins with a dtype
and an address of the recorded alignment.

Each result: the spec's index, arch, triton version, and either "error" or
registers, "stack" and "local" bytes (cuobjdump --dump-resource-usage), the
count of LDL/STL instructions in the SASS, "shared" bytes and the arch's limit,
"cache_hit" (TRITON_CACHE_DIR held the kernel already), and for the
persistent kernels "lint" (ptx_lint.py's facts of the PTX).
"""

import argparse
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import warnings

# Kernels whose PTX ptx_lint.py checks (the barrier's memory order, weights kept
# out of the time loop); the weight pointers are the arguments named p_w, p_w_hr.
LINTED = ("forward_persistent_kernel", "backward_persistent_kernel", "barrier_floor_kernel",
          "barrier_fault_kernel")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Opt-in shared memory per block (bytes): sm_80 (A100) 163 KB, sm_90 (H100/H200) 227 KB.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}


class TargetDriver:
    """The least of a triton driver that compiling (not launching) asks for."""

    def __init__(self, arch):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        # the JIT keeps its target per device: one device per arch, or a second
        # arch would reuse the first one's
        return self.target.arch

    def get_current_stream(self, device=None):
        return 0

    def is_active(self):
        return True


class _DType:
    """Prints as torch's dtype does, which is all triton reads of it. One
    object per name, kept alive: triton caches what it makes of a dtype by
    the object, so a freed one whose address is reused would read as another."""

    _interned = {}

    def __new__(cls, name):
        if name not in cls._interned:
            dtype = super().__new__(cls)
            dtype.name = name
            cls._interned[name] = dtype
        return cls._interned[name]

    def __str__(self):
        return f"torch.{self.name}"

    __repr__ = __str__


class StandInTensor:
    """A pointer argument: triton reads dtype and data_ptr() only."""

    _ITEMSIZE = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "float16": 2, "bfloat16": 2}

    def __init__(self, dtype, align16):
        self.dtype = _DType(dtype)
        self._address = (1 << 20) + (0 if align16 else self._ITEMSIZE.get(dtype, 1))

    def data_ptr(self):
        return self._address


def import_kernels():
    """forward.py, backward.py and persistent.py under their package names (same cache keys
    as in rnnkernels), without running rnnkernels/__init__.py (it needs torch)."""
    if "rnnkernels" not in sys.modules:
        package = types.ModuleType("rnnkernels")
        package.__path__ = [os.path.join(ROOT, "rnnkernels")]
        sys.modules["rnnkernels"] = package
    return {key: importlib.import_module(f"rnnkernels.triton_kernels.{key}")
            for key in ("forward", "backward", "persistent")}


def _module(modules, key):
    """One of import_kernels()'s modules, or a kernel file given by its path (from ROOT)."""
    if key not in modules:
        spec = importlib.util.spec_from_file_location(f"_gate_{len(modules)}", os.path.join(ROOT, key))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[key] = module
    return modules[key]


def _value(arg):
    if isinstance(arg, dict) and "tensor" in arg:
        return StandInTensor(arg["tensor"], arg["align16"])
    if isinstance(arg, dict) and "float" in arg:
        return arg["float"]
    return arg


def _option(value):
    if isinstance(value, dict) and "tl_dtype" in value:
        import triton.language as tl

        return getattr(tl, value["tl_dtype"])
    return value


def _cuobjdump():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def resource_usage(cubin):
    """(registers, stack bytes, local bytes, LDL/STL count) of a cubin, from cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
        sass = subprocess.run([_cuobjdump(), "--dump-sass", f.name], capture_output=True, text=True,
                              check=True).stdout
    fields = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}
    local_ops = len(re.findall(r"\b(?:LDL|STL)(?:\.\w+)*\s", sass))
    return fields.get("REG", -1), fields.get("STACK", 0), fields.get("LOCAL", 0), local_ops


def _cache_entries():
    """The entries of TRITON_CACHE_DIR, or None."""
    folder = os.environ.get("TRITON_CACHE_DIR")
    return set(os.listdir(folder)) if folder and os.path.isdir(folder) else None


def _was_cached(before, compiled):
    """Whether `compiled` came from the cache: no entry made since `before`
    holds its metadata (another process may add entries meanwhile)."""
    if before is None:
        return False
    folder = os.environ["TRITON_CACHE_DIR"]
    for entry in _cache_entries() - before:
        path = os.path.join(folder, entry, f"{compiled.metadata.name}.json")
        if os.path.exists(path):
            with open(path) as f:
                if json.load(f).get("hash") == compiled.metadata.hash:
                    return False
    return True


def compile_spec(modules, spec, arch):
    import triton
    from triton.runtime import driver

    result = {"arch": arch, "triton": triton.__version__}
    began = time.time()
    entries = _cache_entries()
    driver.set_active(TargetDriver(arch))
    try:
        kernel = getattr(_module(modules, spec["module"]), spec["kernel"])
        options = {k: _option(v) for k, v in spec["options"].items()}
        compiled = kernel.warmup(*[_value(a) for a in spec["args"]], grid=tuple(spec["grid"]), **options)
        regs, stack, local, local_ops = resource_usage(compiled.asm["cubin"])
        if compiled.metadata.target.arch != arch:
            raise RuntimeError(f"compiled for {compiled.metadata.target}, not sm_{arch}")
        result.update(regs=regs, stack=stack, local=local, local_ops=local_ops,
                      shared=compiled.metadata.shared, shared_limit=SHARED_LIMIT.get(arch),
                      cache_hit=_was_cached(entries, compiled))
        if spec["kernel"] in LINTED:
            ptx_lint = importlib.import_module("rnnkernels.triton_kernels.ptx_lint")
            weights = [i for i, name in enumerate(kernel.arg_names) if name in ("p_w", "p_w_hr")]
            result["lint"] = ptx_lint.lint(compiled.asm["ptx"], weights)
    except Exception as error:  # every failure is a finding to report, not a crash of the worker
        causes = [error]
        while causes[-1].__cause__ is not None:
            causes.append(causes[-1].__cause__)
        result["error"] = "\n".join(f"{type(e).__name__}: {e}" for e in causes)[-3000:]
    result["seconds"] = round(time.time() - began, 2)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs")
    parser.add_argument("results")
    parser.add_argument("--arch", type=int, action="append", required=True)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # triton 3.9's FP-fusion notice, once per compile
    with open(args.specs) as f:
        specs = json.load(f)
    modules = import_kernels()
    results = []
    for index, spec in enumerate(specs):
        for arch in spec.get("archs", args.arch):
            # named first: a compiler that aborts the process leaves this as its last line
            print(f"compiling spec {index} ({spec['kernel']}) for sm_{arch}", flush=True)
            results.append(dict(compile_spec(modules, spec, arch), index=index))
            with open(args.results, "w") as f:  # rewritten as it goes: a killed run keeps what it did
                json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    # run by path: drop this folder from the path, so only the package names import the kernels
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main())
