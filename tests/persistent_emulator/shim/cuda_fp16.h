// Host stand-in for cuda_fp16.h (persistent kernels' CPU emulator): __half
// as its 16-bit pattern; conversions through the compiler's _Float16, which
// rounds to nearest even as __float2half_rn does.
#pragma once

#include "cuda_runtime.h"

struct __half {
  uint16_t bits;
};
inline __half __float2half_rn(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  __half out;
  std::memcpy(&out.bits, &h, 2);
  return out;
}
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return static_cast<float>(v);
}
inline unsigned short __half_as_ushort(__half h) { return h.bits; }
