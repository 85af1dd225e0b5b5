// Host check of csrc/cuda/mma_fragments.h (driven by tests/test_mma_fragments.py).
//
// A tiled product D[n][m] = sum_k A[m][k] B[k][n] runs the way the persistent
// kernels run it: A staged into the fragment-native slice through
// a_source_of, B staged as rows [n][k], then for every tile the 32 lanes load
// their fragments with load_a_fragment / load_b_fragment, an emulator of
// mma.sync multiplies, and the lanes scatter with store_c_fragment. The
// emulator knows the fragment layouts only from the PTX ISA's tables
// ("Matrix Fragments for mma.m16n8k16 with floating point type" and
// "... mma.m16n8k8", .tf32), written out below as the ISA states them, not
// through the header. Small integers make every product exact.
//
// Usage: mma_fragment_check SHAPE PLANT, SHAPE in {f16, tf32}, PLANT "none" or
// the name of a deliberately wrong map (which must then fail).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mma_fragments.h"
#include "ptx_mma_tables.h"

using rnnkernels::cuda::mma::Coord;
using rnnkernels::cuda::mma::Mma16x8x16;
using rnnkernels::cuda::mma::Mma16x8x8Tf32;
namespace mma = rnnkernels::cuda::mma;

namespace {

// ---------------------------------------------------------------- element bits
// 16-bit elements are bfloat16 patterns (the upper half of a float32), exact
// for small integers; tf32 elements are float32 patterns.
using ptx_tables::bf16_value;
using ptx_tables::f32_value;
uint16_t bf16_bits(float f) {
  uint32_t word;
  std::memcpy(&word, &f, 4);
  return static_cast<uint16_t>(word >> 16);
}
uint32_t f32_bits(float f) {
  uint32_t word;
  std::memcpy(&word, &f, 4);
  return word;
}

// ------------------------------------------------- the emulator (PTX ISA)
// One warp's mma: a[lane][reg], b[lane][reg] as 32-bit registers, c/d[lane][4].
struct WarpRegisters {
  uint32_t a[32][4];
  uint32_t b[32][2];
  float c[32][4];
};

// D = A B + C through the ISA's tables (ptx_mma_tables.h).
void emulate_mma(bool tf32, WarpRegisters& w) {
  float A[16][16] = {}, B[16][8] = {};
  ptx_tables::gather(tf32, w.a, w.b, bf16_value, A, B);
  for (int lane = 0; lane < 32; ++lane) {
    float d[4];
    ptx_tables::lane_result(A, B, tf32 ? 8 : 16, lane, w.c[lane], d);
    std::memcpy(w.c[lane], d, sizeof d);
  }
}

void emulate(Mma16x8x16, WarpRegisters& w) { emulate_mma(false, w); }
void emulate(Mma16x8x8Tf32, WarpRegisters& w) { emulate_mma(true, w); }

// ------------------------------------------------------ planted wrong maps
// Each keeps the production layout but gets one map wrong in a way a
// hand-written fragment mapping plausibly would.
struct PlantARowHalf : Mma16x8x16 {  // the +8 row on the k-half bit instead of bit 1
  static Coord a(int lane, int i) {
    return {(lane >> 2) + 8 * (i >> 2), 2 * (lane & 3) + (i & 1) + 8 * ((i >> 1) & 1)};
  }
};
struct PlantBColumns : Mma16x8x16 {  // neighbouring lane groups' columns swapped
  static Coord b(int lane, int i) {
    const Coord right = Mma16x8x16::b(lane, i);
    return {right.row, right.col ^ 1};
  }
};
struct PlantCQuadRows : Mma16x8x16 {  // accumulator rows and columns from the wrong lane bits
  static Coord c(int lane, int i) {
    return {(lane & 3) * 2 + (i & 1) + 8 * (i >> 1), lane >> 2};
  }
};
struct PlantTf32AOrder : Mma16x8x8Tf32 {  // a1 and a2 swapped
  static Coord a(int lane, int i) {
    return {(lane >> 2) + 8 * (i >> 1), (lane & 3) + 4 * (i & 1)};
  }
};
struct PlantTf32BHalf : Mma16x8x8Tf32 {  // b1 at k + 8 instead of k + 4
  static Coord b(int lane, int i) { return {(lane & 3) + 8 * i, lane >> 2}; }
};

}  // namespace

