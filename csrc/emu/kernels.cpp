// The CUDA kernels of csrc/cuda/, compiled by the host compiler for the emulator (cuda_emu.h):
// the very same sources, in namespace convpool::emu.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#define CONVPOOL_EMULATE 1
#define CONVPOOL_KERNEL_NS emu

#include "../cuda/conv2d.cu"
#include "../cuda/max_pool2d.cu"
