// The gate math compiled for AVX-512F (16 floats a vector). Chosen at run
// time (isa.h): nothing here runs on a CPU without AVX-512F.
//
// Every header with inline functions of external linkage (the C and C++
// library's, pointwise.h's) comes before the pragma, so no copy of them is
// compiled for this level; the intrinsics are always-inline and emit none.
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "pointwise.h"

#pragma GCC target("avx512f,avx2,fma,f16c")
#define RK_VEC_AVX512
#include "pointwise_impl.h"

namespace rnnkernels {

PointwiseKernels<float> pointwise_avx512() { return make_kernels<rk_vec::Vf16, float>(); }

}  // namespace rnnkernels
