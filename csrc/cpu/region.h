// One parallel region per layer and direction: the recurrence loops run
// their whole time loop inside it, each thread owning a slice of the hidden
// units (so small batches parallelise too) and the threads meeting at one
// barrier per step.
//
// The barrier is OpenMP's: libgomp spins briefly (GOMP_SPINCOUNT) and then
// sleeps on a futex, so a thread whose partner was descheduled on a shared
// machine does not burn its core. The team is at most at::get_num_threads()
// threads, fewer when the slices would be too small to pay for a barrier.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace rnnkernels {

// Below this many units per thread a step's work is shorter than a barrier.
constexpr int64_t kMinUnitsPerThread = 8;

struct Slice {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

// Threads for a region over `units` hidden units: torch's setting, capped so
// that each thread has at least kMinUnitsPerThread units. 1 inside another
// parallel region (the nested one would not start threads anyway).
inline int region_threads(int64_t units) {
  if (at::in_parallel_region()) {
    return 1;
  }
  const int64_t by_work = std::max<int64_t>(1, units / kMinUnitsPerThread);
  return static_cast<int>(std::min<int64_t>(at::get_num_threads(), by_work));
}

// Thread `tid` of `threads`' share of [0, units): contiguous, boundaries on
// multiples of 16 (a cache line, an AVX-512 vector) where the sizes allow.
inline Slice slice_of(int64_t units, int tid, int threads) {
  int64_t per = (units + threads - 1) / threads;
  if (per >= 16) {
    per = (per + 15) / 16 * 16;
  }
  const int64_t begin = std::min<int64_t>(units, tid * per);
  return Slice{begin, std::min<int64_t>(units, begin + per)};
}

// Runs body(tid, threads) on a team of `threads` (the team may come out
// smaller: body gets the real size). body must not throw.
template <typename Body>
void run_region(int threads, const Body& body) {
#if defined(_OPENMP)
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    body(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  body(0, 1);
}

// The per-step barrier, called by every thread of the region's team (an
// orphaned barrier: outside a region it is a no-op).
inline void step_barrier() {
#if defined(_OPENMP)
#pragma omp barrier
#endif
}

}  // namespace rnnkernels