namespace rnnkernels {
namespace cuda {
namespace mma {
// The plants store their elements as their production shape does.
template <>
struct ElementBits<PlantTf32AOrder> {
  using type = uint32_t;
};
template <>
struct ElementBits<PlantTf32BHalf> {
  using type = uint32_t;
};
}  // namespace mma
}  // namespace cuda
}  // namespace rnnkernels

namespace {

template <class Shape>
uint32_t to_bits(float v) {
  if constexpr (Shape::kElementBytes == 2) {
    return bf16_bits(v);
  } else {
    return f32_bits(v);
  }
}

// Runs the tiled product with Shape's maps and the emulator of Base (the
// instruction the shape stands for); returns the number of wrong elements.
template <class Shape, class Base>
int check_product(unsigned seed) {
  using bits_t = typename mma::ElementBits<Shape>::type;
  constexpr int kMTiles = 3, kKTiles = 3, kNTiles = 2;
  constexpr int M = kMTiles * Shape::kM, K = kKTiles * Shape::kK, N = kNTiles * Shape::kN;
  // The kernels' pitches: 16 bytes of padding per staged row (bank spread).
  constexpr int pitch = K + 16 / Shape::kElementBytes;
  constexpr int out_pitch = M + 4;

  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> small(-4, 4);
  std::vector<float> A(M * K), B(K * N), C(N * out_pitch, 0.0f);
  for (float& v : A) v = static_cast<float>(small(rng));
  for (float& v : B) v = static_cast<float>(small(rng));

  // Kernel-side staging: the weight slice walked by offset, B rows [n][k].
  std::vector<bits_t> slice(M * K), staged(N * pitch, 0);
  for (int64_t offset = 0; offset < M * K; ++offset) {
    const Coord from = mma::a_source_of<Shape>(offset, kKTiles);
    slice[offset] = static_cast<bits_t>(to_bits<Shape>(A[from.row * K + from.col]));
  }
  for (int n = 0; n < N; ++n) {
    for (int k = 0; k < K; ++k) staged[n * pitch + k] = static_cast<bits_t>(to_bits<Shape>(B[k * N + n]));
  }

  for (int m_tile = 0; m_tile < kMTiles; ++m_tile) {
    for (int n_tile = 0; n_tile < kNTiles; ++n_tile) {
      WarpRegisters w{};
      for (int k_tile = 0; k_tile < kKTiles; ++k_tile) {
        for (int lane = 0; lane < 32; ++lane) {
          mma::load_a_fragment<Shape>(slice.data(), m_tile, k_tile, kKTiles, lane, w.a[lane]);
          mma::load_b_fragment<Shape>(staged.data(), lane, k_tile * Shape::kK, n_tile * Shape::kN,
                                      pitch, w.b[lane]);
        }
        emulate(Base{}, w);
      }
      for (int lane = 0; lane < 32; ++lane) {
        mma::store_c_fragment<Shape>(C.data(), lane, m_tile * Shape::kM, n_tile * Shape::kN,
                                     out_pitch, w.c[lane], /*accumulate=*/false);
      }
    }
  }

  int wrong = 0;
  for (int n = 0; n < N; ++n) {
    for (int m = 0; m < M; ++m) {
      float expected = 0;
      for (int k = 0; k < K; ++k) expected += A[m * K + k] * B[k * N + n];
      if (C[n * out_pitch + m] != expected) {
        if (wrong < 5) {
          std::printf("D[m=%d][n=%d] = %g, expected %g\n", m, n, C[n * out_pitch + m], expected);
        }
        ++wrong;
      }
    }
  }
  return wrong;
}

// The same with an A of 8 real rows kept as half fragments
// (a_half_source_of / load_a_half_fragment): rows 8-15 of D must be zero.
template <class Shape, class Base>
int check_half_rows(unsigned seed) {
  using bits_t = typename mma::ElementBits<Shape>::type;
  constexpr int kKTiles = 3, M = 8, K = kKTiles * Shape::kK, N = Shape::kN;
  constexpr int pitch = K + 16 / Shape::kElementBytes, out_pitch = 16 + 4;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> small(-4, 4);
  std::vector<float> A(M * K), B(K * N), C(N * out_pitch, 0.0f);
  for (float& v : A) v = static_cast<float>(small(rng));
  for (float& v : B) v = static_cast<float>(small(rng));
  std::vector<bits_t> slice(M * K), staged(N * pitch, 0);
  for (int64_t offset = 0; offset < M * K; ++offset) {
    const Coord from = mma::a_half_source_of<Shape>(offset);
    if (from.row >= M) return 1000;  // a half fragment must hold rows 0-7 only
    slice[offset] = static_cast<bits_t>(to_bits<Shape>(A[from.row * K + from.col]));
  }
  for (int n = 0; n < N; ++n) {
    for (int k = 0; k < K; ++k) staged[n * pitch + k] = static_cast<bits_t>(to_bits<Shape>(B[k * N + n]));
  }
  WarpRegisters w{};
  for (int k_tile = 0; k_tile < kKTiles; ++k_tile) {
    for (int lane = 0; lane < 32; ++lane) {
      mma::load_a_half_fragment<Shape>(slice.data(), k_tile, lane, w.a[lane]);
      mma::load_b_fragment<Shape>(staged.data(), lane, k_tile * Shape::kK, 0, pitch, w.b[lane]);
    }
    emulate(Base{}, w);
  }
  for (int lane = 0; lane < 32; ++lane) {
    mma::store_c_fragment<Shape>(C.data(), lane, 0, 0, out_pitch, w.c[lane], false);
  }
  int wrong = 0;
  for (int n = 0; n < N; ++n) {
    for (int m = 0; m < 16; ++m) {
      float expected = 0;
      for (int k = 0; m < M && k < K; ++k) expected += A[m * K + k] * B[k * N + n];
      if (C[n * out_pitch + m] != expected) {
        if (wrong < 5) std::printf("half rows: D[m=%d][n=%d] = %g, expected %g\n", m, n, C[n * out_pitch + m], expected);
        ++wrong;
      }
    }
  }
  return wrong;
}

template <class Shape, class Base>
int run(const char* name) {
  int wrong = 0;
  for (unsigned seed = 1; seed <= 3; ++seed) {
    wrong += check_product<Shape, Base>(seed) + check_half_rows<Shape, Base>(seed);
  }
  std::printf("%s: %d wrong elements\n", name, wrong);
  return wrong;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s f16|tf32 none|PLANT\n", argv[0]);
    return 2;
  }
  const std::string shape = argv[1], plant = argv[2];
  int wrong = -1;
  if (shape == "f16" && plant == "none") wrong = run<Mma16x8x16, Mma16x8x16>("m16n8k16");
  if (shape == "f16" && plant == "a_row_half") wrong = run<PlantARowHalf, Mma16x8x16>(argv[2]);
  if (shape == "f16" && plant == "b_columns") wrong = run<PlantBColumns, Mma16x8x16>(argv[2]);
  if (shape == "f16" && plant == "c_quad_rows") wrong = run<PlantCQuadRows, Mma16x8x16>(argv[2]);
  if (shape == "tf32" && plant == "none") wrong = run<Mma16x8x8Tf32, Mma16x8x8Tf32>("m16n8k8.tf32");
  if (shape == "tf32" && plant == "a_order") wrong = run<PlantTf32AOrder, Mma16x8x8Tf32>(argv[2]);
  if (shape == "tf32" && plant == "b_half") wrong = run<PlantTf32BHalf, Mma16x8x8Tf32>(argv[2]);
  if (wrong < 0) {
    std::fprintf(stderr, "unknown shape/plant %s %s\n", argv[1], argv[2]);
    return 2;
  }
  return wrong == 0 ? 0 : 1;
}
