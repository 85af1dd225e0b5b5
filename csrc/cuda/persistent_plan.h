// How a persistent launch is laid out: the grid, each CTA's slice of W_hh,
// and the shared-memory layout of one step's product (shared/notes/
// persistent-kernels.md sec. 2). Host-only and free of torch and CUDA
// headers: the glue calls it with the device's numbers, and the CPU tests
// (tests/test_cuda_compile.py) call it with an H100's to check the anchor
// shapes fit and to print the per-step estimate.
//
// Per step a CTA computes out[n][m] = sum_k A[m][k] * B[n][k] for its M rows:
//   forward   A = its G*U rows of W_hh (gate-major: m = g*U + j), B = h_{t-1},
//             K = H;
//   backward  A = its U columns of W_hh, transposed (m = j), B = dG_{t+1},
//             K = G*H.
// A stays in shared memory for the whole launch. B is staged in shared memory
// once per step, all of K when it fits ("whole"), else in K-chunks through
// two buffers, the next chunk's global loads in flight while the current one
// is multiplied. The product lands in fp32 (fp64) partial sums, one set per
// K-split, that the pointwise step adds up.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rnnkernels {
namespace cuda {

// What multiplies: tensor cores (mma.sync m16n8k16 for f16/bf16, m16n8k8 for
// tf32) or CUDA cores (fp32 IEEE, fp64).
enum class Engine { kMmaF16, kMmaBf16, kMmaTf32, kFmaF32, kFmaF64 };

constexpr int kPersistentThreads = 256;
constexpr int kPersistentWarps = kPersistentThreads / 32;
// 16-byte global loads each thread keeps in flight while staging B.
constexpr int kStagingVectorsPerThread = 8;
constexpr int64_t kStagingBatchBytes = int64_t{kPersistentThreads} * kStagingVectorsPerThread * 16;

constexpr bool engine_is_mma(Engine e) {
  return e == Engine::kMmaF16 || e == Engine::kMmaBf16 || e == Engine::kMmaTf32;
}
template <Engine E>
constexpr bool engine_is_mma_v = engine_is_mma(E);

// Bytes of one element as stored in global memory and in shared memory.
constexpr int engine_element_bytes(Engine e) {
  switch (e) {
    case Engine::kMmaF16:
    case Engine::kMmaBf16:
      return 2;
    case Engine::kMmaTf32:
    case Engine::kFmaF32:
      return 4;
    case Engine::kFmaF64:
      return 8;
  }
  return 0;
}

// Bytes of one accumulator (partial sums): fp64 for fp64, else fp32.
constexpr int engine_accumulator_bytes(Engine e) { return e == Engine::kFmaF64 ? 8 : 4; }

// K granularity: the instruction's k (16, 8), or one 16-byte vector for CUDA cores.
constexpr int engine_k_step(Engine e) {
  switch (e) {
    case Engine::kMmaF16:
    case Engine::kMmaBf16:
      return 16;
    case Engine::kMmaTf32:
      return 8;
    default:
      return 16 / engine_element_bytes(e);
  }
}

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

struct PlanRequest {
  Engine engine;
  int gates;           // G
  int64_t batch;       // B
  int64_t hidden;      // H
  bool backward;       // the backward's layout (columns of W_hh, K = G*H)
  int multiprocessors; // SMs of the device
  int64_t max_shared;  // opt-in shared memory per block, bytes
};

// The numbers a kernel receives (the plan minus what only the host needs).
struct SliceLayout {
  int m_rows, m_pad, n_pad, k_chunk, chunks, stage_pitch, k_splits, out_pitch;
  bool half_rows;  // tensor cores, at most 8 real rows: half fragments (mma_fragments.h)
  int64_t k_pad;
  int64_t weight_bytes, stage_bytes;  // offsets of the staged buffers and of the partials
};

struct PersistentPlan {
  int ctas;            // P = ceil(H / U)
  int units_per_cta;   // U
  int m_rows;          // real rows of A per CTA: G*U forward, U backward
  int m_pad;           // rows of A per CTA, padded to 16
  int64_t k_pad;       // K padded to the engine's k step
  int n_pad;           // B padded to 8
  int k_chunk;         // staged columns of B per chunk (k_pad: all at once)
  int chunks;          // ceil(k_pad / k_chunk)
  int stage_pitch;     // elements per staged row: k_chunk + 16 bytes of padding
  int k_splits;        // warps sharing one output tile's K range (partial sets)
  int out_pitch;       // accumulators per partial row: m_pad + 4 (bank spread)
  bool half_rows;      // tensor cores with m_rows <= 8: only rows 0-7 of the tile are stored
  size_t weight_bytes, stage_bytes, partial_bytes, shared_bytes;
  const char* refusal; // nullptr when the launch may go ahead

