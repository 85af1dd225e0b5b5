// Run-time choice of the gate math's instruction-set level (see isa.h).
#include "isa.h"

#include "amx_gemm.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace rnnkernels {

namespace {
constexpr CpuIsa kAllLevels[] = {CpuIsa::kBase, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx};

// Linux gives a process the AMX tile data state only on request
// (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); without it the
// first tile instruction faults. Asked once; true when granted.
bool amx_permitted() {
#if defined(__linux__) && defined(__x86_64__)
  static const bool granted = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
#else
  return false;
#endif
}
}  // namespace

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAmx:
      return "amx";
    default:
      return "base";
  }
}

bool isa_supported(CpuIsa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's cpu model also checks that the OS saves the wider registers.
  switch (isa) {
    case CpuIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case CpuIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && isa_supported(CpuIsa::kAvx2);
    case CpuIsa::kAmx:
#if (defined(__GNUC__) && __GNUC__ >= 12) || defined(__clang__)
      return isa_supported(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("amx-tile") &&
             __builtin_cpu_supports("amx-bf16") && amx_compiled() && amx_permitted();
#else
      return false;
#endif
    default:
      return true;
  }
#else
  return isa == CpuIsa::kBase;
#endif
}

CpuIsa detected_isa() {
  static const CpuIsa widest = [] {
    CpuIsa best = CpuIsa::kBase;
    for (CpuIsa level : kAllLevels) {
      if (isa_supported(level)) {
        best = level;
      }
    }
    return best;
  }();
  return widest;
}

std::string supported_isas() {
  std::string names;
  for (CpuIsa level : kAllLevels) {
    if (isa_supported(level)) {
      names += names.empty() ? "" : ", ";
      names += isa_name(level);
    }
  }
  return names;
}

std::string cpu_16bit_features() {
  std::string names;
#if defined(__x86_64__) && ((defined(__GNUC__) && __GNUC__ >= 12) || defined(__clang__))
  const std::pair<const char*, bool> features[] = {
      {"avx512_bf16", __builtin_cpu_supports("avx512bf16")},
      {"avx512_fp16", __builtin_cpu_supports("avx512fp16")},
      {"amx_bf16", __builtin_cpu_supports("amx-bf16")},
      {"amx_tile", __builtin_cpu_supports("amx-tile")},
  };
  for (const auto& [name, present] : features) {
    if (present) {
      names += names.empty() ? "" : " ";
      names += name;
    }
  }
#endif
  return names;
}

CpuIsa active_isa() {
  const char* forced = std::getenv("RNNKERNELS_CPU_ISA");
  if (forced == nullptr || forced[0] == '\0') {
    return detected_isa();
  }
  for (CpuIsa level : kAllLevels) {
    if (std::strcmp(forced, isa_name(level)) == 0) {
      TORCH_CHECK_VALUE(isa_supported(level), "RNNKERNELS_CPU_ISA=", forced,
                        ": this CPU does not support that level (it supports ",
                        supported_isas(), ")");
      return level;
    }
  }
  TORCH_CHECK_VALUE(false, "RNNKERNELS_CPU_ISA=", forced,
                    " is not a level: choose one of base, avx2, avx512, amx");
  return CpuIsa::kBase;  // not reached: the check above throws
}

}  // namespace rnnkernels
