"""The cuda backend compiles, checked on machines without a GPU (issue 4's CI
check): nvcc compiles every csrc/cuda/*.cu file for sm_80 and sm_90 with the
flags torch's CUDAExtension uses and warnings as errors, and g++ syntax-checks
the torch glue (csrc/cuda/*.cpp) against torch's headers and the CUDA toolkit's.
ptxas reports each kernel's resources (-Xptxas -v): no spill stores or loads,
no stack frame, static shared memory within 48 KB (the rest is dynamic).

All compilers run at once in one fixture, so the whole check costs about the
slowest file rather than the sum; the glue files are checked as one
translation unit that includes them all, which parses ATen's headers once.

The persistent kernels get a static lint of their PTX and SASS (tests/
cuda_lint.py: release/acquire barrier, no .nc loads, no W-slice loads inside
the time loop, HMMA in the tensor-core instantiations, for sm_80 and sm_90),
a planted-fault check of that lint, and their plans (persistent_plan.h) at
the anchor shapes: they must fit an H100's shared memory, and the analytical
per-step estimate is printed for the first GPU run to check."""

import collections
import glob
import json
import math
import os
import re
import shutil
import subprocess

import pytest
import torch.utils.cpp_extension

import cuda_lint

CSRC = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "csrc"))
CU_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
GLUE_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CSRC, "cuda", "*.cpp")))

NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)



def _cuda_include_dir():
    """The CUDA toolkit's include directory (where cuda_runtime.h is), or None."""
    candidates = [os.environ.get("CUDA_HOME"), torch.utils.cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    if NVCC is not None:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(NVCC))))
    for root in filter(None, candidates):
        if os.path.exists(os.path.join(root, "include", "cuda_runtime.h")):
            return os.path.join(root, "include")
    return None


CUDA_INCLUDE = _cuda_include_dir()
TORCH_INCLUDES = torch.utils.cpp_extension.include_paths()
# The CPU wheel of torch ships c10/cuda without this generated header; it
# only holds build macros that a syntax check does not need.
MISSING_TORCH_CUDA_HEADER = "c10/cuda/impl/cuda_cmake_macros.h"

# As torch.utils.cpp_extension compiles .cu files (COMMON_NVCC_FLAGS, C++20).
NVCC_COMMON_FLAGS = ["-std=c++20", "-O3", "--Werror", "all-warnings", "-Xcompiler", "-Wall",
                     "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                     "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                     "--expt-relaxed-constexpr"]
NVCC_FLAGS = NVCC_COMMON_FLAGS + ["-Xptxas", "-v", "-gencode", "arch=compute_80,code=sm_80",
                                  "-gencode", "arch=compute_90,code=sm_90"]
# setup.py builds for sm_80, sm_90 and the visible GPU's architecture, which
# may be older (a T4 or an RTX 20xx is sm_75, the oldest nvcc 13 targets):
# every file must assemble there too, its sm_80-only instructions (mma.sync,
# cvt to tf32) compiled out. The plan refuses those engines below sm_80.
OLDEST_ARCH = "75"

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


def _glue_command(unit, stub_dir):
    includes = [*TORCH_INCLUDES, CUDA_INCLUDE, stub_dir, CSRC]
    return (["g++", "-std=c++20", "-fsyntax-only", "-Wall", "-Werror"]
            + [f"-I{d}" for d in includes] + [str(unit)])


# One compiled file: nvcc's (or g++'s) return code and output, the folder
# nvcc -keep left its per-arch PTX in, and the object file.
Compiled = collections.namedtuple("Compiled", "code output keep_dir object_file")


