// The gate math of one batch row over a slice of n hidden units, as the
// parallel recurrence loops call it: every function of cell_math.h applied
// to n units at once, vectorised per instruction-set level.
//
// Layout: a thread's GEMM result `acc` holds its gate rows back to back
// ([G][n]); the shared tensors (xg, gates, dxg, ...) hold gate g of unit j at
// g * stride + j, with stride = H. Pointers point at the slice's first unit.
// A null optional output is skipped. This header includes no torch headers:
// the per-level translation units compile it under their own target.
#pragma once

#include <cstdint>

#include "isa.h"

namespace rnnkernels {

template <typename T>
struct LstmForwardRow {
  int64_t n, stride;
  const T* acc;  // [4][n]: h_{t-1} W_hh^T for the slice's i, f, g, o rows
  const T* xg;   // 4 gates at `stride`
  T* c;          // [n] cell state, updated in place
  T* gates;      // 4 gates at `stride`: the activations (backward's saved state)
  T* cells;      // [n] copy of the new c (optional)
  T* h;          // [n] o * tanh(c)
  T* h_copy;     // [n] second copy of h (optional: the recurrent state)
};

template <typename T>
struct LstmBackwardRow {
  int64_t n, stride;
  const T* gates;   // 4 activations at `stride`
  const T* c;       // [n] c_t
  const T* c_prev;  // [n] c_{t-1}
  const T* dh;      // [n] total gradient of the unprojected h_t
  T* dc;            // [n] gradient at c_t in, at c_{t-1} out
  T* dxg;           // 4 gate pre-activation gradients at `stride`
};

template <typename T>
struct GruForwardRow {
  int64_t n, stride;
  const T* acc;     // [3][n]: h_{t-1} W_hh^T for the slice's r, z, n rows
  const T* xg;      // 3 gates at `stride`
  const T* b_hn;    // [n] (optional)
  const T* h_prev;  // [n]
  T* gates;         // 3 activations at `stride`
  T* hn;            // [n] W_hn h + b_hn
  T* h;             // [n]
  T* h_copy;        // [n] (optional)
};

template <typename T>
struct GruBackwardRow {
  int64_t n, stride;
  const T* gates;   // 3 activations at `stride`
  const T* hn;      // [n]
  const T* h_prev;  // [n]
  const T* dh;      // [n] total gradient of h_t
  T* dxg;           // [dr, dz, dn] at `stride`
  T* drec;          // [dr, dz, dhn] at `stride`
  T* direct;        // [n] z * dh, the path to h_{t-1} that skips W_hh
};

template <typename T>
struct RnnForwardRow {
  int64_t n;
  const T* acc;  // [n]
  const T* xg;   // [n]
  T* h;          // [n]
  T* h_copy;     // [n] (optional)
};

template <typename T>
struct RnnBackwardRow {
  int64_t n;
  const T* h;   // [n] h_t
  const T* dh;  // [n]
  T* dxg;       // [n]
};

template <typename T>
struct PointwiseKernels {
  void (*lstm_forward)(const LstmForwardRow<T>&);
  void (*lstm_backward)(const LstmBackwardRow<T>&);
  void (*gru_forward)(const GruForwardRow<T>&);
  void (*gru_backward)(const GruBackwardRow<T>&);
  void (*rnn_tanh_forward)(const RnnForwardRow<T>&);
  void (*rnn_relu_forward)(const RnnForwardRow<T>&);
  void (*rnn_tanh_backward)(const RnnBackwardRow<T>&);
  void (*rnn_relu_backward)(const RnnBackwardRow<T>&);
  // p[0, n) rounded to bfloat16 / float16 and back in place (h as stored in
  // a 16-bit input dtype), to nearest even; null at the base level, where the
  // caller rounds with c10's conversions (common.h round_to).
  void (*round_bfloat16)(T* p, int64_t n);
  void (*round_half)(T* p, int64_t n);
};

// One table per level (pointwise_<level>.cpp); double has the base level only.
PointwiseKernels<float> pointwise_base_float();
PointwiseKernels<double> pointwise_base_double();
PointwiseKernels<float> pointwise_avx2();
PointwiseKernels<float> pointwise_avx512();

// The table for `isa` (float) or the base one (double).
template <typename T>
PointwiseKernels<T> pointwise_kernels(CpuIsa isa);

}  // namespace rnnkernels
