"""csrc/cell_math.h is shared by the CPU loops and the CUDA kernels: it must
compile as device code. nvcc can compile it here even without a GPU."""

import os
import shutil
import subprocess

import pytest

CSRC = os.path.join(os.path.dirname(__file__), os.pardir, "csrc")

KERNEL = r"""
#include "cell_math.h"
using namespace rnnkernels;

__global__ void every_step(float* out, const float* in) {
  const int i = threadIdx.x;
  const LstmStep<float> l = lstm_step_forward<float>(in[i], in[i], in[i], in[i], 0.5f);
  const LstmStepGrad<float> lg = lstm_step_backward<float>(l.gates, l.c, 0.5f, 1.f, 1.f);
  const GruStep<float> g = gru_step_forward<float>(in[i], in[i], in[i], 0.1f, 0.2f);
  const GruStepGrad<float> gg = gru_step_backward<float>(g.r, g.z, g.n, 0.1f, 0.2f, 1.f);
  out[i] = l.h + lg.dc_prev + g.h + gg.d_hn + rnn_step_forward<true, float>(in[i]) +
           rnn_step_backward<false, float>(in[i], 1.f);
}

__global__ void every_step_double(double* out, const double* in) {
  const int i = threadIdx.x;
  out[i] = lstm_step_forward<double>(in[i], in[i], in[i], in[i], 0.5).h +
           gru_step_forward<double>(in[i], in[i], in[i], 0.1, 0.2).h;
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cell_math_compiles_as_device_code(arch, tmp_path):
    source = tmp_path / "cell_math_check.cu"
    source.write_text(KERNEL)
    result = subprocess.run(
        ["nvcc", f"-arch={arch}", "-std=c++17", "-I", os.path.abspath(CSRC), "-c", str(source),
         "-o", str(tmp_path / "cell_math_check.o")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"nvcc failed:\n{result.stderr}"
