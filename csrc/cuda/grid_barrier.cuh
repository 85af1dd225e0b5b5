// Grid-wide barrier for kernels launched cooperatively (every CTA resident at
// once; see barrier_floor.cu for the launch procedure). A monotonic 64-bit
// counter, zeroed by the launcher before the launch (cudaMemsetAsync, so it
// can be graph-captured), is never reset: the k-th barrier waits until it
// reaches k * gridDim. Nothing resets it between barriers, which is what
// makes reset races (NVIDIA/cuml#458) impossible.
//
// Memory ordering: __syncthreads orders every thread's writes of this CTA
// before thread 0's release add; release is cumulative, so they become
// visible at gpu scope before the count does. The acquire load that sees the
// final count, then __syncthreads, makes every other CTA's writes visible to
// all of this CTA's threads.
//
// Every CTA must call it the same number of times (never inside a branch
// that differs between CTAs). The spin is bounded: a wait longer than
// spin_limit_cycles traps (the launch then fails with an error the host
// checks) instead of hanging the GPU.
#pragma once

#include <cstdint>

namespace rnnkernels {
namespace cuda {

__device__ __forceinline__ void counter_add_release(unsigned long long* counter,
                                                    unsigned long long value) {
  asm volatile("red.release.gpu.global.add.u64 [%0], %1;" ::"l"(counter), "l"(value) : "memory");
}

__device__ __forceinline__ unsigned long long counter_load_acquire(const unsigned long long* counter) {
  unsigned long long value;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(value) : "l"(counter) : "memory");
  return value;
}

// Barrier number `epoch` (1, 2, ...) of this launch.
__device__ __forceinline__ void grid_barrier(unsigned long long* counter, unsigned long long epoch,
                                             long long spin_limit_cycles) {
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    counter_add_release(counter, 1);
    const unsigned long long target = epoch * gridDim.x * gridDim.y * gridDim.z;
    const long long start = clock64();
    while (counter_load_acquire(counter) < target) {
      if (clock64() - start > spin_limit_cycles) {
        __trap();
      }
    }
  }
  __syncthreads();
}

}  // namespace cuda
}  // namespace rnnkernels
