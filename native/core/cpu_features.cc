#include "cpu_features.h"

#include "error.h"

// CPUID and XGETBV: GCC and Clang (Linux, macOS, MinGW) through <cpuid.h> and inline
// assembly, MSVC through its intrinsics. Other architectures report no x86 features.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define LAMINATE_X86 1
#elif defined(_M_X64) && defined(_MSC_VER)
#include <intrin.h>
#define LAMINATE_X86 1
#define LAMINATE_X86_MSVC 1
#endif

#if defined(LAMINATE_X86) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

// arm64: NEON is part of the architecture; the dot-product extension is reported by the
// kernel (Linux: the auxiliary vector; macOS: sysctl; Windows: IsProcessorFeaturePresent).
#if defined(__aarch64__) || defined(_M_ARM64)
#define LAMINATE_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#elif defined(_WIN32)
#include <windows.h>
#endif
#endif

namespace laminate {

#ifdef LAMINATE_X86
#ifdef LAMINATE_X86_MSVC
static uint64_t read_xcr0() { return _xgetbv(0); }

static bool get_cpuid(unsigned leaf, unsigned& a, unsigned& b, unsigned& c, unsigned& d) {
  int r[4];
  __cpuid(r, 0);
  if (static_cast<unsigned>(r[0]) < leaf) return false;
  __cpuidex(r, static_cast<int>(leaf), 0);
  a = r[0], b = r[1], c = r[2], d = r[3];
  return true;
}

static unsigned get_cpuid_max() {
  int r[4];
  __cpuid(r, 0);
  return static_cast<unsigned>(r[0]);
}

static void get_cpuid_count(unsigned leaf, unsigned sub, unsigned& a, unsigned& b, unsigned& c, unsigned& d) {
  int r[4];
  __cpuidex(r, static_cast<int>(leaf), static_cast<int>(sub));
  a = r[0], b = r[1], c = r[2], d = r[3];
}
#else
static uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

static bool get_cpuid(unsigned leaf, unsigned& a, unsigned& b, unsigned& c, unsigned& d) {
  return __get_cpuid(leaf, &a, &b, &c, &d);
}

static unsigned get_cpuid_max() { return __get_cpuid_max(0, nullptr); }

static void get_cpuid_count(unsigned leaf, unsigned sub, unsigned& a, unsigned& b, unsigned& c, unsigned& d) {
  __cpuid_count(leaf, sub, a, b, c, d);
}
#endif

// Whether the OS saves the AVX-512 registers. macOS turns that on at a thread's first
// AVX-512 instruction, so XCR0 does not show it beforehand; the kernel says so in sysctl.
static bool zmm_enabled(uint64_t xcr0) {
#ifdef __APPLE__
  int value = 0;
  size_t size = sizeof value;
  if (sysctlbyname("hw.optional.avx512f", &value, &size, nullptr, 0) == 0 && value) return true;
#endif
  return (xcr0 & 0xe6) == 0xe6;
}
#endif

#ifdef LAMINATE_ARM64
static bool arm64_dotprod() {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
  int value = 0;
  size_t size = sizeof value;
  return sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, nullptr, 0) == 0 && value;
#elif defined(_WIN32) && defined(PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE)
  return IsProcessorFeaturePresent(PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE) != 0;
#else
  return false;
#endif
}
#endif

static CpuFeatures detect() {
  CpuFeatures f;
#ifdef LAMINATE_ARM64
  f.neon = true;
  f.neondot = arm64_dotprod();
#endif
#ifdef LAMINATE_X86
  unsigned a, b, c, d;
  if (!get_cpuid(1, a, b, c, d)) return f;
  bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
  if (!osxsave || !avx) return f;
  uint64_t xcr0 = read_xcr0();
  bool ymm_state = (xcr0 & 0x6) == 0x6;
  bool zmm_state = zmm_enabled(xcr0);
  if (get_cpuid_max() < 7) return f;
  get_cpuid_count(7, 0, a, b, c, d);
  bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx2 = avx2 && fma && f16c && ymm_state;
  f.avx512 = f.avx2 && avx512f && avx512bw && avx512vl && zmm_state;
  f.avx512vnni = f.avx512 && (c & (1u << 11));
  get_cpuid_count(7, 1, a, b, c, d);
  f.avx512bf16 = f.avx512 && (a & (1u << 5));
  f.avx2vnni = f.avx2 && (a & (1u << 4));
#endif
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx2Vnni: return "avx2vnni";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512vnni";
    case Isa::Neon: return "neon";
    case Isa::NeonDot: return "neondot";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return cpu_features().avx2;
    case Isa::Avx2Vnni: return cpu_features().avx2vnni;
    case Isa::Avx512: return cpu_features().avx512;
    case Isa::Avx512Vnni: return cpu_features().avx512vnni;
    case Isa::Neon: return cpu_features().neon;
    case Isa::NeonDot: return cpu_features().neondot;
  }
  return false;
}

static constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot};

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

Isa best_isa() { return supported_isas().back(); }

Isa resolve_isa(const std::string& name) {
  if (name.empty() || name == "auto") return best_isa();
  for (Isa isa : kAllIsas) {
    if (name != isa_name(isa)) continue;
    if (!isa_supported(isa)) throw Error("instruction set '" + name + "' is not supported by this CPU");
    return isa;
  }
  throw Error("unknown instruction set '" + name + "' (expected auto, scalar, avx2, avx2vnni, avx512, avx512vnni, neon or neondot)");
}

}  // namespace laminate
