// The per-step GEMM of bfloat16 recurrences on AMX tiles (CPU level "amx",
// isa.h): C = A op(B) with A the step's bfloat16 rows (h_{t-1}, or the
// backward's dG split in two bfloat16 halves) and op(B) a thread's slice of
// W_hh, packed once per call into the tiles' VNNI layout. float32
// accumulation. A bfloat16 layer's h and W_hh are exact in bfloat16, so the
// forward's products are the float32 GEMM's; only the summation order
// differs.
//
// Tiles are per-thread state: an AmxGemm configures them for the thread that
// constructs it, and that thread runs it and destroys it (which releases the
// tiles). One AmxGemm per thread at a time. This header includes no
// intrinsics; amx_gemm.cpp is compiled for AMX and runs only where
// isa_supported(CpuIsa::kAmx) holds.
#pragma once

#include <cstdint>
#include <vector>

namespace rnnkernels {

// Whether this build has the AMX kernels: x86-64 and a compiler with the AMX
// intrinsics and CPU checks (GCC 12, clang 12 or later). Without them the
// amx level is never supported (isa.h) and nothing below runs.
bool amx_compiled();

class AmxGemm {
 public:
  // op(B) is K x N: element (k, n) at b[k * ldb + n], or at b[n * ldb + k]
  // when `transposed`; its values must be exact in bfloat16. A has `m` rows;
  // with `k_copies` = 2 the packed B is op(B) stacked on itself, so that
  // A = [hi | lo] (two bfloat16 halves of a float32 operand) multiplies both
  // halves by the same B in one pass.
  AmxGemm(const float* b, int64_t ldb, bool transposed, int64_t m, int64_t n, int64_t k,
          int k_copies = 1);
  ~AmxGemm();
  AmxGemm(const AmxGemm&) = delete;
  AmxGemm& operator=(const AmxGemm&) = delete;

  // The A operand's buffer: rows() x stride() bfloat16 words, zero-padded
  // (rows to a multiple of 16, each copy of K to a multiple of 32). Copy c
  // of row r, column k lives at r * stride() + c * padded_k() + k.
  int64_t rows() const { return m_pad_; }
  int64_t stride() const { return k_pad_ * k_copies_; }
  int64_t padded_k() const { return k_pad_; }

  // The A buffer's sizes for m rows of k columns (see Bf16Rows).
  static int64_t padded_rows(int64_t m);
  static int64_t padded_k(int64_t k);

  // C[m_pad, n_pad] = A B, A as above; the result is out()[r * out_stride() + n].
  void run(const uint16_t* a);
  const float* out() const { return c_.data(); }
  int64_t out_stride() const { return n_pad_; }

 private:
  int64_t m_pad_, n_pad_, k_pad_;
  int k_copies_;
  std::vector<uint16_t> b_;  // tiles: [n group][k tile of all copies][4 n tiles][16][16][2]
  std::vector<float> c_;     // [m_pad, n_pad]
};

// The A operand of an AmxGemm shared by the threads of a recurrence loop: two
// buffers (step parity), each AmxGemm::padded_rows(m) rows of `copies` x
// padded_k(k) bfloat16, zero outside the m x k values. Each thread stores
// its own columns of a step; the step barrier publishes them.
class Bf16Rows {
 public:
  Bf16Rows(bool enabled, int64_t m, int64_t k, int copies = 1);
  const uint16_t* data(int64_t parity) const { return words_.data() + (parity % 2) * size_; }
  // src[0, count) into row `row`, columns [col, col + count) of buffer
  // `parity`: copies = 1 stores values exact in bfloat16; copies = 2 stores
  // their bfloat16 rounding (hi) in the first copy and that of the rest
  // (lo = x - hi) in the second, so hi + lo carries 16 bits of x.
  void store(int64_t parity, int64_t row, int64_t col, const float* src, int64_t count);

 private:
  int64_t stride_ = 0, k_pad_ = 0, size_ = 0;
  int copies_ = 1;
  std::vector<uint16_t> words_;
};

// The bfloat16 word of a float that is exact in bfloat16 (its top half).
inline uint16_t bf16_bits(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  return static_cast<uint16_t>(bits >> 16);
}

// The float32 value of x's bfloat16 rounding (to nearest even), and its word.
inline uint16_t bf16_round_bits(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u) {  // inf and NaN keep their top half
    return static_cast<uint16_t>((bits >> 16) | ((bits & 0xffffu) != 0 ? 0x40u : 0u));
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float bf16_value(uint16_t word) {
  const uint32_t bits = static_cast<uint32_t>(word) << 16;
  float x;
  __builtin_memcpy(&x, &bits, sizeof x);
  return x;
}

}  // namespace rnnkernels
