// Grid-wide barrier for kernels launched cooperatively (every CTA resident at
// once; see persistent_common.cuh for the launch procedure). A monotonic
// 64-bit counter, zeroed by the launcher before the launch (cudaMemsetAsync,
// so it can be graph-captured), is never reset: the k-th barrier waits until
// it reaches k * gridDim. Nothing resets it between barriers, which is what
// makes reset races (NVIDIA/cuml#458) impossible.
//
// Memory ordering: __syncthreads orders every thread's writes of this CTA
// before thread 0's release add; release is cumulative, so they become
// visible at gpu scope before the count does. The acquire load that sees the
// final count, then __syncthreads, makes every other CTA's writes visible to
// all of this CTA's threads.
//
// Every CTA must call it the same number of times (never inside a branch
// that differs between CTAs). The wait is bounded in time by the GPU's
// global nanosecond clock (%globaltimer, which keeps running while the
// context is time-sliced out, so a preempted run is not mistaken for a hung
// one). A CTA that waits longer than the limit raises the launch's abort
// word and writes the error code into host memory the next call reads
// (persistent_glue.cpp); every waiting CTA watches the abort word and leaves
// too. Nothing traps: the CUDA context survives, and the kernels poison their
// outputs with NaN on the way out.
#pragma once

#include <cstdint>

#include "params.h"  // GridBarrier

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

__device__ __forceinline__ unsigned int abort_load(const unsigned int* word) {
  unsigned int value;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(value) : "l"(word) : "memory");
  return value;
}

__device__ __forceinline__ void abort_raise(unsigned int* word) {
  asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(word), "r"(1u) : "memory");
}

__device__ __forceinline__ long long global_nanoseconds() {
  unsigned long long ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  return static_cast<long long>(ns);
}

// Barrier number `epoch` (1, 2, ...) of this launch. Returns false when the
// launch was aborted (here or by another CTA): the caller then leaves its
// time loop, every thread of the CTA alike.
__device__ __forceinline__ bool grid_barrier(const GridBarrier& b, unsigned long long epoch) {
  __shared__ int aborted;
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    counter_add_release(b.counter, 1);
    const unsigned long long target = epoch * gridDim.x * gridDim.y * gridDim.z;
    const long long start = global_nanoseconds();
    bool stop = false;
    while (counter_load_acquire(b.counter) < target) {
      if (abort_load(b.abort_word) != 0) {
        stop = true;
        break;
      }
      if (global_nanoseconds() - start >= b.spin_limit_ns) {
        abort_raise(b.abort_word);
        *reinterpret_cast<volatile int*>(b.error_flag) = b.error_code;
        __threadfence_system();
        stop = true;
        break;
      }
    }
    // A CTA that gave up after adding its count lets the others pass this
    // barrier; they leave here instead of at the next one.
    aborted = stop || abort_load(b.abort_word) != 0;
  }
  __syncthreads();
  return aborted == 0;
}

}  // namespace cuda
}  // namespace rnnkernels
