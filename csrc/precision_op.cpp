// The fp32 precision rule of csrc/fp32_precision.h as the C++ glue sees it,
// exposed for tests/test_fp32_precision.py (built in every build, so the CPU
// tests check the plumbing the cuda backend relies on):
//   rnn_fp32_precision() -> 'tf32' | 'ieee'
//   _matmul_tf32_under_rnn_precision() -> whether ATen's float32 GEMMs run
//       TF32 while a MatmulPrecisionFollowsRnn guard is alive.
#include <torch/library.h>

#include <string>

#include "fp32_precision.h"

namespace rnnkernels {
namespace {

std::string rnn_fp32_precision() { return rnn_fp32_uses_tf32() ? "tf32" : "ieee"; }

bool matmul_tf32_under_rnn_precision() {
  const MatmulPrecisionFollowsRnn guard(true);
  return matmul_uses_tf32();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rnnkernels, m) {
  m.def("rnn_fp32_precision() -> str", &rnn_fp32_precision);
  m.def("_matmul_tf32_under_rnn_precision() -> bool", &matmul_tf32_under_rnn_precision);
}

}  // namespace rnnkernels
