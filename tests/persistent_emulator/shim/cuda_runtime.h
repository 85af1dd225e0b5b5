// Host stand-in for the CUDA runtime header, for the persistent kernels'
// CPU emulator only (tests/persistent_emulator/README.md). It declares the
// handful of types, qualifiers and intrinsics the kernels use; the emulator
// runtime (emulator_runtime.h) gives the intrinsics their block-level meaning:
// one process per CTA, one thread per CUDA thread.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) alignas(n)

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

extern thread_local uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

// ------------------------------------------------------- runtime API (unused)
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorNotSupported = 801,
  cudaErrorCooperativeLaunchTooLarge = 720,
  cudaErrorLaunchTimeout = 702,
};
using cudaError = cudaError_t;
using cudaStream_t = struct CUstream_st*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrCooperativeLaunch = 95,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
inline cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int, size_t) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 0;
  return cudaSuccess;
}
// The emulator calls the kernels itself; a launch through the runtime is a bug.
inline cudaError_t cudaLaunchCooperativeKernel(const void*, dim3, dim3, void**, size_t, cudaStream_t) {
  return cudaErrorNotSupported;
}

// ------------------------------------------------------------- intrinsics
void rk_emu_syncthreads();
float rk_emu_shfl_xor(float value, int offset);
double rk_emu_shfl_xor(double value, int offset);

inline void __syncthreads() { rk_emu_syncthreads(); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <typename T>
inline T __shfl_xor_sync(unsigned, T value, int offset) {
  return rk_emu_shfl_xor(value, offset);
}

// Cached / streaming loads: plain loads here. A 16-byte load must be aligned
// as on the GPU (a misaligned one is an error there).
void rk_emu_misaligned(const void* p);
template <typename T>
inline T __ldcg(const T* p) {
  if (alignof(T) > 1 && reinterpret_cast<uintptr_t>(p) % sizeof(T) != 0) rk_emu_misaligned(p);
  T v;
  std::memcpy(&v, static_cast<const void*>(p), sizeof(T));
  return v;
}
template <typename T>
inline T __ldcs(const T* p) {
  return __ldcg(p);
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline long long __double_as_longlong(double d) {
  long long v;
  std::memcpy(&v, &d, 8);
  return v;
}

// --------------------------------------------- hooks the patched sources call
// (patch_sources.py replaces the kernels' inline PTX with these).
void rk_emu_spin_pause();
long long rk_emu_nanoseconds();
void rk_emu_mma(int engine, float d[4], const uint32_t a[4], const uint32_t b[2]);
uint32_t rk_emu_tf32_rna(float v);
unsigned char* rk_emu_dynamic_shared();
