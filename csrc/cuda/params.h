// Arguments of the cuda backend's kernels: plain structs of device pointers
// and sizes, so the .cu files that take them include no torch headers (the
// CPU build of torch ships incomplete CUDA headers; see DESIGN.md). The glue
// in *_cuda.cpp fills them from tensors it has made contiguous, so every
// row stride is the row's width and is not stored.
//
// scalar_t is the storage type (float, double, __half, __nv_bfloat16);
// acc_t = AccOf<scalar_t> is the type of all arithmetic and of the carried
// state that never leaves the op (fp32 for the 16-bit types).
//
// One "step" struct describes one timestep t. `lengths` (device int64 [B],
// or nullptr for full length) makes row b take part in step t only while
// t < lengths[b]; an ended row keeps its state and writes zeros to y.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "persistent_plan.h"

namespace rnnkernels {
namespace cuda {

template <typename scalar_t>
struct AccOf {
  using type = float;  // fp32 for float, __half and __nv_bfloat16
};
template <>
struct AccOf<double> {
  using type = double;
};

// Which rows take part in step `step`.
struct RowLengths {
  const int64_t* lengths;  // [B] on the device, or nullptr: every row runs all T steps
  int64_t step;            // t
};

// ------------------------------------------------------------ forward steps
// Each forward step kernel gets hg = h_{t-1} W_hh^T from a GEMM the glue ran
// just before it, and adds xg_t to it in acc_t.

template <typename scalar_t>
struct LstmForwardStepParams {
  using acc_t = typename AccOf<scalar_t>::type;
  const scalar_t* xg;  // xg_t [B, 4H], gate rows i|f|g|o
  const scalar_t* hg;  // h_{t-1} W_hh^T [B, 4H]
  acc_t* c_state;      // [B, H] cell state, read and updated in place on active rows
  scalar_t* gates;     // [B, 4H] saved activations for backward (zero on ended rows)
  scalar_t* cells;     // [B, H] saved c_t (the carried state on ended rows)
  scalar_t* h_out;     // [B, H] new unprojected h: y_t, or the projection's input; zero on ended rows
  scalar_t* h_state;   // [B, H] next GEMM's h, updated on active rows; nullptr with a projection
  RowLengths rows;
  int64_t batch;   // B
  int64_t hidden;  // H
};

// LSTM projection: after proj = h_full W_hr^T, y_t = proj on active rows and
// 0 on ended ones; the state takes proj on active rows only.
template <typename scalar_t>
struct MaskedStateUpdateParams {
  const scalar_t* source;  // [B, W] this step's new state
  scalar_t* y;             // [B, W] y_t
  scalar_t* h_state;       // [B, W] the recurrent state
  RowLengths rows;
  int64_t batch;  // B
  int64_t width;  // W (the projection size P)
};

template <typename scalar_t>
struct GruForwardStepParams {
  using acc_t = typename AccOf<scalar_t>::type;
  const scalar_t* xg;    // xg_t [B, 3H], gate rows r|z|n, b_hn not included
  const scalar_t* hg;    // h_{t-1} W_hh^T [B, 3H]
  const scalar_t* b_hn;  // [H], or nullptr without bias
  acc_t* h_acc;          // [B, H] h in acc_t, read and updated on active rows
  scalar_t* h_state;     // [B, H] h rounded for the next GEMM, updated on active rows
  scalar_t* gates;       // [B, 3H] saved activations r|z|n (zero on ended rows)
  scalar_t* hn;          // [B, H] saved W_hn h_{t-1} + b_hn (zero on ended rows)
  scalar_t* y;           // [B, H] y_t, zero on ended rows
  RowLengths rows;
  int64_t batch;   // B
  int64_t hidden;  // H
};

template <typename scalar_t>
struct RnnForwardStepParams {
  const scalar_t* xg;  // xg_t [B, H]
  const scalar_t* hg;  // h_{t-1} W_hh^T [B, H]
  scalar_t* h_state;   // [B, H] updated on active rows
  scalar_t* y;         // [B, H] y_t, zero on ended rows
  RowLengths rows;
  int64_t batch;   // B
  int64_t hidden;  // H
};

// ----------------------------------------------------------- backward steps
// The gradient carried into h_t from later steps lives in acc_t, split in
// two: `carry` (what the pointwise math and ended rows pass on directly) and
// `rec` = dG_{t+1} W_hh (the GEMM the glue ran after step t+1, nullptr when
// tbptt cut the carry or at t = T-1). The combine kernel folds both with dy_t.

template <typename scalar_t>
struct CarryCombineParams {
  using acc_t = typename AccOf<scalar_t>::type;
  acc_t* carry;         // [B, W] in: carried gradient; out: 0 on active rows, the total on ended ones
  const scalar_t* rec;  // [B, W] dG_{t+1} W_hh, or nullptr
  const scalar_t* dy;   // [B, W] dy_t (ignored on ended rows: their y_t is a constant 0)
  acc_t* dh;            // [B, W] out: total gradient of h_t on active rows, 0 on ended ones
  scalar_t* dh_rounded; // [B, W] out: the same rounded to scalar_t (LSTM projection's dr_t), or nullptr
  RowLengths rows;
  int64_t batch;  // B
  int64_t width;  // W = H_out
};

template <typename scalar_t>
struct LstmBackwardStepParams {
  using acc_t = typename AccOf<scalar_t>::type;
  const scalar_t* gates;       // [B, 4H] saved activations of step t
  const scalar_t* cells;       // [B, H] c_t
  const scalar_t* cells_prev;  // [B, H] c_{t-1} (c0 at t = 0)
  const acc_t* dh;             // [B, H] gradient of the unprojected h_t
  acc_t* dc;                   // [B, H] in: gradient of c_t; out: of c_{t-1} (unchanged on ended rows)
  scalar_t* dxg;               // [B, 4H] dG_t, zero on ended rows
  RowLengths rows;
  int64_t batch;   // B
  int64_t hidden;  // H
};

template <typename scalar_t>
struct GruBackwardStepParams {
  using acc_t = typename AccOf<scalar_t>::type;
  const scalar_t* gates;   // [B, 3H] saved activations r|z|n of step t
  const scalar_t* hn;      // [B, H] saved W_hn h_{t-1} + b_hn
  const scalar_t* h_prev;  // [B, H] h_{t-1} (h0 at t = 0)
  const acc_t* dh;         // [B, H] total gradient of h_t
  acc_t* carry;            // [B, H] out on active rows: the z * dh path to h_{t-1}
  scalar_t* dxg;           // [B, 3H] input-side gradient [dr, dz, dn], zero on ended rows
  scalar_t* dg_rec;        // [B, 3H] recurrent gradient [dr, dz, dhn], zero on ended rows
  RowLengths rows;
  int64_t batch;   // B
  int64_t hidden;  // H
};

template <typename scalar_t>
struct RnnBackwardStepParams {
  using acc_t = typename AccOf<scalar_t>::type;
  const scalar_t* y;  // [B, H] h_t (the activation's output)
  const acc_t* dh;    // [B, H] total gradient of h_t
  scalar_t* dxg;      // [B, H] dG_t, zero on ended rows
  RowLengths rows;
  int64_t batch;   // B
  int64_t hidden;  // H
};

// --------------------------------------------------------------- launchers
// Defined in step_forward.cu / step_backward.cu for scalar_t in {float,
// double, __half, __nv_bfloat16}. Each returns the launch's error (or
// cudaSuccess); an empty problem launches nothing.
template <typename scalar_t>
cudaError_t launch_lstm_forward_step(const LstmForwardStepParams<scalar_t>& p, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_masked_state_update(const MaskedStateUpdateParams<scalar_t>& p, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_gru_forward_step(const GruForwardStepParams<scalar_t>& p, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_rnn_forward_step(const RnnForwardStepParams<scalar_t>& p, bool relu,
                                    cudaStream_t stream);

template <typename scalar_t>
cudaError_t launch_carry_combine(const CarryCombineParams<scalar_t>& p, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_lstm_backward_step(const LstmBackwardStepParams<scalar_t>& p, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_gru_backward_step(const GruBackwardStepParams<scalar_t>& p, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_rnn_backward_step(const RnnBackwardStepParams<scalar_t>& p, bool relu,
                                     cudaStream_t stream);

}  // namespace cuda
}  // namespace rnnkernels

// ------------------------------------------------------ persistent forward
// One cooperative launch runs all T steps (persistent_forward.cu). CTA k
// owns hidden units [k*U, k*U + U) of every gate and keeps their rows of
// W_hh in shared memory for the whole sequence; per step it stages h_{t-1}
// in shared memory once and multiplies on tensor cores (f16, bf16, tf32) or
// CUDA cores (fp32 IEEE, fp64); one grid barrier per step. The layout comes
// from persistent_plan.h.

namespace rnnkernels {
namespace cuda {

enum class CellKind { kLstm, kGru, kRnnTanh, kRnnRelu };

constexpr int gates_of(CellKind cell) {
  return cell == CellKind::kLstm ? 4 : cell == CellKind::kGru ? 3 : 1;
}

// The grid barrier's state (grid_barrier.cuh), one per launch.
struct GridBarrier {
  unsigned long long* counter;  // 8 bytes of device memory, zeroed before the launch
  unsigned int* abort_word;     // 4 bytes of device memory, zeroed before the launch
  int* error_flag;              // host-mapped int; a timed-out wait writes error_code (sticky)
  long long spin_limit_ns;      // the longest barrier wait, in ns of %globaltimer
  int error_code;               // what a timeout writes to *error_flag
};

// What both persistent kernels take beside their tensors: the problem's
// sizes, the rows' lengths, the slice layout and the grid barrier.
struct PersistentGridParams {
  const int64_t* lengths;  // [B] on the device, or nullptr for full length
  GridBarrier barrier;
  SliceLayout layout;      // persistent_plan.h, for this launch's engine
  int64_t steps;           // T
  int64_t batch;           // B
  int64_t hidden;          // H
  int units_per_cta;       // U
};

template <typename scalar_t>
struct PersistentForwardParams : PersistentGridParams {
  using acc_t = typename AccOf<scalar_t>::type;
  const scalar_t* xg;    // [T, B, G*H] all steps' input projections
  const scalar_t* w_hh;  // [G*H, H_out] row-major (H_out = H: no projection on this path)
  const scalar_t* b_hn;  // [H] GRU's b_hn, or nullptr
  scalar_t* h_buffers;   // [2, B, H]: h_{t} lives in buffer t % 2; buffer 0 holds h0 on entry
  acc_t* c_state;        // [B, H] LSTM cell state, in/out (nullptr for other cells)
  acc_t* h_acc;          // [B, H] GRU state in acc_t, in/out (nullptr for other cells)
  scalar_t* y;           // [T, B, H] outputs, zero on ended rows
  scalar_t* gates;       // [S, B, G*H] saved activations (LSTM, GRU), S = T or 1
  scalar_t* cells;       // [S, B, H] LSTM's saved c_t, or nullptr
  scalar_t* hn;          // [S, B, H] GRU's saved W_hn h + b_hn, or nullptr
  bool training;         // S = T (save every step) or 1
};

// The device's numbers a plan needs, read once per call by the glue.
struct DeviceLimits {
  int multiprocessors;
  int64_t max_shared;  // opt-in shared memory per block
  int major;           // compute capability
  bool cooperative;    // cudaDevAttrCooperativeLaunch
};

// Reads `device`'s limits; false (and the CUDA error cleared) if it cannot.
bool read_device_limits(int device, DeviceLimits* limits);

// Plans the launch (persistent_plan.h) for the engine `scalar_t` and `tf32`
// select, sets the kernel's shared-memory attribute, checks its occupancy
// with that shared memory and block size, and refuses (plan.refusal) when
// the grid cannot be resident. `tf32` matters for float only.
template <typename scalar_t>
PersistentPlan plan_persistent_forward(CellKind cell, int64_t batch, int64_t hidden, bool tf32,
                                       const DeviceLimits& limits);

// Launches with cudaLaunchCooperativeKernel after plan_persistent_forward
// accepted the shape; returns the launch's error.
template <typename scalar_t>
cudaError_t launch_persistent_forward(const PersistentForwardParams<scalar_t>& p, CellKind cell,
                                      bool tf32, const PersistentPlan& plan, cudaStream_t stream);

}  // namespace cuda
}  // namespace rnnkernels

// ----------------------------------------------------- persistent backward
// One cooperative launch walks t = T-1 .. 0 (persistent_backward.cu). CTA k
// owns the same units as in the forward but holds their *columns* of W_hh
// (W_hh[:, U_k], G*H x U), so dh_t[:, U_k] = dG_{t+1} W_hh[:, U_k] needs all of
// dG_{t+1} (staged from global after the barrier, in K-chunks where it does
// not fit) and no atomics. dW_hh and the rest are GEMMs the glue runs after.

namespace rnnkernels {
namespace cuda {

template <typename scalar_t>
struct PersistentBackwardParams : PersistentGridParams {
  using acc_t = typename AccOf<scalar_t>::type;
  const scalar_t* dy;     // [T, B, H] gradient of y
  const scalar_t* w_hh;   // [G*H, H] row-major (no projection on this path)
  const scalar_t* gates;  // [T, B, G*H] saved activations (LSTM, GRU), else nullptr
  const scalar_t* cells;  // [T, B, H] LSTM's saved c_t, else nullptr
  const scalar_t* c0;     // [B, H] LSTM's c_0, else nullptr
  const scalar_t* hn;     // [T, B, H] GRU's saved W_hn h + b_hn, else nullptr
  const scalar_t* y;      // [T, B, H] outputs: RNN's activation, GRU's h_{t-1} = y_{t-1}
  const scalar_t* h0;     // [B, H] GRU's h_{-1}, else nullptr
  acc_t* carry;           // [B, H] in: dh_n; out: dh0 (each CTA its own units)
  acc_t* dc;              // [B, H] LSTM in: dc_n; out: dc0; else nullptr
  scalar_t* dxg;          // [T, B, G*H] out: dG_t (the input-side gradient)
  scalar_t* dg_rec;       // [T, B, G*H] GRU out: [dr, dz, dhn], the gradient W_hh sees; else nullptr
  int64_t tbptt;          // 0: full BPTT; k > 0: step t adds nothing to dh_{t-1}, dc_{t-1} at t = k, 2k, ...
};

template <typename scalar_t>
PersistentPlan plan_persistent_backward(CellKind cell, int64_t batch, int64_t hidden, bool tf32,
                                        const DeviceLimits& limits);

template <typename scalar_t>
cudaError_t launch_persistent_backward(const PersistentBackwardParams<scalar_t>& p, CellKind cell,
                                       bool tf32, const PersistentPlan& plan, cudaStream_t stream);

}  // namespace cuda
}  // namespace rnnkernels
