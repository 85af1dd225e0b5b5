// Helpers shared by the CPU recurrence loops: output allocation (optionally
// poisoned with NaN so an unwritten element fails a test), argument checks
// with messages that name the shapes, and the variable-length row mask.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "pointwise.h"

namespace rnnkernels {

// Process-wide switch, set from Python through rnnkernels._C. When on, every
// output the ops allocate is filled with NaN before the loop writes it.
bool poison_outputs_enabled();
void set_poison_outputs(bool enabled);

inline at::Tensor new_output(at::IntArrayRef sizes,
                             const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  if (poison_outputs_enabled() && out.is_floating_point()) {
    out.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

// bfloat16 and float16 run as float32 (state, accumulation and the saved
// gates), with h rounded to the input dtype every step, as the reference
// backend does.
inline bool is_16bit(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

inline at::ScalarType state_dtype(at::ScalarType dtype) {
  return is_16bit(dtype) ? at::kFloat : dtype;
}

// Rounds p[0, n) to `to` (a no-op unless it is 16-bit): what storing h in
// the input dtype and reading it back does.
template <typename T>
void round_to(T* p, int64_t n, at::ScalarType to) {
  if (to == at::kBFloat16) {
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(static_cast<float>(c10::BFloat16(p[i])));
  } else if (to == at::kHalf) {
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(static_cast<float>(c10::Half(p[i])));
  }
}

// round_to with the level's vector rounding where it has one (pointwise.h).
template <typename T>
void round_with(const PointwiseKernels<T>& k, T* p, int64_t n, at::ScalarType to) {
  void (*vector)(T*, int64_t) = to == at::kBFloat16 ? k.round_bfloat16
                                : to == at::kHalf   ? k.round_half
                                                    : nullptr;
  if (vector != nullptr) {
    vector(p, n);
  } else {
    round_to(p, n, to);
  }
}

inline std::string shape_of(const at::Tensor& t) {
  return c10::str(t.sizes());
}

// Checks that `t` is a floating tensor of `sizes` on the CPU, in `dtype`.
inline void check_operand(const at::Tensor& t, const char* name,
                          at::IntArrayRef sizes, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), "rnnkernels cpu backend: ", name,
              " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "rnnkernels cpu backend: ", name,
              " has dtype ", t.scalar_type(), " but xg has dtype ", dtype);
  TORCH_CHECK(t.sizes() == sizes, "rnnkernels cpu backend: ", name,
              " has shape ", shape_of(t), ", expected ", sizes);
}

// The op contract's common shape: xg [T, B, G*H], W_hh [G*H, H_out].
struct RecurrenceShape {
  int64_t steps;       // T
  int64_t batch;       // B
  int64_t hidden;      // H (units per gate)
  int64_t hidden_out;  // H_out: H, or the projection size P for LSTM
  int64_t gates;       // G
};

// The checks of the op contract's shapes that hold on every device; each
// backend tests xg's device and dtype before them and w_hh's after them.
inline RecurrenceShape recurrence_shape(const char* cell, const at::Tensor& xg,
                                        const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(xg.dim() == 3, cell, ": xg must be [T, B, ", gates,
              "*H], got shape ", shape_of(xg));
  TORCH_CHECK(xg.size(0) > 0, "Expected sequence length to be larger than 0 in RNN");
  TORCH_CHECK(xg.size(2) % gates == 0, cell, ": xg's last dimension ", xg.size(2),
              " is not a multiple of the ", gates, " gates");
  TORCH_CHECK(w_hh.dim() == 2, cell, ": w_hh must be 2-D, got shape ",
              shape_of(w_hh));
  return RecurrenceShape{xg.size(0), xg.size(1), xg.size(2) / gates, w_hh.size(1),
                         gates};
}

inline RecurrenceShape check_recurrence(const char* cell, const at::Tensor& xg,
                                        const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(xg.device().is_cpu(),
              "rnnkernels cpu backend runs on CPU tensors, got xg on ",
              xg.device());
  const at::ScalarType dtype = xg.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || is_16bit(dtype),
              "rnnkernels cpu backend supports float32, float64, bfloat16 and float16, got ",
              dtype);
  const RecurrenceShape s = recurrence_shape(cell, xg, w_hh, gates);
  check_operand(w_hh, "w_hh", {gates * s.hidden, s.hidden_out}, dtype);
  return s;
}

// A backward op's checks of the saved per-step buffer it takes its shape
// from (gates, or the RNN's states): in state_dtype of w_hh's dtype.
inline RecurrenceShape check_saved_recurrence(const char* cell, const at::Tensor& saved,
                                              const at::Tensor& w_hh, int64_t gates) {
  if (!is_16bit(w_hh.scalar_type()) || saved.scalar_type() != at::kFloat) {
    return check_recurrence(cell, saved, w_hh, gates);
  }
  TORCH_CHECK(saved.device().is_cpu(),
              "rnnkernels cpu backend runs on CPU tensors, got xg on ", saved.device());
  const RecurrenceShape s = recurrence_shape(cell, saved, w_hh, gates);
  check_operand(w_hh, "w_hh", {gates * s.hidden, s.hidden_out}, w_hh.scalar_type());
  return s;
}

// check_operand bound to xg's dtype: the cpu backend's `check` for the
// operand lists below. The saved per-step buffers (cells, hn) are in
// state_dtype(dtype).
struct CpuOperandCheck {
  at::ScalarType dtype;
  void operator()(const at::Tensor& t, const char* name, at::IntArrayRef sizes) const {
    const bool saved = std::string(name) == "cells" || std::string(name) == "hn";
    check_operand(t, name, sizes, saved ? state_dtype(dtype) : dtype);
  }
};

// Each op's operands beside xg and w_hh, in the order every backend checks
// them, so that the same bad input fails first on the same operand.
// `check(t, name, sizes)` is the backend's test of device, dtype and shape.
template <typename Check>
void check_lstm_forward_operands(const RecurrenceShape& s, const at::Tensor& w_hh,
                                 const at::Tensor& h0, const at::Tensor& c0,
                                 const std::optional<at::Tensor>& w_hr, const Check& check) {
  if (w_hr.has_value()) {
    check(*w_hr, "w_hr", {s.hidden_out, s.hidden});
  } else {
    TORCH_CHECK(s.hidden_out == s.hidden, "lstm: w_hh has shape ", shape_of(w_hh),
                ", which needs a projection w_hr [", s.hidden_out, ", ", s.hidden, "]");
  }
  check(h0, "h0", {s.batch, s.hidden_out});
  check(c0, "c0", {s.batch, s.hidden});
}

template <typename Check>
void check_lstm_backward_operands(const RecurrenceShape& s, const at::Tensor& dy,
                                  const at::Tensor& y, const at::Tensor& dh_n,
                                  const at::Tensor& dc_n, const at::Tensor& h0,
                                  const at::Tensor& c0, const at::Tensor& cells,
                                  const std::optional<at::Tensor>& w_hr, const Check& check) {
  check(dy, "dy", {s.steps, s.batch, s.hidden_out});
  check(y, "y", {s.steps, s.batch, s.hidden_out});
  check(dh_n, "dh_n", {s.batch, s.hidden_out});
  check(dc_n, "dc_n", {s.batch, s.hidden});
  check(h0, "h0", {s.batch, s.hidden_out});
  check(c0, "c0", {s.batch, s.hidden});
  check(cells, "cells", {s.steps, s.batch, s.hidden});
  if (w_hr.has_value()) {
    check(*w_hr, "w_hr", {s.hidden_out, s.hidden});
  }
}

template <typename Check>
void check_gru_forward_operands(const RecurrenceShape& s, const at::Tensor& h0,
                                const std::optional<at::Tensor>& b_hn, const Check& check) {
  check(h0, "h0", {s.batch, s.hidden});
  if (b_hn.has_value()) {
    check(*b_hn, "b_hn", {s.hidden});
  }
}

template <typename Check>
void check_gru_backward_operands(const RecurrenceShape& s, const at::Tensor& dy,
                                 const at::Tensor& y, const at::Tensor& hn,
                                 const at::Tensor& dh_n, const at::Tensor& h0,
                                 const Check& check) {
  check(dy, "dy", {s.steps, s.batch, s.hidden});
  check(y, "y", {s.steps, s.batch, s.hidden});
  check(hn, "hn", {s.steps, s.batch, s.hidden});
  check(dh_n, "dh_n", {s.batch, s.hidden});
  check(h0, "h0", {s.batch, s.hidden});
}

template <typename Check>
void check_rnn_backward_operands(const RecurrenceShape& s, const at::Tensor& dy,
                                 const at::Tensor& dh_n, const at::Tensor& h0,
                                 const Check& check) {
  check(dy, "dy", {s.steps, s.batch, s.hidden});
  check(dh_n, "dh_n", {s.batch, s.hidden});
  check(h0, "h0", {s.batch, s.hidden});
}

// Variable lengths: row b takes part in step t while t < lengths[b]. Rows
// that have ended keep their state, write zeros to y and pass gradients of
// their state through unchanged.
class RowMask {
 public:
  RowMask(const std::optional<at::Tensor>& lengths, const RecurrenceShape& s) {
    if (!lengths.has_value()) {
      return;
    }
    const at::Tensor& l = *lengths;
    TORCH_CHECK(l.device().is_cpu() && l.scalar_type() == at::kLong &&
                    l.dim() == 1 && l.size(0) == s.batch,
                "rnnkernels cpu backend: lengths must be an int64 CPU tensor "
                "of shape [",
                s.batch, "], got ", l.scalar_type(), " of shape ", shape_of(l),
                " on ", l.device());
    lengths_ = l.contiguous();
    data_ = lengths_.data_ptr<int64_t>();
    for (int64_t b = 0; b < s.batch; ++b) {
      TORCH_CHECK(data_[b] >= 0 && data_[b] <= s.steps, "rnnkernels cpu backend: "
                  "lengths[", b, "] = ", data_[b], " is outside [0, ", s.steps, "]");
    }
  }

