// Winograd's portable transforms: kernels_impl.h compiled once over simd/generic.h (plain loops
// the compiler may vectorize for the baseline ISA; any architecture).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels.h"
#include "../simd/generic.h"

#define CONVPOOL_WINOGRAD_ISA generic
#include "kernels_impl.h"
