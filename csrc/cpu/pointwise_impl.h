// The row kernels of pointwise.h over a vector type V (vec.h), the formulas
// of cell_math.h written once for every width. Each pointwise_<level>.cpp
// includes this after its `#pragma GCC target` and instantiates
// make_kernels<V> for its widest vector type; a slice's tail (n not a
// multiple of the width) runs the same code over Scalar<T>.
#pragma once

#include <type_traits>

#include "pointwise.h"
#include "vec.h"

namespace rnnkernels {
namespace {

using rk_vec::Scalar;

template <typename V>
V sigmoid_v(V x) {
  const V one = V::set1(1);
  return one / (one + vexp(V::set1(0) - x));
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): cannot overflow.
template <typename V>
V tanh_v(V x) {
  const V one = V::set1(1);
  const V e = vexp(V::set1(-2) * vabs(x));
  return with_sign_of((one - e) / (one + e), x);
}

// Runs body(V-width step) over [0, n) with V, then the tail with Scalar<T>.
template <typename V, typename T, typename Body>
void for_slice(int64_t n, const Body& body) {
  int64_t k = 0;
  for (; k + V::kWidth <= n; k += V::kWidth) {
    body(V{}, k);
  }
  for (; k < n; ++k) {
    body(Scalar<T>{}, k);
  }
}

template <typename V, typename T>
void lstm_forward_row(const LstmForwardRow<T>& a) {
  for_slice<V, T>(a.n, [&](auto tag, int64_t k) {
    using W = decltype(tag);
    const int64_t n = a.n, s = a.stride;
    const W i = sigmoid_v(W::load(a.acc + k) + W::load(a.xg + k));
    const W f = sigmoid_v(W::load(a.acc + n + k) + W::load(a.xg + s + k));
    const W g = tanh_v(W::load(a.acc + 2 * n + k) + W::load(a.xg + 2 * s + k));
    const W o = sigmoid_v(W::load(a.acc + 3 * n + k) + W::load(a.xg + 3 * s + k));
    const W c = f * W::load(a.c + k) + i * g;
    const W h = o * tanh_v(c);
    i.store(a.gates + k);
    f.store(a.gates + s + k);
    g.store(a.gates + 2 * s + k);
    o.store(a.gates + 3 * s + k);
    c.store(a.c + k);
    if (a.cells != nullptr) c.store(a.cells + k);
    h.store(a.h + k);
    if (a.h_copy != nullptr) h.store(a.h_copy + k);
  });
}

template <typename V, typename T>
void lstm_backward_row(const LstmBackwardRow<T>& a) {
  for_slice<V, T>(a.n, [&](auto tag, int64_t k) {
    using W = decltype(tag);
    const int64_t s = a.stride;
    const W one = W::set1(1);
    const W i = W::load(a.gates + k), f = W::load(a.gates + s + k);
    const W g = W::load(a.gates + 2 * s + k), o = W::load(a.gates + 3 * s + k);
    const W dh = W::load(a.dh + k);
    const W tanh_c = tanh_v(W::load(a.c + k));
    const W dc = W::load(a.dc + k) + dh * o * (one - tanh_c * tanh_c);
    (dc * g * (i * (one - i))).store(a.dxg + k);
    (dc * W::load(a.c_prev + k) * (f * (one - f))).store(a.dxg + s + k);
    (dc * i * (one - g * g)).store(a.dxg + 2 * s + k);
    (dh * tanh_c * (o * (one - o))).store(a.dxg + 3 * s + k);
    (dc * f).store(a.dc + k);
  });
}

template <typename V, typename T>
void gru_forward_row(const GruForwardRow<T>& a) {
  for_slice<V, T>(a.n, [&](auto tag, int64_t k) {
    using W = decltype(tag);
    const int64_t n = a.n, s = a.stride;
    const W r = sigmoid_v(W::load(a.acc + k) + W::load(a.xg + k));
    const W z = sigmoid_v(W::load(a.acc + n + k) + W::load(a.xg + s + k));
    W hn = W::load(a.acc + 2 * n + k);
    if (a.b_hn != nullptr) hn = hn + W::load(a.b_hn + k);
    const W nn = tanh_v(W::load(a.xg + 2 * s + k) + r * hn);
    // torch's gru_cell form: (h - n) * z + n.
    const W h = (W::load(a.h_prev + k) - nn) * z + nn;
    r.store(a.gates + k);
    z.store(a.gates + s + k);
    nn.store(a.gates + 2 * s + k);
    hn.store(a.hn + k);
    h.store(a.h + k);
    if (a.h_copy != nullptr) h.store(a.h_copy + k);
  });
}

template <typename V, typename T>
void gru_backward_row(const GruBackwardRow<T>& a) {
  for_slice<V, T>(a.n, [&](auto tag, int64_t k) {
    using W = decltype(tag);
    const int64_t s = a.stride;
    const W one = W::set1(1);
    const W r = W::load(a.gates + k), z = W::load(a.gates + s + k);
    const W nn = W::load(a.gates + 2 * s + k);
    const W dh = W::load(a.dh + k);
    const W d_pre_n = dh * (one - z) * (one - nn * nn);
    const W d_pre_r = d_pre_n * W::load(a.hn + k) * (r * (one - r));
    const W d_pre_z = dh * (W::load(a.h_prev + k) - nn) * (z * (one - z));
    d_pre_r.store(a.dxg + k);
    d_pre_z.store(a.dxg + s + k);
    d_pre_n.store(a.dxg + 2 * s + k);
    d_pre_r.store(a.drec + k);
    d_pre_z.store(a.drec + s + k);
    (d_pre_n * r).store(a.drec + 2 * s + k);
    (dh * z).store(a.direct + k);
  });
}

template <typename V, typename T, bool kRelu>
void rnn_forward_row(const RnnForwardRow<T>& a) {
  for_slice<V, T>(a.n, [&](auto tag, int64_t k) {
    using W = decltype(tag);
    const W pre = W::load(a.acc + k) + W::load(a.xg + k);
    const W h = kRelu ? if_positive(pre, pre, W::set1(0)) : tanh_v(pre);
    h.store(a.h + k);
    if (a.h_copy != nullptr) h.store(a.h_copy + k);
  });
}

template <typename V, typename T, bool kRelu>
void rnn_backward_row(const RnnBackwardRow<T>& a) {
  for_slice<V, T>(a.n, [&](auto tag, int64_t k) {
    using W = decltype(tag);
    const W h = W::load(a.h + k), dh = W::load(a.dh + k);
    const W d = kRelu ? if_positive(h, dh, W::set1(0)) : dh * (W::set1(1) - h * h);
    d.store(a.dxg + k);
  });
}

#if defined(RK_VEC_AVX2) || defined(RK_VEC_AVX512)
template <typename V, bool kBFloat16>
void round_row(float* p, int64_t n) {
  for_slice<V, float>(n, [&](auto tag, int64_t k) {
    using W = decltype(tag);
    const W x = W::load(p + k);
    (kBFloat16 ? round_bf16(x) : round_half(x)).store(p + k);
  });
}
#endif

// The table of a level; `rounding`: the vector levels' in-place 16-bit
// rounding (float only).
template <typename V, typename T>
PointwiseKernels<T> make_kernels() {
  PointwiseKernels<T> k{&lstm_forward_row<V, T>,         &lstm_backward_row<V, T>,
                        &gru_forward_row<V, T>,          &gru_backward_row<V, T>,
                        &rnn_forward_row<V, T, false>,   &rnn_forward_row<V, T, true>,
                        &rnn_backward_row<V, T, false>,  &rnn_backward_row<V, T, true>,
                        nullptr,                         nullptr};
#if defined(RK_VEC_AVX2) || defined(RK_VEC_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    k.round_bfloat16 = &round_row<V, true>;
    k.round_half = &round_row<V, false>;
  }
#endif
  return k;
}

}  // namespace
}  // namespace rnnkernels
