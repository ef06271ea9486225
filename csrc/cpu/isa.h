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

// Ordered: a kernel needing avx2 runs on an avx512 CPU.
enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };  // avx2 means AVX2 + FMA
const char* isa_name(Isa isa);  // "generic", "avx2", "avx512"
Isa active_isa();

inline bool use_avx2() { return active_isa() >= Isa::avx2; }
// AVX-512F (the CPU has it and CONVPOOL_CPU_ISA allows it).
inline bool use_avx512() { return active_isa() >= Isa::avx512; }

}  // namespace convpool::cpu
