// Output sizes and argument checks for every op, written once and used by every backend.
// All shape math is int64 and overflow-checked. Messages follow PyTorch's wording where it has one,
// so `pytest.raises(match=...)` written against torch also matches us.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "params.h"

namespace convpool {

// ---- small helpers -------------------------------------------------------------------------

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  TORCH_CHECK(!__builtin_mul_overflow(a, b, &r), what, ": size arithmetic overflows int64 (", a,
              " * ", b, ")");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  TORCH_CHECK(!__builtin_add_overflow(a, b, &r), what, ": size arithmetic overflows int64 (", a,
              " + ", b, ")");
  return r;
}

// Floor division for a possibly negative numerator and a positive denominator.
inline int64_t div_floor(int64_t num, int64_t den) {
  int64_t q = num / den;
  return (num % den != 0 && num < 0) ? q - 1 : q;
}

inline std::string sizes_str(c10::IntArrayRef sizes) {
  std::ostringstream ss;
  ss << sizes;
  return ss.str();
}

inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

inline Strides4 strides4(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// ---- conv2d --------------------------------------------------------------------------------

// "stride", "padding", "dilation": one value or one per spatial dimension.
inline std::pair<int64_t, int64_t> conv2d_pair(c10::IntArrayRef v, const char* name) {
  TORCH_CHECK(v.size() == 1 || v.size() == 2, "expected ", name,
              " to be a single integer value or a list of 2 values to match the convolution "
              "dimensions, but got ",
              name, "=", v);
  return v.size() == 1 ? std::make_pair(v[0], v[0]) : std::make_pair(v[0], v[1]);
}

inline const char* dtype_name(c10::ScalarType t) { return c10::toString(t); }

inline bool is_conv_dtype(c10::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Tensor-level checks shared by the forward and backward conv ops: dtype, device, layout.
inline void check_conv2d_tensor(const at::Tensor& t, const char* name, const at::Tensor& like,
                                const char* like_name) {
  TORCH_CHECK(t.layout() == at::kStrided, "convpool.conv2d: ", name,
              " must be a dense (strided) tensor, but got layout ", t.layout());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), like_name, " type (",
              dtype_name(like.scalar_type()), ") and ", name, " type (", dtype_name(t.scalar_type()),
              ") should be the same");
  TORCH_CHECK(t.device() == like.device(), like_name, " and ", name,
              " should be on the same device, but got ", like_name, " on ", like.device(), " and ",
              name, " on ", t.device());
}

inline void check_conv2d_dtype(const at::Tensor& t) {
  TORCH_CHECK_NOT_IMPLEMENTED(is_conv_dtype(t.scalar_type()), "convpool.conv2d: \"conv2d\" not implemented for '",
                              dtype_name(t.scalar_type()),
                              "' (supported: Float, Double, Half, BFloat16)");
}

