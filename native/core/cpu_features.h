// Which instruction sets this CPU (and OS) supports, and which kernel family to use.
#pragma once
#include <string>
#include <vector>

namespace laminate {

// In order of preference (a CPU has either the x86-64 ones or the arm64 ones). The VNNI
// families run the AVX2 or AVX-512 kernels, with 8-bit dot products (vpdpbusd) in the EXL2
// matmul; NeonDot runs the NEON kernels with the ARMv8.2-A dot products (SDOT) there.
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx2Vnni = 2, Avx512 = 3, Avx512Vnni = 4, Neon = 5, NeonDot = 6 };

struct CpuFeatures {
  bool avx2 = false;     // AVX2 + FMA + F16C, with OS support for YMM state
  bool avx512 = false;   // AVX-512 F/BW/VL, with OS support for ZMM state
  bool avx512bf16 = false;
  bool avx2vnni = false;    // AVX-VNNI (VEX-encoded 8-bit dot products), with AVX2
  bool avx512vnni = false;  // AVX512_VNNI, with AVX-512
  bool neon = false;        // AArch64 Advanced SIMD (every arm64 CPU)
  bool neondot = false;     // the ARMv8.2-A dot-product instructions (SDOT, UDOT)
};

const CpuFeatures& cpu_features();
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
std::vector<Isa> supported_isas();
Isa best_isa();
// Parses "auto" or an isa_name(); throws Error for other names or for an ISA
// that this CPU cannot run.
Isa resolve_isa(const std::string& name);

}  // namespace laminate
