// The portable GEMM kernels: kernels_impl.h compiled once over simd/generic.h (plain loops the
// compiler may vectorize for the baseline ISA; any architecture), and its table.
#include <cstdint>

#include "kernels.h"
#include "../simd/generic.h"

#define CONVPOOL_GEMM_ISA generic
#include "kernels_impl.h"

namespace convpool::cpu::gemm::generic {

// AVX2's register tile (6 x 16 floats, 6 x 8 doubles), larger column blocks.
const Kernels kKernels = {
    {&micro_kernel<float, 6>, 6, 16, 96, 256, 4096, "generic"},
    {&micro_kernel<double, 6>, 6, 8, 96, 256, 2048, "generic"},
    &transpose8x8,
};

}  // namespace convpool::cpu::gemm::generic