// Builds the validated problem description. Every check happens here, before any allocation.
// input_sizes is 4-D (the caller has already turned an unbatched 3-D input into a batch of one).
inline Conv2dParams conv2d_params(c10::IntArrayRef input_sizes, c10::IntArrayRef weight_sizes,
                                  std::optional<c10::IntArrayRef> bias_sizes,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  c10::IntArrayRef dilation, int64_t groups) {
  const auto [stride_h, stride_w] = conv2d_pair(stride, "stride");
  const auto [pad_h, pad_w] = conv2d_pair(padding, "padding");
  const auto [dil_h, dil_w] = conv2d_pair(dilation, "dilation");
  TORCH_CHECK(groups > 0, "non-positive groups is not supported");
  TORCH_CHECK(pad_h >= 0 && pad_w >= 0, "negative padding is not supported");
  TORCH_CHECK(stride_h > 0 && stride_w > 0, "non-positive stride is not supported");
  TORCH_CHECK(dil_h > 0 && dil_w > 0,
              "non-positive dilation is not supported: dilation should be greater than zero, but got dilation=",
              dilation);
  TORCH_CHECK(input_sizes.size() == 4, "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: ",
              input_sizes);
  TORCH_CHECK(weight_sizes.size() == 4, "Expected ", weight_sizes.size(), "-dimensional input for ",
              weight_sizes.size(), "-dimensional weight ", weight_sizes, ", but got ",
              input_sizes.size(), "-dimensional input of size ", input_sizes,
              " instead (conv2d takes a 4-dimensional weight)");
  TORCH_CHECK(weight_sizes[0] >= groups, "Given groups=", groups,
              ", expected weight to be at least ", groups,
              " at dimension 0, but got weight of size ", weight_sizes, " instead");
  TORCH_CHECK(weight_sizes[0] % groups == 0, "Given groups=", groups,
              ", expected weight to be divisible by ", groups,
              " at dimension 0, but got weight of size [", weight_sizes, "] instead");
  const int64_t expected_channels = checked_mul(weight_sizes[1], groups, "conv2d");
  TORCH_CHECK(input_sizes[1] == expected_channels, "Given groups=", groups, ", weight of size ",
              weight_sizes, ", expected input", input_sizes, " to have ", expected_channels,
              " channels, but got ", input_sizes[1], " channels instead");
  if (bias_sizes.has_value()) {
    TORCH_CHECK(bias_sizes->size() == 1 && (*bias_sizes)[0] == weight_sizes[0],
                "Given weight of size ", weight_sizes,
                ", expected bias to be 1-dimensional with ", weight_sizes[0],
                " elements, but got bias of size ", *bias_sizes, " instead");
  }
  // PyTorch hands a zero-sized kernel to oneDNN and reports its internal error; we say what it is.
  TORCH_CHECK(weight_sizes[2] > 0 && weight_sizes[3] > 0,
              "convpool.conv2d: kernel size should be greater than zero, but got weight of size ",
              weight_sizes);

  Conv2dParams p{};
  p.batch = input_sizes[0];
  p.in_channels = input_sizes[1];
  p.in_height = input_sizes[2];
  p.in_width = input_sizes[3];
  p.out_channels = weight_sizes[0];
  p.kernel_h = weight_sizes[2];
  p.kernel_w = weight_sizes[3];
  p.stride_h = stride_h;
  p.stride_w = stride_w;
  p.pad_h = pad_h;
  p.pad_w = pad_w;
  p.dilation_h = dil_h;
  p.dilation_w = dil_w;
  p.groups = groups;

  const int64_t padded_h = checked_add(p.in_height, checked_mul(2, pad_h, "conv2d"), "conv2d");
  const int64_t padded_w = checked_add(p.in_width, checked_mul(2, pad_w, "conv2d"), "conv2d");
  const int64_t extent_h = checked_add(checked_mul(dil_h, p.kernel_h - 1, "conv2d"), 1, "conv2d");
  const int64_t extent_w = checked_add(checked_mul(dil_w, p.kernel_w - 1, "conv2d"), 1, "conv2d");
  TORCH_CHECK(padded_h >= extent_h && padded_w >= extent_w,
              "Calculated padded input size per channel: (", padded_h, " x ", padded_w,
              "). Kernel size: (", extent_h, " x ", extent_w,
              "). Kernel size can't be greater than actual input size");
  p.out_height = (padded_h - extent_h) / stride_h + 1;
  p.out_width = (padded_w - extent_w) / stride_w + 1;
  return p;
}

// The output layout PyTorch's CPU convolution picks: channels_last if input or weight is.
inline at::MemoryFormat conv2d_memory_format(const at::Tensor& a, const at::Tensor& b) {
  return (is_channels_last(a) || is_channels_last(b)) ? at::MemoryFormat::ChannelsLast
                                                       : at::MemoryFormat::Contiguous;
}

inline void check_grad_output_shape(const at::Tensor& grad_output, c10::IntArrayRef expected,
                                    const char* op) {
  TORCH_CHECK(grad_output.sizes() == expected, op, ": expected grad_output of size ", expected,
              ", but got grad_output of size ", grad_output.sizes());
}

// ---- max_pool2d ----------------------------------------------------------------------------

inline std::pair<int64_t, int64_t> pool2d_pair(c10::IntArrayRef v, const char* message) {
  TORCH_CHECK(v.size() == 1 || v.size() == 2, message);
  return v.size() == 1 ? std::make_pair(v[0], v[0]) : std::make_pair(v[0], v[1]);
}

// floor_or_ceil((in + 2*pad - dilation*(kernel-1) - 1) / stride) + 1, and in ceil mode the last
// window must start inside the input or the left padding.
inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride,
                                int64_t dilation, bool ceil_mode) {
  const int64_t extent = checked_add(checked_mul(dilation, kernel - 1, "max_pool2d"), 1, "max_pool2d");
  int64_t num = checked_add(in, checked_mul(2, pad, "max_pool2d"), "max_pool2d") - extent;
  if (ceil_mode) num = checked_add(num, stride - 1, "max_pool2d");
  int64_t out = div_floor(num, stride) + 1;
  if (ceil_mode && out > 0 && (out - 1) * stride >= in + pad) --out;
  return out;
}

inline bool is_pool_dtype(c10::ScalarType t) {
  return at::isFloatingType(t) || (at::isIntegralType(t, /*includeBool=*/false));
}

inline void check_max_pool2d_input(const at::Tensor& input) {
  TORCH_CHECK(input.layout() == at::kStrided,
              "convpool.max_pool2d: input must be a dense (strided) tensor, but got layout ",
              input.layout());
  TORCH_CHECK_NOT_IMPLEMENTED(is_pool_dtype(input.scalar_type()), "\"max_pool2d\" not implemented for '",
                              dtype_name(input.scalar_type()), "'");
}

