// Run-time resolution of MKL's 16-bit GEMMs in the loaded torch, and their
// float32 fallback (see gemm16.h).
#include "gemm16.h"

#include <ATen/Config.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>

namespace rnnkernels {

namespace {

// MKL's CBLAS enums, its LP64 integer, and its 16-bit element types (both
// are raw 16-bit words at the ABI).
using MklInt = int;
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
using Gemm16Fn = void (*)(int layout, int transa, int transb, MklInt m, MklInt n, MklInt k,
                          float alpha, const uint16_t* a, MklInt lda, const uint16_t* b,
                          MklInt ldb, float beta, float* c, MklInt ldc);

struct Gemm16Symbols {
  Gemm16Fn bf16 = nullptr;
  Gemm16Fn f16 = nullptr;
};

// RTLD_DEFAULT searches every library loaded so far: libtorch_cpu is, since
// importing torch precedes loading this extension.
const Gemm16Symbols& symbols() {
  static const Gemm16Symbols found = [] {
    Gemm16Symbols s;
    s.bf16 = reinterpret_cast<Gemm16Fn>(dlsym(RTLD_DEFAULT, "cblas_gemm_bf16bf16f32"));
    s.f16 = reinterpret_cast<Gemm16Fn>(dlsym(RTLD_DEFAULT, "cblas_gemm_f16f16f32"));
    return s;
  }();
  return found;
}

Gemm16Fn mkl_symbol(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? symbols().bf16 : dtype == at::kHalf ? symbols().f16 : nullptr;
}

bool env_is(const char* name, const char* value) {
  const char* set = std::getenv(name);
  return set != nullptr && std::strcmp(set, value) == 0;
}

// torch's rule for running its 16-bit matmul on oneDNN (ideep's
// has_bf16_type_support / has_fp16_type_support: the avx512_core ISA, or
// avx512_core_fp16 for float16).
bool torch_matmul_is_fast(at::ScalarType dtype) {
#if AT_MKLDNN_ENABLED() && defined(__x86_64__) && \
    ((defined(__GNUC__) && __GNUC__ >= 12) || defined(__clang__))
  if (!at::globalContext().userEnabledMkldnn()) {
    return false;
  }
  const bool avx512_core = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return dtype == at::kBFloat16 ? avx512_core : avx512_core && __builtin_cpu_supports("avx512fp16");
#else
  (void)dtype;
  return false;
#endif
}

// The MKL function gemm16() calls, or null for the float32 fallback.
Gemm16Fn mkl_function(at::ScalarType dtype) {
  if (env_is("RNNKERNELS_CPU_GEMM", "aten") || env_is("RNNKERNELS_CPU_GEMM16", "float32")) {
    return nullptr;
  }
  return mkl_symbol(dtype);
}

bool fits_mkl_int(std::initializer_list<int64_t> sizes) {
  for (int64_t size : sizes) {
    if (size > std::numeric_limits<MklInt>::max()) {
      return false;
    }
  }
  return true;
}

// A strided view of a row-major operand as its op() matrix, rows x cols.
at::Tensor operand_view(const void* data, bool trans, int64_t rows, int64_t cols, int64_t ld,
                        at::ScalarType dtype) {
  const auto options = at::TensorOptions().dtype(dtype);
  void* p = const_cast<void*>(data);
  return trans ? at::from_blob(p, {rows, cols}, {1, ld}, options)
               : at::from_blob(p, {rows, cols}, {ld, 1}, options);
}

}  // namespace

Gemm16Path gemm16_path(at::ScalarType dtype) {
  if (env_is("RNNKERNELS_CPU_GEMM", "aten")) {
    return Gemm16Path::kFloat32;
  }
  const char* forced = std::getenv("RNNKERNELS_CPU_GEMM16");
  if (forced != nullptr && forced[0] != '\0') {
    for (Gemm16Path path : {Gemm16Path::kTorch, Gemm16Path::kMkl, Gemm16Path::kFloat32}) {
      if (std::strcmp(forced, gemm16_path_name(path)) == 0) {
        return path == Gemm16Path::kMkl && mkl_symbol(dtype) == nullptr ? Gemm16Path::kFloat32
                                                                         : path;
      }
    }
    TORCH_CHECK_VALUE(false, "RNNKERNELS_CPU_GEMM16=", forced,
                      " is not a path: choose one of torch, mkl_16bit, float32");
  }
  if (torch_matmul_is_fast(dtype)) {
    return Gemm16Path::kTorch;
  }
  return mkl_symbol(dtype) != nullptr ? Gemm16Path::kMkl : Gemm16Path::kFloat32;
}

const char* gemm16_path_name(Gemm16Path path) {
  switch (path) {
    case Gemm16Path::kTorch:
      return "torch";
    case Gemm16Path::kMkl:
      return "mkl_16bit";
    default:
      return "float32";
  }
}

void gemm16(at::ScalarType dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
            const void* a, int64_t lda, const void* b, int64_t ldb, float beta, float* c,
            int64_t ldc) {
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf,
              "rnnkernels gemm16: expected bfloat16 or float16 operands, got ", dtype);
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {  // an empty sum: C = beta C
    if (beta == 0.0f) {
      for (int64_t i = 0; i < m; ++i) {
        std::memset(c + i * ldc, 0, sizeof(float) * n);
      }
    }
    return;
  }
  const Gemm16Fn mkl = mkl_function(dtype);
  if (mkl != nullptr && fits_mkl_int({m, n, k, lda, ldb, ldc})) {
    mkl(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, m, n, k, 1.0f,
        static_cast<const uint16_t*>(a), lda, static_cast<const uint16_t*>(b), ldb, beta, c, ldc);
    return;
  }
  const at::Tensor a32 = operand_view(a, trans_a, m, k, lda, dtype).to(at::kFloat);
  const at::Tensor b32 = operand_view(b, trans_b, k, n, ldb, dtype).to(at::kFloat);
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, at::TensorOptions().dtype(at::kFloat));
  if (beta == 0.0f) {
    at::mm_out(out, a32, b32);
  } else {
    out.addmm_(a32, b32);
  }
}

at::Tensor mm16(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.is_contiguous() && b.is_contiguous() &&
                  a.scalar_type() == b.scalar_type(),
              "rnnkernels mm16: expected two contiguous 2-D tensors of one dtype, got ",
              a.sizes(), " (", a.scalar_type(), ") and ", b.sizes(), " (", b.scalar_type(), ")");
  const int64_t m = trans_a ? a.size(1) : a.size(0), k = trans_a ? a.size(0) : a.size(1);
  const int64_t n = trans_b ? b.size(0) : b.size(1);
  TORCH_CHECK((trans_b ? b.size(1) : b.size(0)) == k, "rnnkernels mm16: inner sizes differ: ",
              a.sizes(), " and ", b.sizes());
  if (gemm16_path(a.scalar_type()) == Gemm16Path::kTorch) {
    return at::mm(trans_a ? a.t() : a, trans_b ? b.t() : b);
  }
  at::Tensor c = at::empty({m, n}, a.options().dtype(at::kFloat));
  gemm16(a.scalar_type(), trans_a, trans_b, m, n, k, a.data_ptr(), a.size(1), b.data_ptr(),
         b.size(1), 0.0f, c.data_ptr<float>(), n);
  return c.to(a.scalar_type());
}

at::Tensor weight_gradient(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == at::kBFloat16 || a.scalar_type() == at::kHalf) {
    return mm16(a.contiguous(), true, b.contiguous(), false);
  }
  return at::mm(a.t(), b);
}

}  // namespace rnnkernels
