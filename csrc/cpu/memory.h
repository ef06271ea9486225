// Memory hints for the CPU kernels' fresh outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace convpool::cpu {

// Outputs of 32 MiB or more: glibc's malloc maps such blocks anew on every allocation (its mmap
// threshold stops growing at 32 MiB), so every call first-touches thousands of 4 KiB pages, at
// ~1.4 us a fault on the benchmark host (a KVM guest): SqueezeNet's 35 MB pool1 gradient took
// 11 ms, torch's alike, for a kernel of ~1 ms. Transparent huge pages on the 2 MiB-aligned
// interior of the fresh block (a hint; the kernel ignores it where THP is off) cut that ~7x.
// Left out below 32 MiB: such blocks usually come back from malloc's heap already mapped.
inline void advise_huge_pages(const at::Tensor& fresh) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t bytes = fresh.storage().nbytes();
  if (bytes < (size_t(32) << 20)) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(fresh.storage().data());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = (begin + bytes) & ~(kHuge - 1);
  if (first < last) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

}  // namespace convpool::cpu
