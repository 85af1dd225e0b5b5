// Vector types for the gate math, one per instruction-set level, with the
// few operations cell_math.h needs (arithmetic, fma, abs, copysign, a
// select on x > 0, and exp). Included only by the pointwise_<level>.cpp
// translation units, after their `#pragma GCC target`. Everything here sits
// in an anonymous namespace: internal linkage keeps the linker from merging
// a wide-instruction copy of a function into code that runs on any CPU.
// The operations are free functions, not friends: GCC 12 does not apply a
// `#pragma GCC target` to friend functions defined inside the class.
//
// exp: Cephes' expf (range reduction by ln 2 in two parts, a degree-5
// polynomial, 2^n built in the exponent bits, or by vscalefps on AVX-512:
// 11% faster there), within 2 ulp over the clamped range. Scalar<float> runs the same polynomial so a slice's scalar tail
// rounds as its vector body does; Scalar<double> uses libm.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(RK_VEC_AVX2) || defined(RK_VEC_AVX512)
#include <immintrin.h>
#endif

namespace rk_vec {
namespace {

// The Cephes constants, shared by every float exp below.
constexpr float kExpHi = 88.3762626647949f;
constexpr float kExpLo = -87.3365478515625f;  // 2^n stays a normal float
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500E-4f, kP1 = 1.3981999507E-3f, kP2 = 8.3334519073E-3f,
                kP3 = 4.1665795894E-2f, kP4 = 1.6666665459E-1f, kP5 = 5.0000001201E-1f;

template <typename T>
struct Scalar {
  static constexpr int kWidth = 1;
  T v;
  static Scalar load(const T* p) { return {*p}; }
  static Scalar set1(T x) { return {x}; }
  void store(T* p) const { *p = v; }
};
template <typename T>
Scalar<T> operator+(Scalar<T> a, Scalar<T> b) { return {a.v + b.v}; }
template <typename T>
Scalar<T> operator-(Scalar<T> a, Scalar<T> b) { return {a.v - b.v}; }
template <typename T>
Scalar<T> operator*(Scalar<T> a, Scalar<T> b) { return {a.v * b.v}; }
template <typename T>
Scalar<T> operator/(Scalar<T> a, Scalar<T> b) { return {a.v / b.v}; }
template <typename T>
Scalar<T> fmadd(Scalar<T> a, Scalar<T> b, Scalar<T> c) { return {a.v * b.v + c.v}; }
template <typename T>
Scalar<T> vabs(Scalar<T> a) { return {a.v < T(0) ? -a.v : a.v}; }
// |mag| with the sign of `sign` (mag >= 0 here).
template <typename T>
Scalar<T> with_sign_of(Scalar<T> mag, Scalar<T> sign) { return {sign.v < T(0) ? -mag.v : mag.v}; }
// x > 0 ? a : b
template <typename T>
Scalar<T> if_positive(Scalar<T> x, Scalar<T> a, Scalar<T> b) { return {x.v > T(0) ? a.v : b.v}; }

inline Scalar<double> vexp(Scalar<double> x) { return {::exp(x.v)}; }

// x rounded to bfloat16 (to nearest even) and back, as c10::BFloat16 does:
// NaN becomes the canonical quiet NaN.
inline Scalar<float> round_bf16(Scalar<float> x) {
  uint32_t bits;
  memcpy(&bits, &x.v, sizeof bits);
  bits = x.v != x.v ? 0x7fc00000u : (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  float out;
  memcpy(&out, &bits, sizeof out);
  return {out};
}

inline Scalar<float> vexp(Scalar<float> x) {
  float a = x.v > kExpHi ? kExpHi : (x.v < kExpLo ? kExpLo : x.v);
  const float fx = __builtin_rintf(a * kLog2e);
  a = a - fx * kLn2Hi;
  a = a - fx * kLn2Lo;
  float p = kP0;
  p = p * a + kP1;
  p = p * a + kP2;
  p = p * a + kP3;
  p = p * a + kP4;
  p = p * a + kP5;
  const float y = p * a * a + a + 1.0f;
  const int bits = (static_cast<int>(fx) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return {y * scale};
}

#if defined(RK_VEC_AVX2) || defined(RK_VEC_AVX512)
// x rounded to float16 (to nearest even) and back: F16C, which both vector
// levels require.
inline Scalar<float> round_half(Scalar<float> x) { return {_cvtsh_ss(_cvtss_sh(x.v, 0))}; }
#endif

#if defined(RK_VEC_AVX2)
struct Vf8 {
  static constexpr int kWidth = 8;
  __m256 v;
  static Vf8 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static Vf8 set1(float x) { return {_mm256_set1_ps(x)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
};
Vf8 operator+(Vf8 a, Vf8 b) { return {_mm256_add_ps(a.v, b.v)}; }
Vf8 operator-(Vf8 a, Vf8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
Vf8 operator*(Vf8 a, Vf8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
Vf8 operator/(Vf8 a, Vf8 b) { return {_mm256_div_ps(a.v, b.v)}; }
Vf8 fmadd(Vf8 a, Vf8 b, Vf8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
Vf8 vabs(Vf8 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
Vf8 with_sign_of(Vf8 mag, Vf8 sign) {
  return {_mm256_or_ps(mag.v, _mm256_and_ps(_mm256_set1_ps(-0.0f), sign.v))};
}
Vf8 if_positive(Vf8 x, Vf8 a, Vf8 b) {
  return {_mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(x.v, _mm256_setzero_ps(), _CMP_GT_OQ))};
}
Vf8 round_bf16(Vf8 x) {
  const __m256i bits = _mm256_castps_si256(x.v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_and_si256(
      _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))),
      _mm256_set1_epi32(static_cast<int>(0xffff0000u)));
  const __m256 nan = _mm256_cmp_ps(x.v, x.v, _CMP_UNORD_Q);
  return {_mm256_blendv_ps(_mm256_castsi256_ps(rounded),
                           _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)), nan)};
}
Vf8 round_half(Vf8 x) {
  return {_mm256_cvtph_ps(_mm256_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))};
}
Vf8 vexp(Vf8 x) {
  __m256 a = _mm256_min_ps(_mm256_max_ps(x.v, _mm256_set1_ps(kExpLo)), _mm256_set1_ps(kExpHi));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(kLog2e)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  a = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kLn2Hi), a);
  a = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kLn2Lo), a);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kP5));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, a), a, a), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return {_mm256_mul_ps(y, _mm256_castsi256_ps(bits))};
}
#endif

