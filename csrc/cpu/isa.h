// The instruction-set level the CPU kernels' gate math runs at.
//
// torch.utils.cpp_extension compiles with no -m flags, so vector code lives in
// its own translation units (pointwise_<level>.cpp, each under a
// `#pragma GCC target`) and is chosen here at run time: the widest level this
// CPU supports, or the one RNNKERNELS_CPU_ISA names.
#pragma once

#include <string>

namespace rnnkernels {

// amx: the avx512 gate math, plus AMX-BF16 tiles for the per-step GEMMs of
// bfloat16 layers (amx_gemm.h); it needs the OS to grant the process the
// tile state, which isa_supported asks for once.
enum class CpuIsa { kBase = 0, kAvx2 = 1, kAvx512 = 2, kAmx = 3 };

const char* isa_name(CpuIsa isa);

// Whether this CPU (and its OS) can run code of that level.
bool isa_supported(CpuIsa isa);

// The widest level this CPU supports.
CpuIsa detected_isa();

// RNNKERNELS_CPU_ISA when set (read on every call, so tests can switch it),
// else detected_isa(). Raises ValueError for an unknown or unsupported level.
CpuIsa active_isa();

// "base, avx2" and so on: the levels this CPU supports.
std::string supported_isas();

// The 16-bit features of this CPU that decide the 16-bit GEMM paths, as
// /proc/cpuinfo names them: a space-separated subset of "avx512_bf16
// avx512_fp16 amx_bf16 amx_tile" (the AMX ones: the CPU has them; whether the
// OS lets a process use the tiles is asked when they are first needed).
std::string cpu_16bit_features();

}  // namespace rnnkernels
