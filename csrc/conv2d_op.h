// The device-independent body of every conv2d op: validate (shape.h), handle unbatched input,
// pick the output layout, allocate, then hand the validated problem to a backend. A backend is a
// struct with static fprop / dgrad / wgrad / grad_bias (cpu/conv2d.cpp, cuda/conv2d.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <optional>
#include <vector>

#include "shape.h"

namespace convpool {

inline void check_conv2d_tensors(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias) {
  check_conv2d_tensor(input, "input", input, "Input");
  check_conv2d_tensor(weight, "weight", input, "Input");
  if (bias.has_value()) check_conv2d_tensor(*bias, "bias", input, "Input");
  check_conv2d_dtype(input);
}

inline at::Tensor batched(const at::Tensor& t, bool unbatched) {
  return unbatched ? t.unsqueeze(0) : t;
}

inline std::vector<int64_t> batched_sizes(c10::IntArrayRef sizes) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  if (out.size() == 3) out.insert(out.begin(), 1);
  return out;
}

// PyTorch returns (N, 0, H_out, W_out) for an input without channels (a deliberate choice of
// its "empty" backend); we match it.
inline int64_t conv2d_output_channels(const Conv2dParams& p) {
  return p.in_channels == 0 ? 0 : p.out_channels;
}

template <class Backend>
at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                  c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  check_conv2d_tensors(input, weight, bias);
  const bool unbatched = input.dim() == 3;
  const at::Tensor x = batched(input, unbatched);
  std::optional<c10::IntArrayRef> bias_sizes;
  if (bias.has_value()) bias_sizes = bias->sizes();
  const Conv2dParams p =
      conv2d_params(x.sizes(), weight.sizes(), bias_sizes, stride, padding, dilation, groups);
  at::Tensor out = at::empty({p.batch, conv2d_output_channels(p), p.out_height, p.out_width},
                             x.options().memory_format(conv2d_memory_format(x, weight)));
  if (out.numel() > 0) Backend::fprop(p, x, weight, bias.has_value() ? &*bias : nullptr, out);
  return unbatched ? out.squeeze(0) : out;
}

template <class Backend>
at::Tensor conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                             c10::IntArrayRef input_size, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  check_conv2d_tensor(weight, "weight", grad_output, "grad_output");
  check_conv2d_dtype(grad_output);
  const bool unbatched = input_size.size() == 3;
  TORCH_CHECK(grad_output.dim() == static_cast<int64_t>(input_size.size()),
              "conv2d_grad_input: grad_output of size ", grad_output.sizes(),
              " does not match input_size ", input_size);
  const auto x_sizes = batched_sizes(input_size);
  const at::Tensor go = batched(grad_output, unbatched);
  const Conv2dParams p =
      conv2d_params(x_sizes, weight.sizes(), std::nullopt, stride, padding, dilation, groups);
  check_grad_output_shape(go, {p.batch, conv2d_output_channels(p), p.out_height, p.out_width},
                          "conv2d_grad_input");
  at::Tensor grad_input =
      at::empty(x_sizes, go.options().memory_format(conv2d_memory_format(go, weight)));
  if (grad_input.numel() > 0) {
    if (p.in_channels == 0 || go.numel() == 0) {
      grad_input.zero_();
    } else {
      Backend::dgrad(p, go, weight, grad_input);
    }
  }
  return unbatched ? grad_input.squeeze(0) : grad_input;
}

template <class Backend>
at::Tensor conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                              c10::IntArrayRef weight_size, c10::IntArrayRef stride,
                              c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  check_conv2d_tensor(input, "input", grad_output, "grad_output");
  check_conv2d_dtype(grad_output);
  const bool unbatched = input.dim() == 3;
  TORCH_CHECK(grad_output.dim() == input.dim(), "conv2d_grad_weight: grad_output of size ",
              grad_output.sizes(), " does not match input of size ", input.sizes());
  const at::Tensor x = batched(input, unbatched);
  const at::Tensor go = batched(grad_output, unbatched);
  const Conv2dParams p =
      conv2d_params(x.sizes(), weight_size, std::nullopt, stride, padding, dilation, groups);
  check_grad_output_shape(go, {p.batch, conv2d_output_channels(p), p.out_height, p.out_width},
                          "conv2d_grad_weight");
  at::Tensor grad_weight =
      at::empty(weight_size, go.options().memory_format(conv2d_memory_format(x, go)));
  if (grad_weight.numel() > 0) {
    if (go.numel() == 0) {
      grad_weight.zero_();
    } else {
      Backend::wgrad(p, go, x, grad_weight);
    }
  }
  return grad_weight;
}

template <class Backend>
at::Tensor conv2d_grad_bias(const at::Tensor& grad_output) {
  check_conv2d_dtype(grad_output);
  TORCH_CHECK(grad_output.dim() == 3 || grad_output.dim() == 4,
              "conv2d_grad_bias: expected a 3-D or 4-D grad_output, but got grad_output of size ",
              grad_output.sizes());
  const at::Tensor go = batched(grad_output, grad_output.dim() == 3);
  at::Tensor grad_bias = at::empty({go.size(1)}, go.options());
  if (grad_bias.numel() > 0) {
    if (go.numel() == 0) {
      grad_bias.zero_();
    } else {
      Backend::grad_bias(go, grad_bias);
    }
  }
  return grad_bias;
}

}  // namespace convpool
