// Host-side helpers of the cuda backend's glue (*_cuda.cpp): argument checks
// for CUDA tensors, the variable-length rows on the device, the dtype
// mapping from ATen's scalar types to the kernels' CUDA types, the launch
// check that turns a CUDA error into a Python RuntimeError, and the
// gradient carry that the backward step loops of all cells share.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

#include <initializer_list>

// new_output (NaN poisoning), RecurrenceShape and the shape checks, cuts_carry, previous_hidden
#include "../cpu/common.h"
#include "params.h"

namespace rnnkernels {
namespace cuda {

// The storage type a kernel sees for an ATen scalar type: at::Half and
// at::BFloat16 have the same 16-bit layout as CUDA's __half and __nv_bfloat16.
template <typename scalar_t>
struct KernelType {
  using type = scalar_t;
};
template <>
struct KernelType<at::Half> {
  using type = __half;
};
template <>
struct KernelType<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename scalar_t>
using kernel_t = typename KernelType<scalar_t>::type;

// Typed device pointer of a tensor in the kernels' type (nullptr if undefined).
template <typename scalar_t>
kernel_t<scalar_t>* ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<kernel_t<scalar_t>*>(t.data_ptr<scalar_t>()) : nullptr;
}

// The dtype of the state carried inside an op: float64 for float64, else float32.
inline at::ScalarType acc_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

template <typename scalar_t>
typename AccOf<kernel_t<scalar_t>>::type* acc_ptr(const at::Tensor& t) {
  using acc_t = typename AccOf<kernel_t<scalar_t>>::type;
  return t.defined() ? t.data_ptr<acc_t>() : nullptr;
}

// A contiguous copy of `t` in the accumulation dtype: the form of the state
// and gradient carries an op keeps across steps.
inline at::Tensor acc_copy(const at::Tensor& t) {
  return t.to(acc_dtype(t.scalar_type()), /*non_blocking=*/false, /*copy=*/true).contiguous();
}

inline void check_launch(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, "rnnkernels cuda backend: launching ", what,
              " failed: ", cudaGetErrorString(error));
}

// Checks that `t` is a tensor of `sizes` in `dtype` on `device`.
inline void check_cuda_operand(const at::Tensor& t, const char* name, at::IntArrayRef sizes,
                               at::ScalarType dtype, const at::Device& device) {
  TORCH_CHECK(t.device() == device, "rnnkernels cuda backend: ", name, " is on ", t.device(),
              " but xg is on ", device);
  TORCH_CHECK(t.scalar_type() == dtype, "rnnkernels cuda backend: ", name, " has dtype ",
              t.scalar_type(), " but xg has dtype ", dtype);
  TORCH_CHECK(t.sizes() == sizes, "rnnkernels cuda backend: ", name, " has shape ", shape_of(t),
              ", expected ", sizes);
}

// check_cuda_operand bound to xg's dtype and device: the cuda backend's
// `check` for the operand lists of cpu/common.h.
struct CudaOperandCheck {
  at::ScalarType dtype;
  at::Device device;
  void operator()(const at::Tensor& t, const char* name, at::IntArrayRef sizes) const {
    check_cuda_operand(t, name, sizes, dtype, device);
  }
};

inline RecurrenceShape check_cuda_recurrence(const char* cell, const at::Tensor& xg,
                                             const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(xg.is_cuda(), "rnnkernels cuda backend runs on CUDA tensors, got xg on ",
              xg.device());
  const auto dtype = xg.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "rnnkernels cuda backend supports float32, float64, float16 and bfloat16, got ",
              dtype);
  const RecurrenceShape s = recurrence_shape(cell, xg, w_hh, gates);
  check_cuda_operand(w_hh, "w_hh", {gates * s.hidden, s.hidden_out}, dtype, xg.device());
  return s;
}