@pytest.fixture(scope="module")
def compile_results(tmp_path_factory):
    """{file name: Compiled} for every file checked here."""
    if NVCC is None:
        return {}
    tmp = tmp_path_factory.mktemp("cuda_compile")
    stub = tmp / "stub"
    torch_has_header = any(os.path.exists(os.path.join(d, MISSING_TORCH_CUDA_HEADER))
                           for d in TORCH_INCLUDES)
    if not torch_has_header:
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / MISSING_TORCH_CUDA_HEADER).write_text("#pragma once\n")
    keep = {name: tmp / f"{name}.keep" for name in CU_FILES}
    for folder in keep.values():
        folder.mkdir()
    commands = {name: [NVCC, *NVCC_FLAGS, "-I", CSRC, "-keep", "-keep-dir", str(keep[name]), "-c",
                       os.path.join(CSRC, "cuda", name), "-o", str(tmp / f"{name}.o")]
                for name in CU_FILES}
    commands.update({f"{name}@sm_{OLDEST_ARCH}": [
        NVCC, *NVCC_COMMON_FLAGS, "-gencode", f"arch=compute_{OLDEST_ARCH},code=sm_{OLDEST_ARCH}",
        "-I", CSRC, "-c", os.path.join(CSRC, "cuda", name), "-o", str(tmp / f"{name}.sm_{OLDEST_ARCH}.o")]
        for name in CU_FILES})
    if shutil.which("g++") and CUDA_INCLUDE is not None:
        unit = tmp / "all_glue.cpp"
        unit.write_text("".join(f'#include "cuda/{name}"\n' for name in GLUE_FILES))
        commands["glue"] = _glue_command(unit, str(stub))
    running = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name, cmd in commands.items()}
    return {name: Compiled(proc.wait(timeout=600), proc.stdout.read(), str(keep.get(name, "")),
                           str(tmp / f"{name}.o")) for name, proc in running.items()}


def test_every_cuda_source_is_checked():
    assert CU_FILES, "no .cu files under csrc/cuda"
    assert GLUE_FILES, "no glue .cpp files under csrc/cuda"


@needs_nvcc
@pytest.mark.parametrize("name", CU_FILES)
def test_kernel_compiles_for_sm80_and_sm90(name, compile_results):
    code, output = compile_results[name][:2]
    assert code == 0, f"nvcc failed on csrc/cuda/{name}:\n{output}"


@needs_nvcc
@pytest.mark.parametrize("name", CU_FILES)
def test_kernel_assembles_for_the_oldest_arch(name, compile_results):
    code, output = compile_results[f"{name}@sm_{OLDEST_ARCH}"][:2]
    assert code == 0, f"nvcc failed on csrc/cuda/{name} for sm_{OLDEST_ARCH}:\n{output}"


# ptxas -v, per kernel and arch: "Compiling entry function 'NAME' for 'sm_90'", then
# "N bytes stack frame, N bytes spill stores, N bytes spill loads" and "Used N registers, ... N bytes smem".
_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
STATIC_SHARED_LIMIT = 48 * 1024


def ptxas_resources(output):
    """[(kernel, arch, stack, spill stores, spill loads, registers, static smem)] from ptxas -v."""
    found, current, frame = [], None, (0, 0, 0)
    for line in output.splitlines():
        if m := _ENTRY.search(line):
            current, frame = (m.group(1), m.group(2)), (0, 0, 0)
        elif (m := _FRAME.search(line)) and current:
            frame = tuple(int(g) for g in m.groups())
        elif (m := _USED.search(line)) and current:
            smem = re.search(r"(\d+) bytes smem", line)
            found.append((*current, *frame, int(m.group(1)), int(smem.group(1)) if smem else 0))
            current = None
    return found


@needs_nvcc
@pytest.mark.parametrize("name", CU_FILES)
def test_kernels_do_not_spill(name, compile_results):
    code, output = compile_results[name][:2]
    assert code == 0, f"nvcc failed on csrc/cuda/{name}:\n{output}"
    resources = ptxas_resources(output)
    assert resources, f"no ptxas -v report for csrc/cuda/{name}:\n{output[-2000:]}"
    bad = [r for r in resources if r[2] or r[3] or r[4] or r[6] > STATIC_SHARED_LIMIT]
    assert not bad, (f"csrc/cuda/{name}: (kernel, arch, stack frame, spill stores, spill loads, registers, "
                     f"static smem) over the limits:\n" + "\n".join(map(str, bad)))


