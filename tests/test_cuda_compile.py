"""The cuda backend compiles, checked on machines without a GPU (issue 4's CI
check): nvcc compiles every csrc/cuda/*.cu file for sm_80 and sm_90 with the
flags torch's CUDAExtension uses and warnings as errors, and g++ syntax-checks
the torch glue (csrc/cuda/*.cpp) against torch's headers and the CUDA toolkit's.
ptxas reports each kernel's resources (-Xptxas -v): no spill stores or loads,
no stack frame, static shared memory within 48 KB (the rest is dynamic).

All compilers run at once in one fixture, so the whole check costs about the
slowest file rather than the sum; the glue files are checked as one
translation unit that includes them all, which parses ATen's headers once."""

import glob
import os
import re
import shutil
import subprocess

import pytest
import torch.utils.cpp_extension

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
NVCC_FLAGS = ["-std=c++20", "-O3", "--Werror", "all-warnings", "-Xcompiler", "-Wall",
              "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
              "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
              "--expt-relaxed-constexpr", "-Xptxas", "-v",
              "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


def _glue_command(unit, stub_dir):
    includes = [*TORCH_INCLUDES, CUDA_INCLUDE, stub_dir, CSRC]
    return (["g++", "-std=c++20", "-fsyntax-only", "-Wall", "-Werror"]
            + [f"-I{d}" for d in includes] + [str(unit)])


@pytest.fixture(scope="module")
def compile_results(tmp_path_factory):
    """{file name: (return code, compiler output)} for every file checked here."""
    if NVCC is None:
        return {}
    tmp = tmp_path_factory.mktemp("cuda_compile")
    stub = tmp / "stub"
    torch_has_header = any(os.path.exists(os.path.join(d, MISSING_TORCH_CUDA_HEADER))
                           for d in TORCH_INCLUDES)
    if not torch_has_header:
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / MISSING_TORCH_CUDA_HEADER).write_text("#pragma once\n")
    commands = {name: [NVCC, *NVCC_FLAGS, "-I", CSRC, "-c", os.path.join(CSRC, "cuda", name),
                       "-o", str(tmp / f"{name}.o")] for name in CU_FILES}
    if shutil.which("g++") and CUDA_INCLUDE is not None:
        unit = tmp / "all_glue.cpp"
        unit.write_text("".join(f'#include "cuda/{name}"\n' for name in GLUE_FILES))
        commands["glue"] = _glue_command(unit, str(stub))
    running = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name, cmd in commands.items()}
    return {name: (proc.wait(timeout=600), proc.stdout.read()) for name, proc in running.items()}


def test_every_cuda_source_is_checked():
    assert CU_FILES, "no .cu files under csrc/cuda"
    assert GLUE_FILES, "no glue .cpp files under csrc/cuda"


@needs_nvcc
@pytest.mark.parametrize("name", CU_FILES)
def test_kernel_compiles_for_sm80_and_sm90(name, compile_results):
    code, output = compile_results[name]
    assert code == 0, f"nvcc failed on csrc/cuda/{name}:\n{output}"


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
    code, output = compile_results[name]
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
    code, output = compile_results["glue"]
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
