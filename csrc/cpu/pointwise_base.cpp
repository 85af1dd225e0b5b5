// The gate math at the portable level: plain scalar code, float and double.
#include "pointwise_impl.h"

namespace rnnkernels {

PointwiseKernels<float> pointwise_base_float() { return make_kernels<Scalar<float>, float>(); }
PointwiseKernels<double> pointwise_base_double() { return make_kernels<Scalar<double>, double>(); }

template <>
PointwiseKernels<float> pointwise_kernels<float>(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
    case CpuIsa::kAmx:  // AMX adds tiles for GEMMs, not for the gate math
      return pointwise_avx512();
    case CpuIsa::kAvx2:
      return pointwise_avx2();
    default:
      return pointwise_base_float();
  }
}

template <>
PointwiseKernels<double> pointwise_kernels<double>(CpuIsa /*isa*/) {
  return pointwise_base_double();
}

}  // namespace rnnkernels
