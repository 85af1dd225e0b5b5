"""Drive compile_worker.py under triton 3.9 (this environment's) and 3.6 (the
GPU machines'), in parallel, and judge what it reports: the GPU compile gate
of tests/test_gpu_compile.py, and the cache warm-up of scripts/gpu_run.sh.

triton 3.6 runs in a subprocess with only itself on its path (`python -S`
with PYTHONPATH set to a `pip install --target` folder): the kernel files
import nothing else.
"""

import json
import os
import subprocess
import sys
import tempfile

TRITON36_VERSION = "3.6.0"
CACHE_ROOT = os.environ.get("RNNKERNELS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rnnkernels"))
from . import ptx_lint

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compile_worker.py")


def triton36_dir(install=True, timeout=600):
    """(folder holding triton 3.6 alone, None) or (None, why not), installing it
    there on first use with pip (RNNKERNELS_TRITON36_DIR names an existing one)."""
    folder = os.environ.get("RNNKERNELS_TRITON36_DIR") or os.path.join(CACHE_ROOT, f"triton-{TRITON36_VERSION}")
    if os.path.exists(os.path.join(folder, "triton", "__init__.py")):
        return folder, None
    if not install:
        return None, f"triton {TRITON36_VERSION} is not installed in {folder}"
    partial = folder + ".partial"
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--no-deps",
               "--target", partial, f"triton=={TRITON36_VERSION}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"could not install triton {TRITON36_VERSION} with pip: {error}"
    if done.returncode != 0:
        return None, f"could not install triton {TRITON36_VERSION} with pip: {done.stderr.strip()[-500:]}"
    os.replace(partial, folder)
    return folder, None


def worker_command(version):
    """(argv prefix, environment) that runs compile_worker.py under triton `version`: "3.6"
    (see triton36_dir), or anything else for this environment's triton."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if version == "3.6":
        folder, reason = triton36_dir()
        if folder is None:
            raise RuntimeError(reason)
        env["PYTHONPATH"] = folder
        return [sys.executable, "-S", WORKER], env
    env.pop("PYTHONPATH", None)
    return [sys.executable, WORKER], env


def compile_all(jobs, cache_dir, timeout=900):
    """jobs: {name: (triton version, specs, archs)}, run at once, one process
    each. Returns {name: results (compile_worker.py) or an error string}."""
    os.makedirs(cache_dir, exist_ok=True)
    running = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, specs, archs) in jobs.items():
            try:
                prefix, env = worker_command(version)
            except RuntimeError as error:
                running[name] = str(error)
                continue
            env["TRITON_CACHE_DIR"] = cache_dir
            spec_file, result_file = os.path.join(tmp, f"{name}.specs.json"), os.path.join(tmp, f"{name}.json")
            with open(spec_file, "w") as f:
                json.dump(specs, f)
            command = prefix + [spec_file, result_file] + [f"--arch={a}" for a in archs]
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running[name] = (process, result_file)
        outcome = {}
        for name, job in running.items():
            if isinstance(job, str):
                outcome[name] = job
                continue
            process, result_file = job
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
                output = f"timed out after {timeout}s\n{output}"
            if process.returncode == 0 and os.path.exists(result_file):
                with open(result_file) as f:
                    outcome[name] = json.load(f)
            else:
                outcome[name] = f"compile worker failed (exit {process.returncode}):\n{output[-3000:]}"
    return outcome


def findings(specs, results):
    """What fails the gate, one line each: a compile error, a spill (stack or
    local memory, LDL/STL in SASS), shared memory over the arch's limit."""
    found = []
    for r in results:
        spec = specs[r["index"]]
        where = f"{spec['kernel']} {describe(spec)} sm_{r['arch']} triton {r['triton']}"
        if "error" in r:
            found.append(f"{where}: compile error: {r['error'][-600:]}")
            continue
        if r["stack"] or r["local"] or r["local_ops"]:
            found.append(f"{where}: spills ({r['regs']} registers, STACK {r['stack']} B, LOCAL {r['local']} B, "
                         f"{r['local_ops']} LDL/STL)")
        if r["shared_limit"] is not None and r["shared"] > r["shared_limit"]:
            found.append(f"{where}: {r['shared']} B of shared memory, over the limit of {r['shared_limit']} B")
        if "lint" in r:
            found.extend(f"{where}: {problem}" for problem in ptx_lint.findings(r["lint"], _tensor_cores(spec)))
    return found


def _tensor_cores(spec):
    """Whether spec's products should run on tensor cores: 16-bit inputs, or fp32 in TF32."""
    dtypes = {a["tensor"] for a in spec["args"] if isinstance(a, dict) and "tensor" in a}
    precision = spec["options"].get("PRECISION")
    return bool(dtypes & {"float16", "bfloat16"}) or ("float32" in dtypes and precision == "tf32")


def describe(spec):
    """The options and tensor dtypes of a spec, short."""
    options = ",".join(f"{k}={v['tl_dtype'] if isinstance(v, dict) else v}" for k, v in spec["options"].items())
    dtypes = sorted({a["tensor"] for a in spec["args"] if isinstance(a, dict) and "tensor" in a})
    return f"[{'/'.join(dtypes)}] {options}"
