// Device helpers shared by the step kernels: conversions between storage
// and accumulation types, the variable-length row test, and the 1-D launch
// of an elementwise kernel over B x W elements.
#pragma once

#include <algorithm>
#include <cstdint>

#include "params.h"

namespace rnnkernels {
namespace cuda {

template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(float x) { return x; }
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(double x) { return x; }
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(__half x) { return __half2float(x); }
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

// Rounds an acc_t value to the storage type (round to nearest even).
template <typename scalar_t>
struct Store {
  template <typename acc_t>
  __device__ __forceinline__ static scalar_t from(acc_t x) { return static_cast<scalar_t>(x); }
};
template <>
struct Store<__half> {
  __device__ __forceinline__ static __half from(float x) { return __float2half_rn(x); }
};
template <>
struct Store<__nv_bfloat16> {
  __device__ __forceinline__ static __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ scalar_t store(acc_t x) { return Store<scalar_t>::from(x); }

__device__ __forceinline__ bool row_active(const RowLengths& rows, int64_t b) {
  return rows.lengths == nullptr || rows.step < rows.lengths[b];
}

// Elementwise kernels walk their elements with a grid-stride loop, so the
// grid can be capped: any B x W is covered by at most kMaxBlocks blocks.
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

inline unsigned int elementwise_blocks(int64_t elements) {
  return static_cast<unsigned int>(std::min<int64_t>((elements + kThreads - 1) / kThreads, kMaxBlocks));
}

// Launches an elementwise kernel over `elements` (B x W) on `stream` and
// returns the launch's error; an empty problem launches nothing, since a
// grid of zero blocks is itself a launch error.
template <typename Params>
cudaError_t launch_elementwise(void (*kernel)(Params), const Params& p, int64_t elements,
                               cudaStream_t stream) {
  if (elements == 0) {
    return cudaSuccess;
  }
  kernel<<<elementwise_blocks(elements), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

#define RK_GRID_STRIDE_LOOP(index, count)                                                   \
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;        \
       index < (count); index += static_cast<int64_t>(gridDim.x) * blockDim.x)

}  // namespace cuda
}  // namespace rnnkernels