@needs_nvcc
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.skipif(CUDA_INCLUDE is None, reason="the CUDA toolkit's headers were not found")
def test_glue_compiles_against_torch_and_cuda_headers(compile_results):
    code, output = compile_results["glue"][:2]
    assert code == 0, f"g++ -fsyntax-only failed on csrc/cuda/{{{', '.join(GLUE_FILES)}}}:\n{output}"


@needs_nvcc
def test_kernels_include_no_torch_headers():
    """DESIGN.md: .cu files (and what they include) take plain structs; the CPU
    wheel's CUDA headers are incomplete, so torch headers stay in the glue."""
    device_side = CU_FILES + [os.path.basename(p) for p in glob.glob(os.path.join(CSRC, "cuda", "*.cuh"))]
    device_side += ["params.h", "barrier_floor.h"]
    for name in device_side:
        text = open(os.path.join(CSRC, "cuda", name)).read()
        for forbidden in ("<torch/", "<ATen/", "<c10/"):
            assert forbidden not in text, f"csrc/cuda/{name} includes a torch header ({forbidden})"


# ------------------------------------------------ persistent kernels: lint
PERSISTENT_FILES = ["persistent_forward.cu", "persistent_backward.cu"]
ARCHS = ["80", "90"]
# 4 cells x 5 engines (persistent_plan.h) per file and arch.
PERSISTENT_KERNELS_PER_FILE = 20


def _cuobjdump():
    import triton  # bundles cuobjdump (the compile gate uses the same)

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm_{a}")
@pytest.mark.parametrize("name", PERSISTENT_FILES)
def test_persistent_kernels_pass_the_lint(name, arch, compile_results):
    compiled = compile_results[name]
    assert compiled.code == 0, f"nvcc failed on csrc/cuda/{name}:\n{compiled.output}"
    ptx_path = os.path.join(compiled.keep_dir, f"{name[:-3]}.compute_{arch}.ptx")
    entries = {k: v for k, v in cuda_lint.ptx_entries(open(ptx_path).read()).items()
               if "persistent_" in k and "_kernel" in k}
    assert len(entries) == PERSISTENT_KERNELS_PER_FILE, sorted(entries)
    problems = {}
    for kernel, lines in entries.items():
        findings, report = cuda_lint.lint_persistent_entry(lines)
        if findings:
            problems[kernel] = findings
        # Per step: h/dG staged with 16-byte L2 loads, a few scalar loads per element.
        assert report["cg_vector_loads"] > 0, kernel
    assert not problems, json.dumps(problems, indent=1)


@needs_nvcc
@pytest.mark.parametrize("name", PERSISTENT_FILES)
def test_tensor_core_instantiations_use_hmma(name, compile_results):
    compiled = compile_results[name]
    assert compiled.code == 0, f"nvcc failed on csrc/cuda/{name}:\n{compiled.output}"
    sass = subprocess.run([_cuobjdump(), "-sass", compiled.object_file], capture_output=True,
                          text=True, timeout=300)
    assert sass.returncode == 0, sass.stderr
    per_arch = re.split(r"code for (sm_\d+)", sass.stdout)
    arch_sass = {per_arch[i]: per_arch[i + 1] for i in range(1, len(per_arch) - 1, 2)}
    assert set(arch_sass) >= {"sm_80", "sm_90"}, sorted(arch_sass)
    for arch in ("sm_80", "sm_90"):
        functions = {k: v for k, v in cuda_lint.sass_functions(arch_sass[arch]).items()
                     if cuda_lint.engine_of(k)}
        assert len(functions) == PERSISTENT_KERNELS_PER_FILE, (arch, sorted(functions))
        for kernel, code in functions.items():
            uses_hmma = "HMMA" in code
            if cuda_lint.engine_of(kernel).startswith("mma_"):
                assert uses_hmma, f"{arch} {kernel}: a tensor-core instantiation without HMMA"
            else:
                assert not uses_hmma, f"{arch} {kernel}: a CUDA-core instantiation with HMMA"
            assert not re.search(r"\b(LDL|STL)\b", code), f"{arch} {kernel}: local memory (spill)"


