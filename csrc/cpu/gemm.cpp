// Run-time resolution of the BLAS symbols torch exports, and the slice GEMM
// (see gemm.h).
#include "gemm.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

namespace rnnkernels {

namespace {

// MKL's CBLAS enums and its LP64 integer, as the torch wheel links MKL.
using MklInt = int;
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

using PackGetSizeFn = size_t (*)(int identifier, MklInt m, MklInt n, MklInt k);
using PackFn = void (*)(int layout, int identifier, int trans, MklInt m, MklInt n, MklInt k,
                        float alpha, const float* src, MklInt ld, float* dest);
using ComputeFn = void (*)(int layout, MklInt transa, MklInt transb, MklInt m, MklInt n,
                           MklInt k, const float* a, MklInt lda, const float* b, MklInt ldb,
                           float beta, float* c, MklInt ldc);
using DgemmFn = void (*)(const char* transa, const char* transb, const MklInt* m,
                         const MklInt* n, const MklInt* k, const double* alpha, const double* a,
                         const MklInt* lda, const double* b, const MklInt* ldb,
                         const double* beta, double* c, const MklInt* ldc);

struct BlasSymbols {
  PackGetSizeFn pack_get_size = nullptr;
  PackFn pack = nullptr;
  ComputeFn compute = nullptr;
  DgemmFn dgemm = nullptr;
};

// RTLD_DEFAULT searches every library loaded so far: libtorch_cpu is, since
// importing torch precedes loading this extension.
const BlasSymbols& blas() {
  static const BlasSymbols symbols = [] {
    BlasSymbols s;
    s.pack_get_size = reinterpret_cast<PackGetSizeFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack_get_size"));
    s.pack = reinterpret_cast<PackFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack"));
    s.compute = reinterpret_cast<ComputeFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm_compute"));
    s.dgemm = reinterpret_cast<DgemmFn>(dlsym(RTLD_DEFAULT, "dgemm_"));
    return s;
  }();
  return symbols;
}

bool aten_forced() {
  const char* forced = std::getenv("RNNKERNELS_CPU_GEMM");
  return forced != nullptr && std::strcmp(forced, "aten") == 0;
}

at::Tensor view_of(const void* data, int64_t rows, int64_t cols, int64_t row_stride,
                   int64_t col_stride, at::ScalarType dtype) {
  return at::from_blob(const_cast<void*>(data), {rows, cols}, {row_stride, col_stride},
                       at::TensorOptions().dtype(dtype));
}

}  // namespace

GemmPath gemm_path(at::ScalarType dtype) {
  if (aten_forced()) {
    return GemmPath::kAten;
  }
  const BlasSymbols& s = blas();
  if (dtype == at::kFloat) {
    return s.pack_get_size && s.pack && s.compute ? GemmPath::kMklPacked : GemmPath::kAten;
  }
  return dtype == at::kDouble && s.dgemm ? GemmPath::kBlas : GemmPath::kAten;
}

const char* gemm_path_name(GemmPath path) {
  switch (path) {
    case GemmPath::kMklPacked:
      return "mkl_packed";
    case GemmPath::kBlas:
      return "blas";
    default:
      return "aten";
  }
}

template <typename T>
SliceGemm<T>::SliceGemm(GemmPath path, const T* b, int64_t ldb, bool transposed, int64_t m,
                        int64_t n, int64_t k)
    : path_(path), m_(m), n_(n), k_(k) {
  if (m == 0 || n == 0 || k == 0) {
    return;  // run() writes zeros
  }
  if constexpr (std::is_same_v<T, float>) {
    if (path == GemmPath::kMklPacked) {
      const BlasSymbols& s = blas();
      b_ = static_cast<T*>(std::malloc(s.pack_get_size(kBMatrix, m, n, k)));
      s.pack(kRowMajor, kBMatrix, transposed ? kTrans : kNoTrans, m, n, k, 1.0f, b, ldb, b_);
      return;
    }
  }
  b_ = static_cast<T*>(std::malloc(sizeof(T) * n * k));
  for (int64_t kk = 0; kk < k; ++kk) {
    for (int64_t nn = 0; nn < n; ++nn) {
      b_[kk * n + nn] = transposed ? b[nn * ldb + kk] : b[kk * ldb + nn];
    }
  }
}

template <typename T>
SliceGemm<T>::~SliceGemm() {
  std::free(b_);
}

template <typename T>
void SliceGemm<T>::run(const T* a, int64_t lda, T* c, int64_t ldc) const {
  if (m_ == 0 || n_ == 0) {
    return;
  }
  if (k_ == 0) {
    for (int64_t i = 0; i < m_; ++i) {
      std::memset(c + i * ldc, 0, sizeof(T) * n_);
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (path_ == GemmPath::kMklPacked) {
      blas().compute(kRowMajor, kNoTrans, kPacked, m_, n_, k_, a, lda, b_, n_, 0.0f, c, ldc);
      return;
    }
  } else {
    if (path_ == GemmPath::kBlas) {
      // Column-major view of the row-major product: C^T = B^T A^T.
      const MklInt m = m_, n = n_, k = k_, ldb = n_, la = lda, lc = ldc;
      const double one = 1.0, zero = 0.0;
      blas().dgemm("N", "N", &n, &m, &k, &one, b_, &ldb, a, &la, &zero, c, &lc);
      return;
    }
  }
  const auto dtype = c10::CppTypeToScalarType<T>::value;
  at::Tensor out = view_of(c, m_, n_, ldc, 1, dtype);
  at::mm_out(out, view_of(a, m_, k_, lda, 1, dtype), view_of(b_, k_, n_, n_, 1, dtype));
}

template class SliceGemm<float>;
template class SliceGemm<double>;

}  // namespace rnnkernels
