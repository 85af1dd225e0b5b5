// One step's product of a persistent kernel, out[n][m] = sum_k A[m][k] B[n][k]
// (the layout and its sizes: persistent_plan.h), on the device:
//   - stage_slice: the CTA's A (its W_hh slice) into shared memory once, in
//     the fragment-native order of mma_fragments.h for tensor cores or
//     row-major for CUDA cores; W is read with streaming loads (ld.global.cs),
//     which the compile gate's lint expects only before the time loop;
//   - step_product: B (h_{t-1} or dG_{t+1}, written by other CTAs before the
//     grid barrier) staged into shared memory with 16-byte ld.global.cg loads
//     (L2, never a stale L1 line, never the non-coherent .nc path), all of K
//     at once or in double-buffered K-chunks, then multiplied into fp32 (fp64)
//     partial sums, one set per K-split, that the pointwise step adds up.
// Engines: mma.sync m16n8k16 (f16, bf16), m16n8k8 (tf32), or FMA (fp32, fp64).
#pragma once

#include <cstdint>

#include "device_common.cuh"
#include "mma_fragments.h"
#include "persistent_plan.h"

namespace rnnkernels {
namespace cuda {

// ----------------------------------------------------------------- engines
template <Engine E>
struct EngineTraits;

// bits_t: an element as kept in shared memory; storage_t: as in global memory.
template <>
struct EngineTraits<Engine::kMmaBf16> {
  using storage_t = __nv_bfloat16;
  using bits_t = uint16_t;
  using acc_t = float;
  using Shape = mma::Mma16x8x16;
  __device__ __forceinline__ static bits_t bits(storage_t v) { return __bfloat16_as_ushort(v); }
};
template <>
struct EngineTraits<Engine::kMmaF16> {
  using storage_t = __half;
  using bits_t = uint16_t;
  using acc_t = float;
  using Shape = mma::Mma16x8x16;
  __device__ __forceinline__ static bits_t bits(storage_t v) { return __half_as_ushort(v); }
};
template <>
struct EngineTraits<Engine::kMmaTf32> {
  using storage_t = float;
  using bits_t = uint32_t;
  using acc_t = float;
  using Shape = mma::Mma16x8x8Tf32;
  // fp32 rounded to tf32 (round to nearest, ties away), as cuBLAS' TF32 mode feeds it.
  // cvt to .tf32 needs sm_80, like the mma that consumes it; below sm_80 (a
  // build for an older GPU, where the plan refuses this engine) it must
  // still assemble.
  __device__ __forceinline__ static bits_t bits(storage_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t out;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(out) : "f"(v));
    return out;
#else
    return __float_as_uint(v);
#endif
  }
};
template <>
struct EngineTraits<Engine::kFmaF32> {
  using storage_t = float;
  using bits_t = float;
  using acc_t = float;
  __device__ __forceinline__ static bits_t bits(storage_t v) { return v; }
};
template <>
struct EngineTraits<Engine::kFmaF64> {
  using storage_t = double;
  using bits_t = double;
  using acc_t = double;
  __device__ __forceinline__ static bits_t bits(storage_t v) { return v; }
};

template <Engine E>
__device__ __forceinline__ void mma_tile(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (E == Engine::kMmaBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (E == Engine::kMmaF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  // Tensor-core engines are never planned below sm_80 (persistent_common.cuh).
  (void)d, (void)a, (void)b;
#endif
}

// --------------------------------------------------------- the A slice
// A(row, col) comes from `source(row, col)`, called only for real rows and
// columns (row < m_rows, col < k_real); padding is zero.
template <Engine E, typename Source>
__device__ void stage_slice(typename EngineTraits<E>::bits_t* slice, const SliceLayout& l,
                            int64_t k_real, const Source& source) {
  using T = EngineTraits<E>;
  const int64_t elements = int64_t{l.half_rows ? 8 : l.m_pad} * l.k_pad;
  for (int64_t e = threadIdx.x; e < elements; e += blockDim.x) {
    int64_t row, col;
    if constexpr (engine_is_mma_v<E>) {
      const mma::Coord c = l.half_rows ? mma::a_half_source_of<typename T::Shape>(e)
                                       : mma::a_source_of<typename T::Shape>(e, static_cast<int>(l.k_pad / T::Shape::kK));
      row = c.row;
      col = c.col;
    } else {
      row = e / l.k_pad;
      col = e - row * l.k_pad;
    }
    const bool real = row < l.m_rows && col < k_real;
    slice[e] = T::bits(real ? source(row, col) : store<typename T::storage_t>(typename T::acc_t(0)));
  }
}

// ------------------------------------------------------------ staging B
// B rows n in [0, rows) of `cols` elements, row stride `stride`, from
// global memory that other CTAs wrote before the last grid barrier.
template <Engine E>
struct StagingSource {
  const typename EngineTraits<E>::storage_t* base;
  int64_t stride, rows, cols;
  bool vectors;  // 16-byte loads allowed: base and stride aligned
};

template <Engine E>
__device__ __forceinline__ StagingSource<E> staging_source(const typename EngineTraits<E>::storage_t* base,
                                                           int64_t stride, int64_t rows, int64_t cols) {
  constexpr int kVector = 16 / sizeof(typename EngineTraits<E>::storage_t);
  const bool aligned = reinterpret_cast<uintptr_t>(base) % 16 == 0 && stride % kVector == 0;
  return StagingSource<E>{base, stride, rows, cols, aligned};
}

// 16 bytes of row n from column k: one vector load, or element loads with
// zeros beyond the matrix (rows >= B, columns >= K).
template <Engine E>
__device__ __forceinline__ uint4 load_vector(const StagingSource<E>& s, int64_t n, int64_t k) {
  using storage_t = typename EngineTraits<E>::storage_t;
  constexpr int kVector = 16 / sizeof(storage_t);
  const storage_t* p = s.base + n * s.stride + k;
  if (n < s.rows && k + kVector <= s.cols && s.vectors) {
    return __ldcg(reinterpret_cast<const uint4*>(p));
  }
  uint32_t words[4] = {0, 0, 0, 0};
  const bool row_in = n < s.rows;
#pragma unroll
  for (int e = 0; e < kVector; ++e) {
    const bool in = row_in && k + e < s.cols;
    if constexpr (sizeof(storage_t) == 2) {
      const uint16_t bits = in ? EngineTraits<E>::bits(__ldcg(p + e)) : uint16_t(0);
      words[e / 2] |= static_cast<uint32_t>(bits) << (16 * (e % 2));
    } else if constexpr (sizeof(storage_t) == 4) {
      words[e] = in ? __float_as_uint(__ldcg(p + e)) : 0u;
    } else {
      const unsigned long long bits = in ? __double_as_longlong(__ldcg(p + e)) : 0ull;
      words[2 * e] = static_cast<uint32_t>(bits);
      words[2 * e + 1] = static_cast<uint32_t>(bits >> 32);
    }
  }
  return make_uint4(words[0], words[1], words[2], words[3]);
}

// Writes a loaded vector into the staged rows, as the engine keeps them
// (tf32: rounded).
template <Engine E>
__device__ __forceinline__ void store_vector(typename EngineTraits<E>::bits_t* staged, int pitch,
                                             int n, int k_local, uint4 v) {
  if constexpr (E == Engine::kMmaTf32) {
    v = make_uint4(EngineTraits<E>::bits(__uint_as_float(v.x)), EngineTraits<E>::bits(__uint_as_float(v.y)),
                   EngineTraits<E>::bits(__uint_as_float(v.z)), EngineTraits<E>::bits(__uint_as_float(v.w)));
  }
  *reinterpret_cast<uint4*>(staged + static_cast<int64_t>(n) * pitch + k_local) = v;
}

// One batch of staging slots: slot s covers row s / per_row, 16 bytes at
// column k0 + (s % per_row) * kVector. Each thread owns slots
// first + threadIdx.x + r * blockDim.x, r < kStagingVectorsPerThread.
template <Engine E>
struct StagingBatch {
  uint4 data[kStagingVectorsPerThread];

  __device__ __forceinline__ void load(const StagingSource<E>& s, int64_t k0, int per_row, int slots,
                                       int first) {
    constexpr int kVector = 16 / sizeof(typename EngineTraits<E>::storage_t);
#pragma unroll
    for (int r = 0; r < kStagingVectorsPerThread; ++r) {
      const int slot = first + static_cast<int>(threadIdx.x) + r * static_cast<int>(blockDim.x);
      if (slot < slots) {
        const int n = slot / per_row;
        data[r] = load_vector<E>(s, n, k0 + static_cast<int64_t>(slot - n * per_row) * kVector);
      }
    }
  }

  __device__ __forceinline__ void store(typename EngineTraits<E>::bits_t* staged, int pitch, int per_row,
                                        int slots, int first) const {
    constexpr int kVector = 16 / sizeof(typename EngineTraits<E>::storage_t);
#pragma unroll
    for (int r = 0; r < kStagingVectorsPerThread; ++r) {
      const int slot = first + static_cast<int>(threadIdx.x) + r * static_cast<int>(blockDim.x);
      if (slot < slots) {
        const int n = slot / per_row;
        store_vector<E>(staged, pitch, n, (slot - n * per_row) * kVector, data[r]);
      }
    }
  }
};

// ----------------------------------------------------------- the product
// Tensor cores: warp w takes items w, w + 8, ...; item = (k-split, m-tile,
// n-tile). Its k-tiles of this chunk run on two accumulator chains (ILP).
template <Engine E>
__device__ __forceinline__ void multiply_chunk_mma(const typename EngineTraits<E>::bits_t* slice,
                                                   const typename EngineTraits<E>::bits_t* staged,
                                                   float* partials, const SliceLayout& l,
                                                   int64_t chunk_k0, int chunk_k, bool first_chunk) {
  using Shape = typename EngineTraits<E>::Shape;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int m_tiles = l.m_pad / 16, n_tiles = l.n_pad / 8;
  const int k_tiles_total = static_cast<int>(l.k_pad / Shape::kK);
  const int k_tiles = chunk_k / Shape::kK;
  const int per_split = (k_tiles + l.k_splits - 1) / l.k_splits;
  const int first_k_tile = static_cast<int>(chunk_k0 / Shape::kK);
  const int items = m_tiles * n_tiles * l.k_splits;
  for (int item = warp; item < items; item += kPersistentWarps) {
    const int split = item % l.k_splits, tile = item / l.k_splits;
    const int m_tile = tile % m_tiles, n_tile = tile / m_tiles;
    const int begin = split * per_split;
    const int end = begin + per_split < k_tiles ? begin + per_split : k_tiles;
    float chains[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    int kt = begin;
    auto load_a = [&](int k_tile, uint32_t a[mma::kARegisters]) {
      if (l.half_rows) {
        mma::load_a_half_fragment<Shape>(slice, k_tile, lane, a);
      } else {
        mma::load_a_fragment<Shape>(slice, m_tile, k_tile, k_tiles_total, lane, a);
      }
    };
    for (; kt + 1 < end; kt += 2) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        uint32_t a[mma::kARegisters], b[2];
        load_a(first_k_tile + kt + c, a);
        mma::load_b_fragment<Shape>(staged, lane, (kt + c) * Shape::kK, n_tile * Shape::kN,
                                    l.stage_pitch, b);
        mma_tile<E>(chains[c], a, b);
      }
    }
    if (kt < end) {
      uint32_t a[mma::kARegisters], b[2];
      load_a(first_k_tile + kt, a);
      mma::load_b_fragment<Shape>(staged, lane, kt * Shape::kK, n_tile * Shape::kN, l.stage_pitch, b);
      mma_tile<E>(chains[0], a, b);
    }
    float acc[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] = chains[0][i] + chains[1][i];
    mma::store_c_fragment<Shape>(partials + static_cast<int64_t>(split) * l.n_pad * l.out_pitch, lane,
                                 m_tile * Shape::kM, n_tile * Shape::kN, l.out_pitch, acc,
                                 !first_chunk);
  }
}

// CUDA cores: warp w takes items (row m, group of 8 batch rows); its lanes
// split the chunk's K and meet in a butterfly reduction.
template <Engine E>
__device__ __forceinline__ void multiply_chunk_fma(const typename EngineTraits<E>::bits_t* slice,
                                                   const typename EngineTraits<E>::bits_t* staged,
                                                   typename EngineTraits<E>::acc_t* partials,
                                                   const SliceLayout& l, int64_t chunk_k0, int chunk_k,
                                                   bool first_chunk) {
  using acc_t = typename EngineTraits<E>::acc_t;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int groups = l.n_pad / 8;
  const int items = l.m_rows * groups;
  for (int item = warp; item < items; item += kPersistentWarps) {
    const int m = item % l.m_rows, group = item / l.m_rows;
    const auto* a_row = slice + m * l.k_pad + chunk_k0;
    const auto* b_rows = staged + static_cast<int64_t>(group) * 8 * l.stage_pitch;
    acc_t acc[8] = {};
    for (int k = lane; k < chunk_k; k += 32) {
      const acc_t a = a_row[k];
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += a * b_rows[j * l.stage_pitch + k];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], offset);
      }
    }
    if (lane < 8) {
      acc_t mine = acc[0];
#pragma unroll
      for (int j = 1; j < 8; ++j) mine = lane == j ? acc[j] : mine;
      acc_t& slot = partials[static_cast<int64_t>(group * 8 + lane) * l.out_pitch + m];
      slot = first_chunk ? mine : slot + mine;
    }
  }
}

