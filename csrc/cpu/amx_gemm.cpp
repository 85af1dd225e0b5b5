// AmxGemm (amx_gemm.h): the packing in plain C++, the product in AMX tiles.
//
// Tile registers: tmm0-3 accumulate a 16 x 64 block of C (four 16 x 16
// float32 tiles), tmm4 holds 16 rows x 32 bfloat16 of A, tmm5-7 take turns
// holding 32 x 16 of B in VNNI order (row r of a B tile is the K pair
// (2r, 2r + 1) of 16 columns, interleaved). Per 32-wide K step the block
// loads A once and four B tiles, each used by one tdpbf16ps.
//
// As in pointwise_<level>.cpp, every header with inline functions of
// external linkage comes before the target pragma, which covers only the
// AmxGemm members that touch tiles.
#include "amx_gemm.h"

#include <algorithm>
#include <stdexcept>

#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) || \
                            (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12))
#define RK_AMX_COMPILED 1
#include <immintrin.h>
#endif

namespace rnnkernels {
namespace {

constexpr int64_t kTileRows = 16;   // rows of A and C per tile; K pairs per B tile
constexpr int64_t kTileK = 32;      // bfloat16 of K per tile row (64 bytes)
constexpr int64_t kTileN = 16;      // float32 columns of a C tile (64 bytes)
constexpr int64_t kGroupN = 4 * kTileN;       // columns per block of four C tiles
constexpr int64_t kTileWords = kTileRows * kTileK;  // bfloat16 words per A or B tile

// The LDTILECFG operand: palette 1, every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

}  // namespace

int64_t AmxGemm::padded_rows(int64_t m) { return round_up(std::max<int64_t>(m, 1), kTileRows); }
int64_t AmxGemm::padded_k(int64_t k) { return round_up(std::max<int64_t>(k, 1), kTileK); }

Bf16Rows::Bf16Rows(bool enabled, int64_t m, int64_t k, int copies) {
  if (!enabled) {
    return;
  }
  k_pad_ = AmxGemm::padded_k(k);
  copies_ = copies;
  stride_ = k_pad_ * copies;
  size_ = AmxGemm::padded_rows(m) * stride_;
  words_.assign(static_cast<size_t>(2 * size_), 0);
}

#if defined(RK_AMX_COMPILED)

bool amx_compiled() { return true; }

// Only the code below is compiled for AMX and the AVX-512 that every AMX
// CPU has (isa_supported(CpuIsa::kAmx) checks both).
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")

void Bf16Rows::store(int64_t parity, int64_t row, int64_t col, const float* src, int64_t count) {
  uint16_t* out = words_.data() + (parity % 2) * size_ + row * stride_ + col;
  int64_t j = 0;
  if (copies_ == 1) {  // exact values: the top half of each float
    for (; j + 16 <= count; j += 16) {
      const __m512i bits = _mm512_srli_epi32(_mm512_castps_si512(_mm512_loadu_ps(src + j)), 16);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), _mm512_cvtepi32_epi16(bits));
    }
    for (; j < count; ++j) {
      out[j] = bf16_bits(src[j]);
    }
    return;
  }
  for (; j + 16 <= count; j += 16) {  // hi = bf16(x), lo = bf16(x - hi), rounded to nearest even
    const __m512 x = _mm512_loadu_ps(src + j);
    const __m256i hi = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x));
    const __m512 hi_value = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
    const __m256i lo = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_sub_ps(x, hi_value)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k_pad_ + j), lo);
  }
  for (; j < count; ++j) {
    const uint16_t hi = bf16_round_bits(src[j]);
    out[j] = hi;
    out[k_pad_ + j] = bf16_round_bits(src[j] - bf16_value(hi));
  }
}

namespace {

// GCC 12 does not apply the target pragma to constructors and destructors,
// so they call these (not inlined) instead of the intrinsics.
__attribute__((noinline)) void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kTileRows;
    config.colsb[t] = 64;
  }
  // GCC 12's ldtilecfg builtin does not tell the optimiser that it reads
  // the whole 64 bytes, which then drops the stores above; the empty asm
  // with a memory clobber keeps them.
  asm volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

