"""Build of rnnkernels: the pure-Python package plus the compiled ops in csrc/.

The C++ extension (rnnkernels._C: the cpu backend) is built at install time,
never JIT-compiled at import. It is skipped, with a message saying so, when
RNNKERNELS_NO_EXTENSION=1 is set, when no C++ compiler is found, or when torch
is not importable in the build environment (a build with isolation: install
with `pip install --no-build-isolation .`). Without it the reference backend
still runs everywhere.
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