  bool active(int64_t b, int64_t t) const {
    return data_ == nullptr || t < data_[b];
  }

 private:
  at::Tensor lengths_;  // keeps data_ alive
  const int64_t* data_ = nullptr;
};

// Runs fn(first_row, end_row) over the batch rows of one step, split across
// ATen's threads once a chunk holds enough elements to pay for a thread.
template <typename F>
void for_each_row_range(int64_t rows, int64_t elements_per_row, const F& fn) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, elements_per_row));
  at::parallel_for(0, rows, grain, fn);
}

// Truncated BPTT: the carry into step t-1 is cut at t = k, 2k, ...
inline bool cuts_carry(int64_t tbptt, int64_t t) {
  return tbptt > 0 && t > 0 && t % tbptt == 0;
}

// h_{t-1} for every step: [h0, y_0, ..., y_{T-2}], as [T*B, H_out]. For a row
// active at t, y_{t-1} is its real state; rows inactive at t have dG = 0, so
// their entry never reaches dW_hh. Explicit sizes: B or H_out may be 0.
inline at::Tensor previous_hidden(const at::Tensor& h0, const at::Tensor& y) {
  const int64_t steps = y.size(0);
  at::Tensor prev = at::cat({h0.unsqueeze(0), y.narrow(0, 0, steps - 1)}, 0);
  return prev.reshape({steps * y.size(1), y.size(2)});
}

}  // namespace rnnkernels