__attribute__((noinline)) void release_tiles() { _tile_release(); }

}  // namespace

AmxGemm::AmxGemm(const float* b, int64_t ldb, bool transposed, int64_t m, int64_t n, int64_t k,
                 int k_copies)
    : m_pad_(padded_rows(m)),
      n_pad_(round_up(std::max<int64_t>(n, 1), kGroupN)),
      k_pad_(padded_k(k)),
      k_copies_(k_copies),
      b_(static_cast<size_t>(n_pad_ * k_pad_ * k_copies), 0),
      c_(static_cast<size_t>(m_pad_ * n_pad_), 0.0f) {
  const int64_t k_tiles = k_pad_ / kTileK * k_copies_;
  for (int64_t group = 0; group < n_pad_ / kGroupN; ++group) {
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const int64_t k0 = (kt % (k_pad_ / kTileK)) * kTileK;
      for (int64_t j = 0; j < 4; ++j) {
        uint16_t* tile = b_.data() + ((group * k_tiles + kt) * 4 + j) * kTileWords;
        const int64_t n0 = group * kGroupN + j * kTileN;
        for (int64_t r = 0; r < kTileRows; ++r) {
          for (int64_t c = 0; c < kTileN; ++c) {
            for (int64_t e = 0; e < 2; ++e) {
              const int64_t kk = k0 + 2 * r + e, nn = n0 + c;
              if (kk < k && nn < n) {
                tile[r * kTileK + 2 * c + e] =
                    bf16_bits(transposed ? b[nn * ldb + kk] : b[kk * ldb + nn]);
              }
            }
          }
        }
      }
    }
  }
  configure_tiles();
}

AmxGemm::~AmxGemm() { release_tiles(); }

void AmxGemm::run(const uint16_t* a) {
  const int64_t k_tiles = k_pad_ / kTileK * k_copies_;
  const int64_t a_bytes = stride() * 2, c_bytes = n_pad_ * 4;
  for (int64_t m0 = 0; m0 < m_pad_; m0 += kTileRows) {
    const uint16_t* a_rows = a + m0 * stride();
    for (int64_t group = 0; group < n_pad_ / kGroupN; ++group) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const uint16_t* b_tiles = b_.data() + group * k_tiles * 4 * kTileWords;
      for (int64_t kt = 0; kt < k_tiles; ++kt, b_tiles += 4 * kTileWords) {
        _tile_loadd(4, a_rows + kt * kTileK, a_bytes);
        _tile_loadd(5, b_tiles, 64);
        _tile_dpbf16ps(0, 4, 5);
        _tile_loadd(6, b_tiles + kTileWords, 64);
        _tile_dpbf16ps(1, 4, 6);
        _tile_loadd(7, b_tiles + 2 * kTileWords, 64);
        _tile_dpbf16ps(2, 4, 7);
        _tile_loadd(5, b_tiles + 3 * kTileWords, 64);
        _tile_dpbf16ps(3, 4, 5);
      }
      float* c_block = c_.data() + m0 * n_pad_ + group * kGroupN;
      _tile_stored(0, c_block, c_bytes);
      _tile_stored(1, c_block + kTileN, c_bytes);
      _tile_stored(2, c_block + 2 * kTileN, c_bytes);
      _tile_stored(3, c_block + 3 * kTileN, c_bytes);
    }
  }
}

#pragma GCC pop_options

#else  // no AMX kernels in this build: isa_supported(CpuIsa::kAmx) is false

bool amx_compiled() { return false; }

AmxGemm::AmxGemm(const float*, int64_t, bool, int64_t, int64_t, int64_t, int) {
  throw std::logic_error("rnnkernels: built without AMX kernels");
}
AmxGemm::~AmxGemm() = default;
void AmxGemm::run(const uint16_t*) { throw std::logic_error("rnnkernels: built without AMX kernels"); }
void Bf16Rows::store(int64_t, int64_t, int64_t, const float*, int64_t) {
  throw std::logic_error("rnnkernels: built without AMX kernels");
}

#endif

}  // namespace rnnkernels
