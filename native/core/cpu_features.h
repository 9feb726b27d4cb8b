// Which instruction sets this CPU (and OS) supports, and which kernel family to use.
#pragma once
#include <string>
#include <vector>

namespace laminate {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false;     // AVX2 + FMA + F16C, with OS support for YMM state
  bool avx512 = false;   // AVX-512 F/BW/VL, with OS support for ZMM state
  bool avx512bf16 = false;
};

const CpuFeatures& cpu_features();
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
std::vector<Isa> supported_isas();
Isa best_isa();
// Parses "scalar" | "avx2" | "avx512" | "auto"; throws Error for other names or for an ISA
// that this CPU cannot run.
Isa resolve_isa(const std::string& name);

}  // namespace laminate
