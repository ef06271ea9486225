// The GEMM's dispatcher (see gemm.h for the design): the kernel table of the CPU's ISA (isa.h's
// choice, made once; kernels_impl.h compiled once per ISA by generic.cpp, avx2.cpp and
// avx512.cpp, the library itself staying baseline x86-64), the packing transposes' entry points
// and the per-thread buffers.
#include "gemm.h"

#include <c10/util/Exception.h>

#include <cstdlib>

#include "../isa.h"
#include "kernels.h"

namespace convpool::cpu::gemm {
namespace {

// The kernels of the widest ISA the CPU has (capped by CONVPOOL_CPU_ISA).
const Kernels& kernels() {
  static const Kernels* const table = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_avx512()) return &avx512::kKernels;
    if (use_avx2()) return &avx2::kKernels;
#endif
    return &generic::kKernels;
  }();
  return *table;
}

}  // namespace

const char* active_isa() { return isa_name(cpu::active_isa()); }

template <>
const KernelInfo<float>& kernel_info<float>() {
  return kernels().f32;
}

template <>
const KernelInfo<double>& kernel_info<double>() {
  return kernels().f64;
}

void pack_transpose8(const float* const* rows, int mr, float* dst) {
  if (mr == 8) {
    kernels().transpose8x8(rows, dst, 8);
    return;
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < 8; ++j) dst[j * mr + i] = rows[i] ? rows[i][j] : 0.0f;
}

void transpose8x8(const float* const* rows, float* dst, int64_t ld) {
  kernels().transpose8x8(rows, dst, ld);
}

void* thread_buffer(int which, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[kThreadBuffers];
  Buffer& buf = buffers[which];
  if (buf.size < bytes) {
    std::free(buf.data);
    buf.size = static_cast<size_t>(round_up(static_cast<int64_t>(bytes), 4096));
    buf.data = std::aligned_alloc(64, buf.size);
    TORCH_CHECK(buf.data != nullptr, "convpool: out of memory for a GEMM packing buffer of ",
                buf.size, " bytes");
  }
  return buf.data;
}

}  // namespace convpool::cpu::gemm
