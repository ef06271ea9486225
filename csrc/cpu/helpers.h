// The small helpers every CPU kernel family uses: index ranges of window geometry, the
// accumulator type, the grain of a parallel loop. Plain C++ (no torch), so the per-ISA kernel
// files may include it too.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace convpool::cpu {

// A half-open index range [begin, end).
struct Range {
  int64_t begin, end;
};

// Output positions o in [begin, end) whose input position o * stride + offset lies in
// [0, in_size), clipped to [0, out_size).
inline Range outputs_inside(int64_t offset, int64_t stride, int64_t in_size, int64_t out_size) {
  const int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last = in_size - 1 - offset;
  const int64_t end = last < 0 ? 0 : std::min(out_size, last / stride + 1);
  return {begin, std::max(begin, end)};
}

// Taps t in [begin, end) of a window of `kernel` taps `dilation` apart, starting at input
// position `start`, that land inside [0, size).
inline Range taps_inside(int64_t start, int64_t kernel, int64_t dilation, int64_t size) {
  const int64_t begin = start < 0 ? (-start + dilation - 1) / dilation : 0;
  const int64_t end = start >= size ? 0 : std::min(kernel, (size - start + dilation - 1) / dilation);
  return {begin, std::max(begin, end)};
}

// The type a kernel accumulates `scalar_t` in: double for double, float for everything else
// (float, half, bfloat16).
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// The grain of a parallel loop over items of `work_per_item` units each (multiply-adds,
// compares, elements): items per task so that a task does about `work_per_task` units.
constexpr int64_t kTaskWork = 32768;
inline int64_t grain_for(int64_t work_per_item, int64_t work_per_task = kTaskWork) {
  return std::max<int64_t>(1, work_per_task / std::max<int64_t>(1, work_per_item));
}

}  // namespace convpool::cpu