# Kernels with one planted fault each; the lint must name it.
PLANTED = r"""
#include "cuda/grid_barrier.cuh"
using namespace rnnkernels::cuda;

__device__ __forceinline__ void relaxed_barrier(unsigned long long* counter, unsigned long long target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(counter, 1ull);
    while (*reinterpret_cast<volatile unsigned long long*>(counter) < target) {}
  }
  __syncthreads();
}

// Reloads its weights from global memory every step.
extern "C" __global__ void planted_w_in_loop(GridBarrier b, const float* w, float* h, int steps, int n) {
  for (int t = 0; t < steps; ++t) {
    float sum = 0;
    for (int k = threadIdx.x; k < n; k += blockDim.x) sum += __ldcs(w + k) * __ldcg(reinterpret_cast<const float4*>(h) + k).x;
    h[blockIdx.x] = sum;
    if (!grid_barrier(b, t + 1)) break;
  }
}

// Reads h through the non-coherent path.
extern "C" __global__ void planted_nc(GridBarrier b, const float* w, float* h, int steps, int n) {
  const float w0 = __ldcs(w + threadIdx.x);
  for (int t = 0; t < steps; ++t) {
    h[blockIdx.x] = w0 * __ldg(h + (blockIdx.x + 1) % gridDim.x) + __ldcg(reinterpret_cast<const float4*>(h) + n).x;
    if (!grid_barrier(b, t + 1)) break;
  }
}

// A barrier without release/acquire.
extern "C" __global__ void planted_relaxed(unsigned long long* counter, const float* w, float* h, int steps, int n) {
  const float w0 = __ldcs(w + threadIdx.x);
  for (int t = 0; t < steps; ++t) {
    h[blockIdx.x] = w0 * __ldcg(reinterpret_cast<const float4*>(h) + n).x;
    relaxed_barrier(counter, (t + 1ull) * gridDim.x);
  }
}
"""


