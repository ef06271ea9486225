// The direct-convolution tile in portable C++ (simd/generic.h: 8-lane structs): kernels_impl.h
// compiled once more, for CPUs without AVX2 and for CONVPOOL_CPU_ISA=generic.
#include <cstdint>

#include "kernels.h"
#include "../simd/generic.h"

#define CONVPOOL_DIRECT_ISA generic
#include "kernels_impl.h"

namespace convpool::cpu::direct::generic {

const Kernels kKernels = make_kernels<4>("generic");

}  // namespace convpool::cpu::direct::generic