  SliceLayout layout() const {
    return SliceLayout{m_rows,      m_pad,    n_pad,     k_chunk,   chunks,
                       stage_pitch, k_splits, out_pitch, half_rows, k_pad,
                       static_cast<int64_t>(weight_bytes), static_cast<int64_t>(stage_bytes)};
  }
};

// Shared memory: [A slice][staged B, 1 or 2 buffers][partials]; each region
// starts 16-byte aligned.
inline PersistentPlan plan_persistent(const PlanRequest& r) {
  PersistentPlan p{};
  if (r.batch < 1 || r.hidden < 1) {
    p.refusal = "an empty batch or hidden size has nothing to run persistently";
    return p;
  }
  if (r.multiprocessors < 1) {
    p.refusal = "the device reports no multiprocessors";
    return p;
  }
  const int element = engine_element_bytes(r.engine);
  const int k_step = engine_k_step(r.engine);
  const int pad = 16 / element;
  const int64_t units = (r.hidden + r.multiprocessors - 1) / r.multiprocessors;
  if (units > (1 << 16) || r.batch > (1 << 16)) {
    p.refusal = "the CTAs' slices of W_hh do not fit in shared memory";
    return p;
  }
  p.units_per_cta = static_cast<int>(units);
  p.ctas = static_cast<int>((r.hidden + units - 1) / units);
  p.m_rows = r.backward ? p.units_per_cta : r.gates * p.units_per_cta;
  p.m_pad = static_cast<int>(round_up(p.m_rows, 16));
  p.k_pad = round_up(r.backward ? r.gates * r.hidden : r.hidden, k_step);
  p.n_pad = static_cast<int>(round_up(r.batch, 8));
  p.out_pitch = p.m_pad + 4;
  // A tile of 16 rows with at most 8 real ones keeps only its first 8.
  p.half_rows = engine_is_mma(r.engine) && p.m_rows <= 8;
  const int stored_rows = p.half_rows ? 8 : p.m_pad;
  p.weight_bytes = static_cast<size_t>(round_up(int64_t{stored_rows} * p.k_pad * element, 16));

  const int m_tiles = p.m_pad / 16, n_tiles = p.n_pad / 8;
  auto splits_for = [&](int64_t k_chunk) {
    if (!engine_is_mma(r.engine)) return 1;  // CUDA cores split K across a warp's lanes
    int splits = 1;
    while (splits * 2 * m_tiles * n_tiles <= kPersistentWarps && splits * 2 <= k_chunk / k_step) {
      splits *= 2;
    }
    return splits;
  };
  auto partials_for = [&](int splits) {
    return static_cast<size_t>(round_up(int64_t{splits} * p.n_pad * p.out_pitch *
                                            engine_accumulator_bytes(r.engine), 16));
  };

  // All of K at once when it fits beside the slice.
  const size_t whole_stage = static_cast<size_t>(int64_t{p.n_pad} * (p.k_pad + pad) * element);
  const int whole_splits = splits_for(p.k_pad);
  if (p.weight_bytes + whole_stage + partials_for(whole_splits) <= static_cast<size_t>(r.max_shared)) {
    p.k_chunk = static_cast<int>(p.k_pad);
    p.chunks = 1;
    p.stage_bytes = whole_stage;
    p.k_splits = whole_splits;
  } else {
    // K-chunks of one staging batch each, double-buffered.
    const int64_t chunk = kStagingBatchBytes / (int64_t{p.n_pad} * element) / k_step * k_step;
    if (chunk < k_step) {
      p.refusal = "the batch is too large to stage one K-chunk of it per step";
      return p;
    }
    p.k_chunk = static_cast<int>(chunk < p.k_pad ? chunk : p.k_pad);
    p.chunks = static_cast<int>((p.k_pad + p.k_chunk - 1) / p.k_chunk);
    p.stage_bytes = static_cast<size_t>(2 * int64_t{p.n_pad} * (p.k_chunk + pad) * element);
    p.k_splits = splits_for(p.k_chunk);
  }
  p.stage_pitch = p.k_chunk + pad;
  p.partial_bytes = partials_for(p.k_splits);
  p.shared_bytes = p.weight_bytes + p.stage_bytes + p.partial_bytes;
  if (p.shared_bytes > static_cast<size_t>(r.max_shared)) {
    p.refusal = "the CTAs' slices of W_hh do not fit in shared memory";
  }
  return p;
}

}  // namespace cuda
}  // namespace rnnkernels