// input_sizes may be 3-D (unbatched) or 4-D.
inline Pool2dParams max_pool2d_params(c10::IntArrayRef input_sizes, c10::IntArrayRef kernel_size,
                                      c10::IntArrayRef stride, c10::IntArrayRef padding,
                                      c10::IntArrayRef dilation, bool ceil_mode) {
  const auto [kh, kw] = pool2d_pair(
      kernel_size, "max_pool2d: kernel_size must either be a single int, or a tuple of two ints");
  TORCH_CHECK(stride.size() <= 2,
              "max_pool2d: stride must either be omitted, a single int, or a tuple of two ints");
  // An omitted stride means stride = kernel_size.
  const auto [sh, sw] = stride.empty() ? std::make_pair(kh, kw)
                                       : pool2d_pair(stride, "max_pool2d: stride must either be omitted, a single int, or a tuple of two ints");
  const auto [ph, pw] = pool2d_pair(
      padding, "max_pool2d: padding must either be a single int, or a tuple of two ints");
  const auto [dh, dw] = pool2d_pair(
      dilation, "max_pool2d: dilation must be either a single int, or a tuple of two ints");

  TORCH_CHECK(kh > 0 && kw > 0, "kernel size should be greater than zero, but got kH: ", kh,
              " kW: ", kw);
  TORCH_CHECK(sh != 0 && sw != 0, "stride should not be zero");
  TORCH_CHECK(sh > 0 && sw > 0, "stride should be greater than zero, but got dH: ", sh, " dW: ", sw);
  TORCH_CHECK(dh > 0 && dw > 0, "dilation should be greater than zero, but got dilationH: ", dh,
              " dilationW: ", dw);
  TORCH_CHECK(ph >= 0 && pw >= 0, "pad must be non-negative, but got pad: ", ph < 0 ? ph : pw);
  const int64_t extent_h = checked_add(checked_mul(dh, kh - 1, "max_pool2d"), 1, "max_pool2d");
  const int64_t extent_w = checked_add(checked_mul(dw, kw - 1, "max_pool2d"), 1, "max_pool2d");
  TORCH_CHECK(ph <= extent_h / 2 && pw <= extent_w / 2,
              "pad should be at most half of effective kernel size, but got pad=",
              ph > extent_h / 2 ? ph : pw, ", kernel_size=", ph > extent_h / 2 ? kh : kw,
              " and dilation=", ph > extent_h / 2 ? dh : dw);
  TORCH_CHECK(pw <= kw / 2 && ph <= kh / 2,
              "pad should be smaller than or equal to half of kernel size, but got padW = ", pw,
              ", padH = ", ph, ", kW = ", kw, ", kH = ", kh);

  const size_t ndim = input_sizes.size();
  TORCH_CHECK(ndim == 3 || ndim == 4, "non-empty 3D or 4D (batch mode) tensor expected for input");
  const bool valid_dims = input_sizes[ndim - 3] != 0 && input_sizes[ndim - 2] != 0 &&
                          input_sizes[ndim - 1] != 0;
  TORCH_CHECK(valid_dims,
              "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but "
              "got:",
              input_sizes);

  Pool2dParams p{};
  p.batch = ndim == 4 ? input_sizes[0] : 1;
  p.channels = input_sizes[ndim - 3];
  p.in_height = input_sizes[ndim - 2];
  p.in_width = input_sizes[ndim - 1];
  p.kernel_h = kh;
  p.kernel_w = kw;
  p.stride_h = sh;
  p.stride_w = sw;
  p.pad_h = ph;
  p.pad_w = pw;
  p.dilation_h = dh;
  p.dilation_w = dw;
  p.ceil_mode = ceil_mode;
  p.out_height = pool_output_size(p.in_height, kh, ph, sh, dh, ceil_mode);
  p.out_width = pool_output_size(p.in_width, kw, pw, sw, dw, ceil_mode);
  TORCH_CHECK(p.out_height >= 1 && p.out_width >= 1, "Given input size: (", p.channels, "x",
              p.in_height, "x", p.in_width, "). Calculated output size: (", p.channels, "x",
              p.out_height, "x", p.out_width, "). Output size is too small");
  return p;
}

// Output sizes with the input's rank (3-D stays 3-D).
inline std::vector<int64_t> max_pool2d_output_sizes(c10::IntArrayRef input_sizes,
                                                    const Pool2dParams& p) {
  std::vector<int64_t> out(input_sizes.begin(), input_sizes.end());
  out[out.size() - 2] = p.out_height;
  out[out.size() - 1] = p.out_width;
  return out;
}

}  // namespace convpool