@needs_nvcc
def test_the_lint_catches_planted_faults(tmp_path):
    source = tmp_path / "planted.cu"
    source.write_text(PLANTED)
    ptx = tmp_path / "planted.ptx"
    build = subprocess.run([NVCC, "-std=c++20", "-O3", "-arch=sm_90", "-ptx", "-I", CSRC, str(source),
                            "-o", str(ptx)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    entries = cuda_lint.ptx_entries(ptx.read_text())
    expected = {"planted_w_in_loop": "inside the time loop", "planted_nc": "non-coherent",
                "planted_relaxed": "not a release"}
    for kernel, finding in expected.items():
        findings, _ = cuda_lint.lint_persistent_entry(entries[kernel])
        assert any(finding in f for f in findings), (kernel, findings)


# ------------------------------------------------ persistent kernels: plans
# An H100 SXM / H200: 132 SMs, 227 KB of opt-in shared memory per block.
H100 = {"sms": 132, "max_shared": 232448}
ENGINE_IDS = {"mma_bf16": 1, "mma_tf32": 2, "fma_f32": 3}
ELEMENT_BYTES = {"mma_bf16": 2, "mma_tf32": 4, "fma_f32": 4}
GATES = {"lstm": 4, "gru": 3}
ANCHORS = [(cell, engine, batch, hidden, direction)
           for cell in GATES for engine in ("mma_bf16", "mma_tf32") for batch in (16, 64)
           for hidden in (768, 1024) for direction in ("fwd", "bwd")]

# Assumptions of the per-step estimate, to be replaced by the first GPU
# measurement (benchmarks: barrier floor, us/step of the persistent path).
ASSUMED = {"barrier_us": 1.0, "l2_bytes_per_s": 5.5e12, "sm_l2_bytes_per_clock": 64,
           "clock_hz": 1.755e9, "cycles_per_dependent_mma": 16}


@pytest.fixture(scope="module")
def plan_program(tmp_path_factory):
    binary = tmp_path_factory.mktemp("plans") / "persistent_plan_check"
    build = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", os.path.join(CSRC, "cuda"),
                            os.path.join(os.path.dirname(__file__), "persistent_plan_check.cpp"),
                            "-o", str(binary)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    return str(binary)


def _plans(program, requests):
    lines = "".join(f"{ENGINE_IDS[e]} {GATES[c]} {b} {h} {int(d == 'bwd')} {H100['sms']} {H100['max_shared']}\n"
                    for c, e, b, h, d in requests)
    result = subprocess.run([program], input=lines, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def per_step_estimate(plan, engine, batch, hidden, gates, direction):
    """(us per step, MB staged from L2 per step, dependent MMAs per warp): the
    barrier, plus every CTA reading all of B x K from L2 (bounded by the L2's
    and by one SM's bandwidth), plus the longest warp's chain of mma.sync."""
    k = hidden * (gates if direction == "bwd" else 1)
    staged = batch * k * ELEMENT_BYTES[engine]
    l2_s = max(plan["ctas"] * staged / ASSUMED["l2_bytes_per_s"],
               staged / (ASSUMED["sm_l2_bytes_per_clock"] * ASSUMED["clock_hz"]))
    k_step = 16 if engine == "mma_bf16" else 8
    mmas = (plan["m_pad"] // 16) * (plan["n_pad"] // 8) * math.ceil(k / k_step)
    per_warp = math.ceil(mmas / 8)
    # Two accumulator chains per warp (slice_product.cuh) halve the dependent latency.
    mma_s = per_warp * ASSUMED["cycles_per_dependent_mma"] / 2 / ASSUMED["clock_hz"]
    return ASSUMED["barrier_us"] + 1e6 * (l2_s + mma_s), plan["ctas"] * staged / 1e6, per_warp


def test_anchor_shapes_fit_and_the_per_step_estimate(plan_program, capsys):
    plans = _plans(plan_program, ANCHORS)
    rows = []
    for (cell, engine, batch, hidden, direction), plan in zip(ANCHORS, plans):
        label = f"{cell} {engine} B={batch} H={hidden} {direction}"
        assert plan["refusal"] is None, f"{label}: {plan['refusal']}"
        assert plan["shared_bytes"] <= H100["max_shared"], label
        us, megabytes, per_warp = per_step_estimate(plan, engine, batch, hidden, GATES[cell], direction)
        rows.append(f"{label:<38} P={plan['ctas']:<4} U={plan['units_per_cta']:<3} "
                    f"smem={plan['shared_bytes'] / 1024:6.1f}KB chunks={plan['chunks']:<3} "
                    f"L2={megabytes:6.2f}MB mma/warp={per_warp:<5} est={us:5.2f}us")
    # The backward's dG (B x G*H) outgrows shared memory at B=64: staged in K-chunks.
    assert any(p["chunks"] > 1 for p in plans), "no anchor exercises the K-chunked staging"
    with capsys.disabled():
        print(f"\npersistent kernels, per-step estimate on an H100 (assumed: {ASSUMED}):")
        print("\n".join(rows))


def test_what_cannot_fit_is_refused_with_a_reason(plan_program):
    fp64_like = _plans(plan_program, [("lstm", "fma_f32", 16, 4096, "fwd")])[0]
    assert fp64_like["refusal"] == "the CTAs' slices of W_hh do not fit in shared memory"
