// The one way our kernels are launched, and the few spellings that differ between nvcc and the
// CPU emulator (csrc/emu/cuda_emu.h). Kernel sources include this and nothing of torch.
//
// Under nvcc: <<<grid, block, smem, stream>>> followed by a launch-error check (a
// std::runtime_error, which torch reports as a RuntimeError). Under the emulator (the host compiler
// with CONVPOOL_EMULATE defined): the emulator's scheduler, which checks the same limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef CONVPOOL_EMULATE
#include "../emu/cuda_emu.h"
#ifndef CONVPOOL_KERNEL_NS
#define CONVPOOL_KERNEL_NS emu
#endif
#else
#include <cuda_runtime.h>
#ifndef CONVPOOL_KERNEL_NS
#define CONVPOOL_KERNEL_NS cuda
#endif
#endif

// Dynamic shared memory, `type* name`. (The emulator cannot see `extern __shared__` arrays.)
#ifdef CONVPOOL_EMULATE
#define CONVPOOL_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::convpool::emu::current.dynamic_shared)
#else
#define CONVPOOL_DYNAMIC_SHARED(type, name)                      \
  extern __shared__ __align__(128) unsigned char name##_bytes_[]; \
  type* name = reinterpret_cast<type*>(name##_bytes_)
#endif

// Static shared memory, `type name[count]`, bounded at compile time by the 48 KB hardware limit.
// The emulator places it in the block's static shared memory (poisoned at every block, 48 KB in
// all checked at run time); a plain __shared__ array would be a function-local static there.
#ifdef CONVPOOL_EMULATE
#define CONVPOOL_STATIC_SHARED(type, name, count)                                                \
  static_assert(sizeof(type) * (count) <= 48 * 1024, "static shared memory > 48 KB");            \
  static const char name##_tag_ = 0;                                                             \
  type* name = static_cast<type*>(                                                               \
      ::convpool::emu::static_shared(&name##_tag_, sizeof(type) * (count), alignof(type)))
#else
#define CONVPOOL_STATIC_SHARED(type, name, count)                                   \
  static_assert(sizeof(type) * (count) <= 48 * 1024, "static shared memory > 48 KB"); \
  __shared__ type name[count]
#endif

namespace convpool::CONVPOOL_KERNEL_NS {

// Grid dimensions are clamped to these; kernels loop (grid-stride) over what does not fit.
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridYZ = 65535;

inline unsigned grid_dim(int64_t blocks, int64_t limit) {
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > limit ? limit : blocks));
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Allows `kernel` up to `bytes` of dynamic shared memory (needed above 48 KB).
template <typename... KernelArgs>
void set_max_dynamic_shared_memory(void (*kernel)(KernelArgs...), size_t bytes) {
#ifdef CONVPOOL_EMULATE
  ::convpool::emu::set_max_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), bytes);
#else
  const cudaError_t err = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("convpool: cudaFuncSetAttribute failed: ") +
                             cudaGetErrorString(err));
#endif
}

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes,
            void* stream, Args&&... args) {
#ifdef CONVPOOL_EMULATE
  (void)stream;
  ::convpool::emu::run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                            [&] { kernel(args...); });
#else
  kernel<<<grid, block, shared_bytes, static_cast<cudaStream_t>(stream)>>>(
      std::forward<Args>(args)...);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("convpool: CUDA kernel launch failed: ") +
                             cudaGetErrorString(err));
#endif
}

}  // namespace convpool::CONVPOOL_KERNEL_NS
