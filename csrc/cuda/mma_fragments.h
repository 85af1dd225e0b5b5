// Which lane of a warp holds which element of the operands of the two
// warp-level tensor-core instructions the persistent kernels issue, and the
// per-lane code that moves elements between matrices and fragments:
//   mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32  (Mma16x8x16)
//   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32              (Mma16x8x8Tf32)
// D (16 x 8) = A (16 x K) * B (K x 8) + C, per warp, fp32 accumulators.
//
// The kernels (slice_product.cuh) build their fragments and scatter their
// accumulators only through the functions below; tests/test_mma_fragments.py
// compiles this header with g++, runs the same functions for 32 simulated
// lanes around an mma emulator written from the PTX ISA's fragment tables,
// and checks the result against a plain matrix product. No CUDA header here:
// under nvcc the functions are __host__ __device__, under g++ plain inline.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RK_FRAGMENT_FN __host__ __device__ __forceinline__
#else
#define RK_FRAGMENT_FN inline
#endif
// Unrolled in device code only (the host compiler of nvcc's host pass and
// g++ do not know the pragma).
#if defined(__CUDA_ARCH__)
#define RK_FRAGMENT_UNROLL _Pragma("unroll")
#else
#define RK_FRAGMENT_UNROLL
#endif

namespace rnnkernels {
namespace cuda {
namespace mma {

// A position inside one operand tile: row and column of that operand
// (A: row in M, col in K; B: row in K, col in N; C/D: row in M, col in N).
struct Coord {
  int row;
  int col;
};

// m16n8k16 with 16-bit inputs (f16 and bf16 share the layout). Per lane:
// A 8 elements in 4 32-bit registers, B 4 in 2, C/D 4 fp32.
struct Mma16x8x16 {
  static constexpr int kM = 16, kN = 8, kK = 16;
  static constexpr int kAElements = 8, kBElements = 4, kCElements = 4;
  static constexpr int kElementBytes = 2;

  RK_FRAGMENT_FN static Coord a(int lane, int i) {
    const int group = lane >> 2, quad = lane & 3;
    return {group + 8 * ((i >> 1) & 1), 2 * quad + (i & 1) + 8 * (i >> 2)};
  }
  RK_FRAGMENT_FN static Coord b(int lane, int i) {
    const int group = lane >> 2, quad = lane & 3;
    return {2 * quad + (i & 1) + 8 * (i >> 1), group};
  }
  RK_FRAGMENT_FN static Coord c(int lane, int i) {
    const int group = lane >> 2, quad = lane & 3;
    return {group + 8 * (i >> 1), 2 * quad + (i & 1)};
  }
};

// m16n8k8 with tf32 inputs (fp32 bit patterns, low 13 mantissa bits zero).
// Per lane: A 4 elements, B 2, C/D 4 fp32; one element per 32-bit register.
struct Mma16x8x8Tf32 {
  static constexpr int kM = 16, kN = 8, kK = 8;
  static constexpr int kAElements = 4, kBElements = 2, kCElements = 4;
  static constexpr int kElementBytes = 4;

