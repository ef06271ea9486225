// What the max_pool2d kernels share (max_pool2d.cpp: the registry table, the portable and AVX2
// kernels, the backward; max_pool2d_avx512.cpp: the AVX-512 forward kernels): the forward
// operands and window geometry, and the AVX-512 entry points.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "../params.h"
#include "../shape.h"
#include "helpers.h"

namespace convpool::cpu {
namespace pool {

// Output columns [begin, end) whose tap `kw` lands inside the input row.
inline Range columns_hitting(const Pool2dParams& p, int64_t kw) {
  const int64_t offset = kw * p.dilation_w - p.pad_w;  // iw = ow * stride_w + offset
  return outputs_inside(offset, p.stride_w, p.in_width, p.out_width);
}

// What every forward loop reads and writes: strides and data of input, values and (when asked
// for) indices.
template <typename scalar_t>
struct ForwardOperands {
  Strides4 is, vs, xs;
  const scalar_t* in;
  scalar_t* out;
  int64_t* idx;  // nullptr: values only
};

template <typename scalar_t>
ForwardOperands<scalar_t> forward_operands(const at::Tensor& input, at::Tensor& values,
                                           at::Tensor* indices) {
  return {strides4(input), strides4(values), indices ? strides4(*indices) : Strides4{},
          input.const_data_ptr<scalar_t>(), values.mutable_data_ptr<scalar_t>(),
          indices ? indices->mutable_data_ptr<int64_t>() : nullptr};
}

}  // namespace pool

// The AVX-512F kernels for float (max_pool2d_avx512.cpp): indices in int32 lanes, so the caller
// ensures a plane has fewer than 2^31 elements. Run only where the CPU has AVX-512F (the
// registry's ISA check; indices_in_range asks isa.h itself).
namespace pool_avx512 {

constexpr int kLanes = 16;
constexpr int kMaxPixelBlocks = 8;  // channel vectors of a pixel kept in registers at once

// Whether forward_rows handles this problem: unit-stride output rows, int32 lane offsets.
bool rows_supported(const Pool2dParams& p, const Strides4& is, const Strides4& vs,
                    const Strides4* xs);
// pool_avx512_rows (NCHW rows) and pool_avx512_channels_last; indices null for the values alone.
void forward_rows(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                  at::Tensor* indices);
void forward_channels_last(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                           at::Tensor* indices);
// Whether count indices (unit stride) all lie in [-1, plane_size).
bool indices_in_range(const int64_t* index, int64_t count, int64_t plane_size);

}  // namespace pool_avx512
}  // namespace convpool::cpu
