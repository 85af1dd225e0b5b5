// The GEMMs of the recurrence loops, through what the loaded torch exports.
//
// The x86 torch wheel's libtorch_cpu exports MKL's cblas_sgemm_pack /
// cblas_sgemm_compute (a weight slice packed once per call, reused every
// step) and the Fortran dgemm_; the symbols are looked up at run time
// (dlsym on the already-loaded libraries), so a torch without them (OpenBLAS,
// aarch64) loads this extension and falls back to at::mm. Setting
// RNNKERNELS_CPU_GEMM=aten forces that fallback (read on every call).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace rnnkernels {

enum class GemmPath { kMklPacked, kBlas, kAten };

// The path float (kMklPacked or kAten) and double (kBlas or kAten) take now.
GemmPath gemm_path(at::ScalarType dtype);
const char* gemm_path_name(GemmPath path);

// C[M, N] (row stride ldc) = A[M, K] (row stride lda) op(B), where op(B) is
// K x N: element (k, n) at b[k * ldb + n], or at b[n * ldb + k] when
// `transposed`. B is copied (packed) at construction, so the caller may
// free it. Built inside a parallel region, once per thread per call; run()
// uses no threads of its own.
template <typename T>
class SliceGemm {
 public:
  SliceGemm(GemmPath path, const T* b, int64_t ldb, bool transposed, int64_t m, int64_t n,
            int64_t k);
  ~SliceGemm();
  SliceGemm(const SliceGemm&) = delete;
  SliceGemm& operator=(const SliceGemm&) = delete;

  void run(const T* a, int64_t lda, T* c, int64_t ldc) const;

 private:
  GemmPath path_;
  int64_t m_, n_, k_;
  T* b_ = nullptr;  // packed (kMklPacked) or a contiguous [K, N] copy
};

}  // namespace rnnkernels
