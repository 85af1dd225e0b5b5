// The 16-bit GEMMs: bfloat16 or float16 operands, float32 accumulation, as
// the module's input projection and the weight gradients of 16-bit layers
// need them. Three paths:
//
// - torch: torch's own 16-bit matmul, where it runs oneDNN's kernels (AMX,
//   AVX512-BF16/FP16): torch's rule is oneDNN enabled and AVX-512 (F, BW,
//   VL, DQ) for bfloat16, AVX512-FP16 for float16. Elsewhere (an AVX2 CPU)
//   torch falls back to a scalar loop of about 1 GFLOP/s.
// - mkl_16bit: MKL's cblas_gemm_bf16bf16f32 / cblas_gemm_f16f16f32, which the
//   x86 torch wheel's libtorch_cpu exports; looked up at run time like the
//   float32 GEMM (gemm.h).
// - float32: both operands converted to float32 and multiplied by at::mm (the
//   same products, since every 16-bit value is exact in float32; only the
//   summation order differs): a torch without MKL.
//
// The first that applies is taken. RNNKERNELS_CPU_GEMM16=torch|mkl_16bit|float32
// forces one (mkl_16bit falls back to float32 where the symbol is missing),
// and RNNKERNELS_CPU_GEMM=aten forces float32 as it forces the float32
// GEMM's fallback; both are read on every call.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace rnnkernels {

enum class Gemm16Path { kTorch, kMkl, kFloat32 };

// The path 16-bit `dtype` (kBFloat16 or kHalf) takes now.
Gemm16Path gemm16_path(at::ScalarType dtype);
const char* gemm16_path_name(Gemm16Path path);

// C[M, N] (float32, row stride ldc) = op(A) op(B) + beta C, row-major, with
// A and B in 16-bit `dtype`, by MKL where it is there (the torch path too:
// torch's matmul has no float32 result) and not forced off, else float32. op(A) is M x K: element (m, k) at a[m * lda + k],
// or at a[k * lda + m] when `trans_a`; op(B) is K x N likewise with ldb and
// `trans_b`. beta is 0 or 1. Runs on torch's threads (MKL's, or at::mm's):
// call it outside a parallel region.
void gemm16(at::ScalarType dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
            const void* a, int64_t lda, const void* b, int64_t ldb, float beta, float* c,
            int64_t ldc);

// op(a) op(b) rounded once to their 16-bit dtype, on gemm16_path's path:
// a [M, K] (or [K, M] with trans_a), b [K, N] (or [N, K] with trans_b), both
// contiguous and of one dtype; returns [M, N].
at::Tensor mm16(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b);

// a^T b for the weight gradients (dW = dG^T h_prev over all steps): a [R, M],
// b [R, N] of one dtype -> [M, N] in that dtype; mm16 for 16-bit operands.
at::Tensor weight_gradient(const at::Tensor& a, const at::Tensor& b);

}  // namespace rnnkernels
