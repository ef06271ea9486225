// The CUDA backends of the op bodies (conv2d_op.h, max_pool2d_op.h): dtype dispatch, pointers and
// strides, workspace, then the host entry points of kernels.h. Shared by the real CUDA glue
// (cuda/backend.cpp, namespace convpool::cuda) and the emulator's (emu/backend.cpp, namespace
// convpool::emu). The including file defines, in that namespace, before including this:
//   void* current_stream();                     the stream to launch on
//   struct DeviceGuard { explicit DeviceGuard(const at::Tensor&); };
#pragma once

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <limits>

#include "../shape.h"
#include "kernels.h"

namespace convpool::CONVPOOL_KERNEL_NS {

#define CONVPOOL_CUDA_DISPATCH_CONV_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

template <typename T>
const T* cptr(const at::Tensor& t) {
  return t.const_data_ptr<T>();
}
template <typename T>
T* mptr(at::Tensor& t) {
  return t.mutable_data_ptr<T>();
}

// torch.backends.cudnn.allow_tf32 (on by default): float32 convolutions may use TF32.
inline bool allow_tf32() { return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV); }

struct Conv2dBackend {
  static void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output) {
    DeviceGuard guard(input);
    CONVPOOL_CUDA_DISPATCH_CONV_TYPES(input.scalar_type(), "conv2d", [&] {
      conv2d_fprop<scalar_t>(p, cptr<scalar_t>(input), strides4(input), cptr<scalar_t>(weight),
                             strides4(weight), bias ? cptr<scalar_t>(*bias) : nullptr,
                             mptr<scalar_t>(output), strides4(output), allow_tf32(),
                             current_stream());
    });
  }
  static void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input) {
    DeviceGuard guard(grad_output);
    CONVPOOL_CUDA_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_input", [&] {
      conv2d_dgrad<scalar_t>(p, cptr<scalar_t>(grad_output), strides4(grad_output),
                             cptr<scalar_t>(weight), strides4(weight), mptr<scalar_t>(grad_input),
                             strides4(grad_input), allow_tf32(), current_stream());
    });
  }
  static void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                    at::Tensor& grad_weight) {
    DeviceGuard guard(grad_output);
    CONVPOOL_CUDA_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_weight", [&] {
      using acc = acc_type<scalar_t>;
      at::Tensor workspace =
          at::empty({conv2d_wgrad_workspace(p)},
                    grad_output.options().dtype(c10::CppTypeToScalarType<acc>::value));
      conv2d_wgrad<scalar_t>(p, cptr<scalar_t>(grad_output), strides4(grad_output),
                             cptr<scalar_t>(input), strides4(input), mptr<acc>(workspace),
                             mptr<scalar_t>(grad_weight), strides4(grad_weight), allow_tf32(),
                             current_stream());
    });
  }
  static void grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
    DeviceGuard guard(grad_output);
    CONVPOOL_CUDA_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "conv2d_grad_bias", [&] {
      conv2d_grad_bias<scalar_t>(cptr<scalar_t>(grad_output), strides4(grad_output),
                                 grad_output.size(0), grad_output.size(1), grad_output.size(2),
                                 grad_output.size(3), mptr<scalar_t>(grad_bias), current_stream());
    });
  }
};

template <typename T>
T lowest_value() {
  if constexpr (std::numeric_limits<T>::has_infinity) {
    return -std::numeric_limits<T>::infinity();
  } else {
    return std::numeric_limits<T>::lowest();
  }
}

struct MaxPool2dBackend {
  // indices: nullptr for the values alone.
  static void forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                      at::Tensor* indices) {
    DeviceGuard guard(input);
    AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool2d", [&] {
      max_pool2d_forward<scalar_t>(p, cptr<scalar_t>(input), strides4(input),
                                   lowest_value<scalar_t>(), mptr<scalar_t>(values),
                                   strides4(values), indices ? mptr<int64_t>(*indices) : nullptr,
                                   indices ? strides4(*indices) : Strides4{}, current_stream());
    });
  }
  static void backward(const Pool2dParams& p, const at::Tensor& grad_output,
                       const at::Tensor& indices, at::Tensor& grad_input) {
    DeviceGuard guard(grad_output);
    CONVPOOL_CUDA_DISPATCH_CONV_TYPES(grad_output.scalar_type(), "max_pool2d_backward", [&] {
      max_pool2d_backward<scalar_t>(p, cptr<scalar_t>(grad_output), strides4(grad_output),
                                    cptr<int64_t>(indices), strides4(indices),
                                    mptr<scalar_t>(grad_input), strides4(grad_input),
                                    current_stream());
    });
  }
};

}  // namespace convpool::CONVPOOL_KERNEL_NS