// Variable lengths, checked on the host (int64 [B] within [0, T], on the
// CPU or on xg's device) and held on the device for the kernels.
class DeviceLengths {
 public:
  DeviceLengths(const std::optional<at::Tensor>& lengths, const RecurrenceShape& s,
                const at::Device& device) {
    if (!lengths.has_value()) {
      return;
    }
    const at::Tensor& l = *lengths;
    TORCH_CHECK((l.device().is_cpu() || l.device() == device) && l.scalar_type() == at::kLong &&
                    l.dim() == 1 && l.size(0) == s.batch,
                "rnnkernels cuda backend: lengths must be an int64 tensor of shape [", s.batch,
                "] on the CPU or on ", device, ", got ", l.scalar_type(), " of shape ",
                shape_of(l), " on ", l.device());
    const at::Tensor host = l.to(at::kCPU).contiguous();
    const int64_t* values = host.data_ptr<int64_t>();
    for (int64_t b = 0; b < s.batch; ++b) {
      TORCH_CHECK(values[b] >= 0 && values[b] <= s.steps, "rnnkernels cuda backend: lengths[", b,
                  "] = ", values[b], " is outside [0, ", s.steps, "]");
    }
    on_device_ = l.to(device).contiguous();
  }

  RowLengths at_step(int64_t step) const {
    return RowLengths{on_device_.defined() ? on_device_.data_ptr<int64_t>() : nullptr, step};
  }

 private:
  at::Tensor on_device_;
};

// dG_{t+1} W_hh, the part of the gradient carried into h_t that a GEMM
// makes after step t+1, in the input dtype. It is kept apart from the acc_t
// carry so that the combine kernel adds it in acc_t; there is none at
// t = T-1 nor where tbptt cut the carry.
class RecurrentGrad {
 public:
  RecurrentGrad(int64_t batch, int64_t width, const at::TensorOptions& options)
      : rec_(at::empty({batch, width}, options)) {}

  // After step t's kernels: at a tbptt cut, zeroes the carries and drops
  // the product; else computes dg_t W_hh for step t-1.
  void after_step(int64_t tbptt, int64_t t, const at::Tensor& dg_t, const at::Tensor& w_hh,
                  std::initializer_list<at::Tensor> carries) {
    if (cuts_carry(tbptt, t)) {
      for (const at::Tensor& carry : carries) {
        carry.zero_();
      }
      valid_ = false;
    } else {
      at::mm_out(rec_, dg_t, w_hh);
      valid_ = true;
    }
  }

  // After the loop: carry + dG_0 W_hh, the whole gradient of h0.
  at::Tensor added_to(const at::Tensor& carry) const { return valid_ ? carry + rec_ : carry; }

  template <typename scalar_t>
  const kernel_t<scalar_t>* ptr_or_null() const {
    return valid_ ? ptr<scalar_t>(rec_) : nullptr;
  }

 private:
  at::Tensor rec_;
  bool valid_ = false;  // whether rec_ holds a gradient for the current step
};

// Step t's carry combine (step_backward.cu): dh = carry + dG_{t+1} W_hh + dy_t
// on active rows, and the carry keeps what ended rows pass on. dh_rounded
// (the LSTM projection's dr_t) gets dh in the input dtype, unless undefined.
template <typename scalar_t>
void combine_carry(const at::Tensor& carry, const RecurrentGrad& rec, const at::Tensor& dy_t,
                   const at::Tensor& dh, const at::Tensor& dh_rounded, RowLengths rows,
                   const char* what, cudaStream_t stream) {
  CarryCombineParams<kernel_t<scalar_t>> c;
  c.carry = acc_ptr<scalar_t>(carry);
  c.rec = rec.ptr_or_null<scalar_t>();
  c.dy = ptr<scalar_t>(dy_t);
  c.dh = acc_ptr<scalar_t>(dh);
  c.dh_rounded = ptr<scalar_t>(dh_rounded);
  c.rows = rows;
  c.batch = carry.size(0);
  c.width = carry.size(1);
  check_launch(launch_carry_combine(c, stream), what);
}

// Dispatches `body` (a lambda using scalar_t) over the four supported dtypes.
#define RK_DISPATCH_CUDA_FLOATING(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

}  // namespace cuda
}  // namespace rnnkernels
