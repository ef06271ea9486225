// Problem descriptions shared by every backend (CPU kernels, CUDA kernels, the CUDA emulator).
// Plain C++ on purpose: .cu files include this and nothing of torch.
#pragma once
#include <cstdint>

namespace convpool {

// Element strides of a 4-D (N, C, H, W) tensor, whatever its memory layout.
struct Strides4 {
  int64_t n, c, h, w;
};

// One 2-D convolution, validated and with output sizes computed (see shape.h).
struct Conv2dParams {
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
  int64_t groups;
  int64_t out_height, out_width;

  int64_t in_channels_per_group() const { return in_channels / groups; }
  int64_t out_channels_per_group() const { return out_channels / groups; }
  // Length of one im2col column: the reduction dimension of the GEMM.
  int64_t gemm_k() const { return in_channels_per_group() * kernel_h * kernel_w; }
};

// One 2-D max pooling, validated and with output sizes computed (see shape.h).
struct Pool2dParams {
  int64_t batch, channels, in_height, in_width;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
  int64_t out_height, out_width;
  bool ceil_mode;
};

// Index stored for an output window that covers no input element at all (possible with ceil_mode
// and dilation: every tap lands in padding). PyTorch returns indices outside the plane there;
// we return this sentinel and the backward skips it.
constexpr int64_t kNoInputIndex = -1;

}  // namespace convpool
