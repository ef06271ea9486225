// The CPU's instruction set, one enum for every kernel family: detected once, at first use
// (isa.cpp: the CPU's features, capped by CONVPOOL_CPU_ISA=generic|avx2|avx512|native). The GEMM's
// micro-kernel, Winograd's transforms, the depthwise and max_pool2d kernels and the registry's
// ISA check all read it. The library is compiled for baseline x86-64 (it must import anywhere);
// AVX2 / AVX-512 kernels are files compiled under the ISA's `#pragma GCC target`, one per kernel
// family and ISA (gemm/avx2.cpp, winograd/avx512.cpp, depthwise/avx512.cpp, pool/avx2.cpp, ...: simd/<isa>.h's
// vocabulary, namespace <family>::<isa>), each family's dispatcher picking the table of
// active_isa(). Plain C++.
#pragma once

namespace convpool::cpu {

// Ordered: a kernel needing avx2 runs on an avx512 CPU. avx2 means AVX2 + FMA; amx means
// AVX-512 plus AMX-TILE and AMX-BF16 with Linux's permission to use the tile data: a registry
// entry's requirement (amx/), never the vector kernels' ISA, so active_isa() stops at avx512.
enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, amx = 3 };
const char* isa_name(Isa isa);  // "generic", "avx2", "avx512", "amx"
Isa active_isa();
// The CPU has AMX-TILE + AMX-BF16, active_isa() is avx512 (so CONVPOOL_CPU_ISA=avx2 or generic
// turn AMX off too) and arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) succeeded (asked once).
bool amx_usable();
// Can an entry needing `isa` run here.
inline bool isa_reached(Isa isa) {
  return isa == Isa::amx ? amx_usable() : static_cast<int>(isa) <= static_cast<int>(active_isa());
}

inline bool use_avx2() { return active_isa() >= Isa::avx2; }
// AVX-512F (the CPU has it and CONVPOOL_CPU_ISA allows it).
inline bool use_avx512() { return active_isa() >= Isa::avx512; }

}  // namespace convpool::cpu
