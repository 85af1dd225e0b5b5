// The per-step product of a recurrence loop, on the path the layer takes: a
// thread's slice of W_hh packed for the float32/float64 GEMM (SliceGemm,
// gemm.h), or, for a bfloat16 layer at the amx level, packed for AMX tiles
// (AmxGemm, amx_gemm.h), whose A operand is the loop's shared bfloat16 copy
// of the step's rows (Bf16Rows). Built inside the parallel region by the
// thread that runs it.
#pragma once

#include <memory>
#include <type_traits>
#include <vector>

#include "amx_gemm.h"
#include "gemm.h"
#include "isa.h"
#include "region.h"

namespace rnnkernels {

// Whether the recurrence GEMMs of a layer in `dtype` run on AMX tiles: a
// bfloat16 layer at the amx level.
inline bool amx_recurrence(bool bfloat16) {
  return bfloat16 && active_isa() == CpuIsa::kAmx;
}

template <typename T>
class StepGemm {
 public:
  // C[m, n] = A op(B), op(B) K x N as in SliceGemm; `amx` (float only)
  // packs op(B) for AmxGemm with `k_copies` (see there).
  StepGemm(GemmPath path, bool amx, const T* b, int64_t ldb, bool transposed, int64_t m,
           int64_t n, int64_t k, int k_copies = 1)
      : on_amx_(std::is_same_v<T, float> && amx && m > 0 && n > 0 && k > 0),
        slice_(path, b, ldb, transposed, on_amx_ ? 0 : m, n, k),
        n_(n),
        acc_(on_amx_ ? 0 : m * n) {
    if constexpr (std::is_same_v<T, float>) {
      if (on_amx_) {
        amx_ = std::make_unique<AmxGemm>(b, ldb, transposed, m, n, k, k_copies);
      }
    }
  }

  // The product of A: `a` (row stride lda) on the GEMM path, or `a16` (the
  // Bf16Rows buffer of this step) on AMX.
  void run(const T* a, int64_t lda, const uint16_t* a16) {
    if constexpr (std::is_same_v<T, float>) {
      if (on_amx_) {
        amx_->run(a16);
        return;
      }
    }
    slice_.run(a, lda, acc_.data(), n_);
  }

  // Row r of the last product at out() + r * out_stride().
  const T* out() const {
    if constexpr (std::is_same_v<T, float>) {
      if (on_amx_) {
        return amx_->out();
      }
    }
    return acc_.data();
  }
  int64_t out_stride() const { return on_amx_ ? amx_->out_stride() : n_; }

 private:
  bool on_amx_;
  SliceGemm<T> slice_;
  int64_t n_;
  std::vector<T> acc_;
  std::unique_ptr<AmxGemm> amx_;
};

// Columns `cols` of rows [0, rows) of `src` (row stride ld) into `to`'s
// buffer `parity` (Bf16Rows::store), when `amx`; float only, as AMX runs only
// bfloat16 layers (whose state is float32).
template <typename T>
void publish_rows(Bf16Rows& to, bool amx, int64_t parity, int64_t rows, const Slice& cols,
                  const T* src, int64_t ld) {
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t r = 0; amx && r < rows; ++r) {
      to.store(parity, r, cols.begin, src + r * ld + cols.begin, cols.size());
    }
  }
}

}  // namespace rnnkernels