  RK_FRAGMENT_FN static Coord a(int lane, int i) {
    const int group = lane >> 2, quad = lane & 3;
    return {group + 8 * (i & 1), quad + 4 * (i >> 1)};
  }
  RK_FRAGMENT_FN static Coord b(int lane, int i) {
    const int group = lane >> 2, quad = lane & 3;
    return {quad + 4 * i, group};
  }
  RK_FRAGMENT_FN static Coord c(int lane, int i) {
    const int group = lane >> 2, quad = lane & 3;
    return {group + 8 * (i >> 1), 2 * quad + (i & 1)};
  }
};

// Raw element storage: 16-bit patterns for f16/bf16, 32-bit for tf32.
template <class Shape>
struct ElementBits {
  using type = uint16_t;
};
template <>
struct ElementBits<Mma16x8x8Tf32> {
  using type = uint32_t;
};

// Registers of one lane's A fragment: 4 x 32 bits for both shapes.
constexpr int kARegisters = 4;

// ------------------------------------------------------- A: fragment-native
// The CTA's weight slice A [m_tiles*16, k_tiles*kK] lives in shared memory
// permuted so that lane `lane`'s A fragment of tile (m_tile, k_tile) is 16
// contiguous bytes: one 128-bit load per fragment, the warp's 32 loads one
// contiguous 512-byte run (no bank conflicts).

// Offset, in elements, of element i of lane's fragment of tile (m_tile, k_tile).
template <class Shape>
RK_FRAGMENT_FN int64_t a_fragment_offset(int m_tile, int k_tile, int k_tiles, int lane, int i) {
  return ((static_cast<int64_t>(m_tile) * k_tiles + k_tile) * 32 + lane) * Shape::kAElements + i;
}

// Where the element stored at `offset` of the permuted slice comes from: its
// (row, col) in A. The staging loop walks offsets and fetches A(row, col).
template <class Shape>
RK_FRAGMENT_FN Coord a_source_of(int64_t offset, int k_tiles) {
  const int i = static_cast<int>(offset % Shape::kAElements);
  const int64_t fragment = offset / Shape::kAElements;
  const int lane = static_cast<int>(fragment % 32);
  const int64_t tile = fragment / 32;
  const int k_tile = static_cast<int>(tile % k_tiles);
  const int m_tile = static_cast<int>(tile / k_tiles);
  const Coord in_tile = Shape::a(lane, i);
  return {m_tile * Shape::kM + in_tile.row, k_tile * Shape::kK + in_tile.col};
}

// Loads lane's A fragment of tile (m_tile, k_tile) from the permuted slice.
template <class Shape>
RK_FRAGMENT_FN void load_a_fragment(const typename ElementBits<Shape>::type* slice, int m_tile,
                                    int k_tile, int k_tiles, int lane, uint32_t regs[kARegisters]) {
  const auto* p = slice + a_fragment_offset<Shape>(m_tile, k_tile, k_tiles, lane, 0);
#if defined(__CUDA_ARCH__)
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  regs[0] = v.x;
  regs[1] = v.y;
  regs[2] = v.z;
  regs[3] = v.w;
#else
  std::memcpy(regs, p, 16);
#endif
}

// A slice of at most 8 real rows (the last 8 of the 16-row tile zero) keeps
// only the two registers that hold rows 0-7 (registers 0 and 2 of both
// shapes): 8 bytes per lane and k-tile, half the shared memory.
template <class Shape>
RK_FRAGMENT_FN int64_t a_half_offset(int k_tile, int lane, int e) {
  return (static_cast<int64_t>(k_tile) * 32 + lane) * (Shape::kAElements / 2) + e;
}

template <class Shape>
RK_FRAGMENT_FN Coord a_half_source_of(int64_t offset) {
  constexpr int kHalf = Shape::kAElements / 2, kPerRegister = Shape::kAElements / kARegisters;
  const int e = static_cast<int>(offset % kHalf);
  const int64_t fragment = offset / kHalf;
  const int lane = static_cast<int>(fragment % 32);
  const int k_tile = static_cast<int>(fragment / 32);
  const int full_register = 2 * (e / kPerRegister);
  const Coord in_tile = Shape::a(lane, full_register * kPerRegister + e % kPerRegister);
  return {in_tile.row, k_tile * Shape::kK + in_tile.col};
}

template <class Shape>
RK_FRAGMENT_FN void load_a_half_fragment(const typename ElementBits<Shape>::type* slice, int k_tile,
                                         int lane, uint32_t regs[kARegisters]) {
  const auto* p = slice + a_half_offset<Shape>(k_tile, lane, 0);
#if defined(__CUDA_ARCH__)
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  regs[0] = v.x;
  regs[2] = v.y;
#else
  uint32_t words[2];
  std::memcpy(words, p, 8);
  regs[0] = words[0];
  regs[2] = words[1];
#endif
  regs[1] = 0;
  regs[3] = 0;
}

// ----------------------------------------------- B: staged rows [n][k]
// The right-hand operand (h_{t-1} or dG_{t+1}) is staged in shared memory as
// rows of N, each `pitch` elements long, k contiguous: B(k, n) =
// staged[n * pitch + k]. For 16-bit inputs, elements 2r and 2r+1 of a lane's
// B fragment are neighbours in k, so register r is one 32-bit load.

template <class Shape>
RK_FRAGMENT_FN int64_t b_offset(int lane, int i, int k_base, int n_base, int pitch) {
  const Coord in_tile = Shape::b(lane, i);
  return static_cast<int64_t>(n_base + in_tile.col) * pitch + k_base + in_tile.row;
}

// Loads lane's B fragment (kBElements elements) of the k16/k8 x n8 tile at
// (k_base, n_base): 2 registers for both shapes.
template <class Shape>
RK_FRAGMENT_FN void load_b_fragment(const typename ElementBits<Shape>::type* staged, int lane,
                                    int k_base, int n_base, int pitch, uint32_t regs[2]) {
  constexpr int kPerRegister = Shape::kBElements / 2;  // 2 for 16-bit, 1 for tf32
RK_FRAGMENT_UNROLL
  for (int r = 0; r < 2; ++r) {
    const auto* p = staged + b_offset<Shape>(lane, kPerRegister * r, k_base, n_base, pitch);
#if defined(__CUDA_ARCH__)
    regs[r] = *reinterpret_cast<const uint32_t*>(p);
#else
    std::memcpy(&regs[r], p, 4);
#endif
  }
}

// ------------------------------------------- C/D: into rows [n][m] of fp32
// Accumulators go to out[n * out_pitch + m]: the pointwise step reads all
// gate rows of one batch row together.
template <class Shape>
RK_FRAGMENT_FN int64_t c_offset(int lane, int i, int m_base, int n_base, int out_pitch) {
  const Coord in_tile = Shape::c(lane, i);
  return static_cast<int64_t>(n_base + in_tile.col) * out_pitch + m_base + in_tile.row;
}

// out (+)= lane's accumulators of tile (m_base, n_base).
template <class Shape>
RK_FRAGMENT_FN void store_c_fragment(float* out, int lane, int m_base, int n_base, int out_pitch,
                                     const float acc[4], bool accumulate) {
RK_FRAGMENT_UNROLL
  for (int i = 0; i < Shape::kCElements; ++i) {
    float& slot = out[c_offset<Shape>(lane, i, m_base, n_base, out_pitch)];
    slot = accumulate ? slot + acc[i] : acc[i];
  }
}

}  // namespace mma
}  // namespace cuda
}  // namespace rnnkernels
