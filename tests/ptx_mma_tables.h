// The PTX ISA's fragment tables of the two mma.sync shapes the CUDA kernels
// use, written from the ISA ("Matrix Fragments for mma.m16n8k16 with floating
// point type", "... for mma.m16n8k8" with .tf32), independent of
// csrc/cuda/mma_fragments.h, which is what they check. Shared by the host
// check of the fragment maps (mma_fragment_check.cpp) and the CPU emulator of
// the persistent kernels (persistent_emulator/emulator.cpp).
#pragma once

#include <cstdint>
#include <cstring>

namespace ptx_tables {

struct RowCol {
  int row;
  int col;
};

// m16n8k16 .f16/.bf16: a0..a7 in four .f16x2 registers (low half first),
// b0..b3 in two.
inline RowCol a_k16(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  return {(i < 2 || (4 <= i && i < 6)) ? group : group + 8, quad * 2 + (i & 1) + (i < 4 ? 0 : 8)};
}
inline RowCol b_k16(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  return {quad * 2 + (i & 1) + (i < 2 ? 0 : 8), group};
}
// m16n8k8 .tf32: a0..a3 and b0..b1, one per .b32 register.
inline RowCol a_k8_tf32(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  return {(i == 0 || i == 2) ? group : group + 8, (i == 0 || i == 1) ? quad : quad + 4};
}
inline RowCol b_k8_tf32(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  return {i == 0 ? quad : quad + 4, group};
}
// c0..c3 / d0..d3 (fp32), the same for both shapes.
inline RowCol c(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  return {i < 2 ? group : group + 8, quad * 2 + (i & 1)};
}

inline float bf16_value(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &word, 4);
  return f;
}
inline float f32_value(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A (16 x K) and B (K x 8) of one warp's mma, gathered from the 32 lanes'
// registers through the tables; value16 decodes a 16-bit element.
template <class Value16>
void gather(bool tf32, const uint32_t a[32][4], const uint32_t b[32][2], Value16 value16, float A[16][16],
            float B[16][8]) {
  for (int lane = 0; lane < 32; ++lane) {
    if (tf32) {
      for (int i = 0; i < 4; ++i) {
        const RowCol at = a_k8_tf32(lane, i);
        A[at.row][at.col] = f32_value(a[lane][i]);
      }
      for (int i = 0; i < 2; ++i) {
        const RowCol at = b_k8_tf32(lane, i);
        B[at.row][at.col] = f32_value(b[lane][i]);
      }
    } else {
      auto half = [](uint32_t reg, int i) { return static_cast<uint16_t>(i % 2 == 0 ? reg & 0xffffu : reg >> 16); };
      for (int i = 0; i < 8; ++i) {
        const RowCol at = a_k16(lane, i);
        A[at.row][at.col] = value16(half(a[lane][i / 2], i));
      }
      for (int i = 0; i < 4; ++i) {
        const RowCol at = b_k16(lane, i);
        B[at.row][at.col] = value16(half(b[lane][i / 2], i));
      }
    }
  }
}

// d = A B + c for one lane's four accumulators.
inline void lane_result(const float A[16][16], const float B[16][8], int k, int lane, const float c_in[4],
                        float d[4]) {
  for (int i = 0; i < 4; ++i) {
    const RowCol at = c(lane, i);
    float sum = c_in[i];
    for (int j = 0; j < k; ++j) sum += A[at.row][j] * B[j][at.col];
    d[i] = sum;
  }
}

}  // namespace ptx_tables
