// The gate math compiled for AVX2 + FMA (8 floats a vector), F16C for float16 rounding. Chosen at run
// time (isa.h): nothing here runs on a CPU without AVX2.
//
// Every header with inline functions of external linkage (the C and C++
// library's, pointwise.h's) comes before the pragma, so no copy of them is
// compiled for this level; the intrinsics are always-inline and emit none.
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "pointwise.h"

#pragma GCC target("avx2,fma,f16c")
#define RK_VEC_AVX2
#include "pointwise_impl.h"

namespace rnnkernels {

PointwiseKernels<float> pointwise_avx2() { return make_kernels<rk_vec::Vf8, float>(); }

}  // namespace rnnkernels
