"""The tensor-core fragment maps of csrc/cuda/mma_fragments.h, checked on the
host: tests/mma_fragment_check.cpp runs the kernels' per-lane gather and
scatter for 32 simulated lanes around an emulator of mma.sync written from
the PTX ISA's fragment tables, and compares a tiled product with a plain one
(m16n8k16 for f16/bf16, m16n8k8 for tf32). Deliberately wrong maps (planted
in the check program, one per case) must fail it."""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC_CUDA = os.path.join(HERE, os.pardir, "csrc", "cuda")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")


@pytest.fixture(scope="module")
def check_program(tmp_path_factory):
    binary = tmp_path_factory.mktemp("mma_fragments") / "mma_fragment_check"
    build = subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror",
                            "-I", os.path.abspath(CSRC_CUDA),
                            os.path.join(HERE, "mma_fragment_check.cpp"), "-o", str(binary)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    return str(binary)


def _run(program, shape, plant):
    return subprocess.run([program, shape, plant], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shape", ["f16", "tf32"], ids=["m16n8k16_f16_bf16", "m16n8k8_tf32"])
def test_fragment_maps_reproduce_the_matrix_product(check_program, shape):
    result = _run(check_program, shape, "none")
    assert result.returncode == 0 and "0 wrong elements" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("shape, plant", [("f16", "a_row_half"), ("f16", "b_columns"),
                                          ("f16", "c_quad_rows"), ("tf32", "a_order"),
                                          ("tf32", "b_half")])
def test_a_planted_wrong_map_fails(check_program, shape, plant):
    result = _run(check_program, shape, plant)
    assert result.returncode == 1, f"the planted map {plant} was not caught:\n{result.stdout}{result.stderr}"
    assert "wrong elements" in result.stdout and "expected" in result.stdout, result.stdout
