// The device-independent body of the max_pool2d ops: validate (shape.h), handle unbatched input,
// pick the output layout, allocate, then hand the validated problem to a backend: a struct with
// static forward / backward (cpu/pool/dispatch.cpp, cuda/backend.h); forward's indices pointer is
// nullptr when only the values are wanted. backward writes every element
// of grad_input, zeros included.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <tuple>

#include "shape.h"

namespace convpool {

// PyTorch keeps a channels_last input channels_last; an unbatched (3-D) input has no such layout.
inline at::MemoryFormat max_pool2d_memory_format(const at::Tensor& input) {
  return is_channels_last(input) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// Values, and indices unless `with_indices` is false (then `indices` stays undefined and the
// backend skips the index work: Backend::forward gets nullptr).
template <class Backend>
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward(const at::Tensor& input,
                                                      c10::IntArrayRef kernel_size,
                                                      c10::IntArrayRef stride,
                                                      c10::IntArrayRef padding,
                                                      c10::IntArrayRef dilation, bool ceil_mode,
                                                      bool with_indices) {
  check_max_pool2d_input(input);
  const Pool2dParams p =
      max_pool2d_params(input.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  const auto out_sizes = max_pool2d_output_sizes(input.sizes(), p);
  const auto options = input.options().memory_format(max_pool2d_memory_format(input));
  at::Tensor values = at::empty(out_sizes, options);
  at::Tensor indices;
  if (with_indices) indices = at::empty(out_sizes, options.dtype(at::kLong));
  if (values.numel() > 0) {
    const bool unbatched = input.dim() == 3;
    at::Tensor v4 = unbatched ? values.unsqueeze(0) : values;
    at::Tensor i4 = with_indices && unbatched ? indices.unsqueeze(0) : indices;
    Backend::forward(p, unbatched ? input.unsqueeze(0) : input, v4, with_indices ? &i4 : nullptr);
  }
  return {values, indices};
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                              c10::IntArrayRef stride, c10::IntArrayRef padding,
                                              c10::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_forward<Backend>(input, kernel_size, stride, padding, dilation, ceil_mode,
                                     /*with_indices=*/true);
}

template <class Backend>
at::Tensor max_pool2d_values(const at::Tensor& input, c10::IntArrayRef kernel_size,
                             c10::IntArrayRef stride, c10::IntArrayRef padding,
                             c10::IntArrayRef dilation, bool ceil_mode) {
  return std::get<0>(max_pool2d_forward<Backend>(input, kernel_size, stride, padding, dilation,
                                                 ceil_mode, /*with_indices=*/false));
}

template <class Backend>
at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& indices, c10::IntArrayRef kernel_size,
                               c10::IntArrayRef stride, c10::IntArrayRef padding,
                               c10::IntArrayRef dilation, bool ceil_mode) {
  check_max_pool2d_input(input);
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "max_pool2d_backward: expected a floating point input, but got ",
              dtype_name(input.scalar_type()));
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(),
              "max_pool2d_backward: expected grad_output of dtype ", dtype_name(input.scalar_type()),
              ", but got ", dtype_name(grad_output.scalar_type()));
  TORCH_CHECK(indices.scalar_type() == at::kLong,
              "max_pool2d_backward: expected indices of dtype Long, but got ",
              dtype_name(indices.scalar_type()));
  TORCH_CHECK(grad_output.device() == input.device() && indices.device() == input.device(),
              "max_pool2d_backward: grad_output, input and indices must be on the same device");
  const Pool2dParams p =
      max_pool2d_params(input.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  const auto out_sizes = max_pool2d_output_sizes(input.sizes(), p);
  TORCH_CHECK(grad_output.sizes() == c10::IntArrayRef(out_sizes),
              "max_pool2d_backward: expected grad_output of size ", c10::IntArrayRef(out_sizes),
              ", but got ", grad_output.sizes());
  TORCH_CHECK(indices.sizes() == c10::IntArrayRef(out_sizes),
              "max_pool2d_backward: expected indices of size ", c10::IntArrayRef(out_sizes),
              ", but got ", indices.sizes());
  // Backends write every element of grad_input (no separate zeroing pass).
  at::Tensor grad_input =
      at::empty(input.sizes(), input.options().memory_format(max_pool2d_memory_format(input)));
  if (grad_output.numel() == 0) {
    grad_input.zero_();
  } else {
    const bool unbatched = input.dim() == 3;
    at::Tensor gi4 = unbatched ? grad_input.unsqueeze(0) : grad_input;
    Backend::backward(p, unbatched ? grad_output.unsqueeze(0) : grad_output,
                      unbatched ? indices.unsqueeze(0) : indices, gi4);
  }
  return grad_input;
}

}  // namespace convpool
