// Gate math of one LSTM / GRU / Elman step for one hidden unit, forward and
// backward, exactly as torch.nn defines it (see DESIGN.md "Math, exactly as
// torch.nn"). Every backend that runs C++ (the CPU loops now, the CUDA kernels
// later) calls these functions, so the CPU tests exercise the same formulas the
// GPU runs. This header includes no torch headers: nvcc compiles it as is.
//
// T is the accumulation type (float or double). 16-bit kernels convert to
// float before calling in and round after.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define RK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RK_HOST_DEVICE inline
#endif

namespace rnnkernels {

RK_HOST_DEVICE float exp_of(float x) { return ::expf(x); }
RK_HOST_DEVICE double exp_of(double x) { return ::exp(x); }

// tanh from one exp of a non-positive number, so it cannot overflow:
// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|). Several times faster
// than libm's tanhf on the CPU; within a few ulp in absolute terms.
template <typename T>
RK_HOST_DEVICE T tanh_of(T x) {
  const T e = exp_of(T(-2) * (x < T(0) ? -x : x));
  const T t = (T(1) - e) / (T(1) + e);
  return x < T(0) ? -t : t;
}

// Logistic sigmoid, branch-free. For x << 0, exp(-x) overflows to +inf and
// the quotient is exactly 0, the right limit; no NaN can arise.
template <typename T>
RK_HOST_DEVICE T sigmoid(T x) {
  return T(1) / (T(1) + exp_of(-x));
}

// Derivatives written in terms of the activation's output, as torch's
// sigmoid_backward / tanh_backward do: the saved gates are activations.
template <typename T>
RK_HOST_DEVICE T sigmoid_grad_from_output(T s) { return s * (T(1) - s); }
template <typename T>
RK_HOST_DEVICE T tanh_grad_from_output(T t) { return T(1) - t * t; }

// ---------------------------------------------------------------- LSTM
// Gate rows in torch order (i | f | g | o).
template <typename T>
struct LstmGates {
  T i, f, g, o;  // activations: sigmoid, sigmoid, tanh, sigmoid
};

template <typename T>
struct LstmStep {
  LstmGates<T> gates;
  T c;  // new cell state
  T h;  // new hidden state before any projection
};

// pre_*: xg + W_hh h_{t-1} for this unit's four gate rows.
template <typename T>
RK_HOST_DEVICE LstmStep<T> lstm_step_forward(T pre_i, T pre_f, T pre_g, T pre_o,
                                             T c_prev) {
  LstmStep<T> s;
  s.gates.i = sigmoid(pre_i);
  s.gates.f = sigmoid(pre_f);
  s.gates.g = tanh_of(pre_g);
  s.gates.o = sigmoid(pre_o);
  s.c = s.gates.f * c_prev + s.gates.i * s.gates.g;
  s.h = s.gates.o * tanh_of(s.c);
  return s;
}

template <typename T>
struct LstmStepGrad {
  T d_pre_i, d_pre_f, d_pre_g, d_pre_o;  // gradient of the gate pre-activations
  T dc_prev;                             // gradient carried to c_{t-1}
};

// dh: gradient of this step's unprojected h; dc: gradient arriving at c_t
// from step t+1.
template <typename T>
RK_HOST_DEVICE LstmStepGrad<T> lstm_step_backward(const LstmGates<T>& a, T c,
                                                  T c_prev, T dh, T dc) {
  const T tanh_c = tanh_of(c);
  const T dc_total = dc + dh * a.o * tanh_grad_from_output(tanh_c);
  LstmStepGrad<T> g;
  g.d_pre_i = dc_total * a.g * sigmoid_grad_from_output(a.i);
  g.d_pre_f = dc_total * c_prev * sigmoid_grad_from_output(a.f);
  g.d_pre_g = dc_total * a.i * tanh_grad_from_output(a.g);
  g.d_pre_o = dh * tanh_c * sigmoid_grad_from_output(a.o);
  g.dc_prev = dc_total * a.f;
  return g;
}

// ---------------------------------------------------------------- GRU
// Gate rows in torch order (r | z | n). hn = W_hn h_{t-1} + b_hn stays apart
// from xg because the reset gate multiplies it.
template <typename T>
struct GruStep {
  T r, z, n;  // activations
  T h;        // new hidden state
};

template <typename T>
RK_HOST_DEVICE GruStep<T> gru_step_forward(T pre_r, T pre_z, T xg_n, T hn,
                                           T h_prev) {
  GruStep<T> s;
  s.r = sigmoid(pre_r);
  s.z = sigmoid(pre_z);
  s.n = tanh_of(xg_n + s.r * hn);
  // torch's gru_cell form: (h - n) * z + n == (1 - z) * n + z * h.
  s.h = (h_prev - s.n) * s.z + s.n;
  return s;
}

template <typename T>
struct GruStepGrad {
  T d_pre_r, d_pre_z, d_pre_n;  // dxg: gradient of the input-side pre-activations
  T d_hn;                       // gradient of W_hn h + b_hn (recurrent n row)
  T dh_prev_direct;             // the z * dh path to h_{t-1}, W_hh excluded
};

template <typename T>
RK_HOST_DEVICE GruStepGrad<T> gru_step_backward(T r, T z, T n, T hn, T h_prev,
                                                T dh) {
  GruStepGrad<T> g;
  const T dn = dh * (T(1) - z);
  g.d_pre_n = dn * tanh_grad_from_output(n);
  g.d_hn = g.d_pre_n * r;
  g.d_pre_r = g.d_pre_n * hn * sigmoid_grad_from_output(r);
  g.d_pre_z = dh * (h_prev - n) * sigmoid_grad_from_output(z);
  g.dh_prev_direct = dh * z;
  return g;
}

// ---------------------------------------------------------------- Elman RNN
template <bool kRelu, typename T>
RK_HOST_DEVICE T rnn_step_forward(T pre) {
  if (kRelu) {
    return pre > T(0) ? pre : T(0);
  }
  return tanh_of(pre);
}

// Derivative from the output h, as torch does: relu passes where h > 0.
template <bool kRelu, typename T>
RK_HOST_DEVICE T rnn_step_backward(T h, T dh) {
  if (kRelu) {
    return h > T(0) ? dh : T(0);
  }
  return dh * tanh_grad_from_output(h);
}

}  // namespace rnnkernels
