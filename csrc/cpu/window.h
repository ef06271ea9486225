// Window geometry shared by the CPU kernels that walk output rows tap by tap (max_pool2d,
// depthwise conv2d).
#pragma once

#include <algorithm>
#include <cstdint>

namespace convpool::cpu {

struct OutputRange {
  int64_t begin, end;
};

// Output positions o in [begin, end) whose input position o * stride + offset lies in
// [0, in_size), clipped to [0, out_size).
inline OutputRange outputs_inside(int64_t offset, int64_t stride, int64_t in_size,
                                  int64_t out_size) {
  const int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last = in_size - 1 - offset;
  const int64_t end = last < 0 ? 0 : std::min(out_size, last / stride + 1);
  return {begin, std::max(begin, end)};
}

}  // namespace convpool::cpu