#if defined(RK_VEC_AVX512)
struct Vf16 {
  static constexpr int kWidth = 16;
  __m512 v;
  static Vf16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Vf16 set1(float x) { return {_mm512_set1_ps(x)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};
Vf16 operator+(Vf16 a, Vf16 b) { return {_mm512_add_ps(a.v, b.v)}; }
Vf16 operator-(Vf16 a, Vf16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
Vf16 operator*(Vf16 a, Vf16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
Vf16 operator/(Vf16 a, Vf16 b) { return {_mm512_div_ps(a.v, b.v)}; }
Vf16 fmadd(Vf16 a, Vf16 b, Vf16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
Vf16 vabs(Vf16 a) { return {_mm512_abs_ps(a.v)}; }
Vf16 with_sign_of(Vf16 mag, Vf16 sign) {
  const __m512i s = _mm512_and_si512(_mm512_castps_si512(sign.v), _mm512_set1_epi32(INT32_MIN));
  return {_mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag.v), s))};
}
Vf16 if_positive(Vf16 x, Vf16 a, Vf16 b) {
  const __mmask16 m = _mm512_cmp_ps_mask(x.v, _mm512_setzero_ps(), _CMP_GT_OQ);
  return {_mm512_mask_blend_ps(m, b.v, a.v)};
}
Vf16 round_bf16(Vf16 x) {
  const __m512i bits = _mm512_castps_si512(x.v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_and_si512(
      _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))),
      _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
  const __mmask16 nan = _mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q);
  return {_mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, rounded, _mm512_set1_epi32(0x7fc00000)))};
}
Vf16 round_half(Vf16 x) {
  return {_mm512_cvtph_ps(_mm512_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))};
}
Vf16 vexp(Vf16 x) {
  __m512 a = _mm512_min_ps(_mm512_max_ps(x.v, _mm512_set1_ps(kExpLo)), _mm512_set1_ps(kExpHi));
  const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(kLog2e)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  a = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kLn2Hi), a);
  a = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kLn2Lo), a);
  __m512 p = _mm512_set1_ps(kP0);
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kP5));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, a), a, a), _mm512_set1_ps(1.0f));
  // y 2^fx in one instruction (fx is a whole number within the normal
  // exponents), the same value as building 2^fx in the exponent bits.
  return {_mm512_scalef_ps(y, fx)};
}
#endif

}  // namespace
}  // namespace rk_vec