template <Engine E>
__device__ __forceinline__ void multiply_chunk(const typename EngineTraits<E>::bits_t* slice,
                                               const typename EngineTraits<E>::bits_t* staged,
                                               typename EngineTraits<E>::acc_t* partials,
                                               const SliceLayout& l, int64_t chunk_k0, int chunk_k,
                                               bool first_chunk) {
  if constexpr (engine_is_mma_v<E>) {
    multiply_chunk_mma<E>(slice, staged, partials, l, chunk_k0, chunk_k, first_chunk);
  } else {
    multiply_chunk_fma<E>(slice, staged, partials, l, chunk_k0, chunk_k, first_chunk);
  }
}

// partials[split][n][m] = the product of the CTA's slice with all of B's K.
// Ends with __syncthreads: the partials are then readable by every thread.
template <Engine E>
__device__ void step_product(const typename EngineTraits<E>::bits_t* slice,
                             typename EngineTraits<E>::bits_t* staged,
                             typename EngineTraits<E>::acc_t* partials, const SliceLayout& l,
                             const StagingSource<E>& source) {
  constexpr int kVector = 16 / sizeof(typename EngineTraits<E>::storage_t);
  constexpr int kBatch = kPersistentThreads * kStagingVectorsPerThread;
  StagingBatch<E> batch;
  if (l.chunks == 1) {
    // All of K: batches of loads in flight, each stored before the next.
    const int per_row = static_cast<int>(l.k_pad / kVector);
    const int slots = l.n_pad * per_row;
    for (int first = 0; first < slots; first += kBatch) {
      batch.load(source, 0, per_row, slots, first);
      batch.store(staged, l.stage_pitch, per_row, slots, first);
    }
    __syncthreads();
    multiply_chunk<E>(slice, staged, partials, l, 0, static_cast<int>(l.k_pad), true);
    __syncthreads();
    return;
  }
  // K-chunks, two buffers: chunk c + 1's loads are in flight while chunk c multiplies.
  auto chunk_length = [&](int c) {
    const int64_t rest = l.k_pad - int64_t{c} * l.k_chunk;
    return static_cast<int>(rest < l.k_chunk ? rest : l.k_chunk);
  };
  const int64_t buffer_elements = int64_t{l.n_pad} * l.stage_pitch;
  int per_row = chunk_length(0) / kVector;
  batch.load(source, 0, per_row, l.n_pad * per_row, 0);
  batch.store(staged, l.stage_pitch, per_row, l.n_pad * per_row, 0);
  __syncthreads();
  for (int c = 0; c < l.chunks; ++c) {
    const bool more = c + 1 < l.chunks;
    int next_per_row = 0;
    if (more) {
      next_per_row = chunk_length(c + 1) / kVector;
      batch.load(source, int64_t{c + 1} * l.k_chunk, next_per_row, l.n_pad * next_per_row, 0);
    }
    multiply_chunk<E>(slice, staged + (c % 2) * buffer_elements, partials, l, int64_t{c} * l.k_chunk,
                      chunk_length(c), c == 0);
    if (more) {
      batch.store(staged + ((c + 1) % 2) * buffer_elements, l.stage_pitch, next_per_row,
                  l.n_pad * next_per_row, 0);
    }
    __syncthreads();
  }
}

// Sum of the K-split partial sums of output (n, m).
template <Engine E>
__device__ __forceinline__ typename EngineTraits<E>::acc_t partial_sum(
    const typename EngineTraits<E>::acc_t* partials, const SliceLayout& l, int64_t n, int m) {
  typename EngineTraits<E>::acc_t sum = partials[n * l.out_pitch + m];
  for (int split = 1; split < l.k_splits; ++split) {
    sum += partials[(int64_t{split} * l.n_pad + n) * l.out_pitch + m];
  }
  return sum;
}

}  // namespace cuda
}  // namespace rnnkernels
