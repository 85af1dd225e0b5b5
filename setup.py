"""Build of rnnkernels: the pure-Python package plus the compiled ops in csrc/.

The C++ extension (rnnkernels._C: the cpu backend) is built at install time,
never JIT-compiled at import. It is skipped, with a message saying so, when
RNNKERNELS_NO_EXTENSION=1 is set, when no C++ compiler is found, or when torch
is not importable in the build environment (a build with isolation: install
with `pip install --no-build-isolation .`). Without it the reference backend
still runs everywhere.

The cuda backend's kernels (csrc/cuda/) join the same extension when torch is
a CUDA build and nvcc is found (CUDA_HOME, else PATH), unless RNNKERNELS_NO_CUDA=1
is set. They are compiled for TORCH_CUDA_ARCH_LIST when it is set, else for
sm_80, sm_90 and the visible GPU's architecture.
"""

import glob
import os
import shutil
import sys

from setuptools import setup


def _skip(reason):
    print(f"rnnkernels: NOT building the C++ extension rnnkernels._C ({reason}); "
          "only the reference backend will be available.", file=sys.stderr)
    return {"ext_modules": [], "cmdclass": {}}


def _cuda_skip_reason():
    """Why the CUDA kernels are not built into rnnkernels._C, or None to build them."""
    if os.environ.get("RNNKERNELS_NO_CUDA", "0") not in ("", "0"):
        return "RNNKERNELS_NO_CUDA is set"
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is None:
        return "torch is a CPU build"
    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return "nvcc was not found (set CUDA_HOME)"
    return None


def _cuda_arch_list():
    """TORCH_CUDA_ARCH_LIST if set, else sm_80 and sm_90 plus the visible GPU's."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    import torch

    archs = ["8.0", "9.0"]
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if f"{major}.{minor}" not in archs:
            archs.append(f"{major}.{minor}")
    return ";".join(archs)


def _extension_kwargs():
    if os.environ.get("RNNKERNELS_NO_EXTENSION", "0") not in ("", "0"):
        return _skip("RNNKERNELS_NO_EXTENSION is set")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return _skip(f"no C++ compiler: '{compiler}' is not on PATH")
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as error:
        return _skip(f"torch is not importable here ({error}); "
                     "install torch first and build with --no-build-isolation")

    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(
        os.path.relpath(path, here)
        for pattern in ("csrc/*.cpp", "csrc/cpu/*.cpp")
        for path in glob.glob(os.path.join(here, pattern))
    )
    # torch's CPU build uses OpenMP; at::parallel_for in our loops only runs
    # in parallel when this extension is compiled with it too.
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cuda_skip = _cuda_skip_reason()
    if cuda_skip is None:
        from torch.utils.cpp_extension import CUDAExtension

        # torch's build reads the architectures from this variable.
        os.environ["TORCH_CUDA_ARCH_LIST"] = _cuda_arch_list()
        cuda_sources = sorted(
            os.path.relpath(path, here)
            for pattern in ("csrc/cuda/*.cpp", "csrc/cuda/*.cu")
            for path in glob.glob(os.path.join(here, pattern))
        )
        print(f"rnnkernels: building the cuda backend for TORCH_CUDA_ARCH_LIST="
              f"{os.environ['TORCH_CUDA_ARCH_LIST']}", file=sys.stderr)
        extension = CUDAExtension(
            name="rnnkernels._C",
            sources=sources + cuda_sources,
            include_dirs=[os.path.join(here, "csrc")],
            extra_compile_args={"cxx": ["-O3"] + openmp, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=openmp,
        )
    else:
        if cuda_skip != "torch is a CPU build":
            print(f"rnnkernels: building without the cuda backend ({cuda_skip}).", file=sys.stderr)
        extension = CppExtension(
            name="rnnkernels._C",
            sources=sources,
            include_dirs=[os.path.join(here, "csrc")],
            extra_compile_args={"cxx": ["-O3"] + openmp},
            extra_link_args=openmp,
        )
    return {
        "ext_modules": [extension],
        "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)},
    }


setup(**_extension_kwargs())
