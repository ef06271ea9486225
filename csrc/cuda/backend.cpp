// The CUDA registrations: the op bodies (conv2d_op.h, max_pool2d_op.h) with the CUDA backends of
// cuda/backend.h, on the current stream of the tensors' device.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../conv2d_op.h"
#include "../max_pool2d_op.h"

namespace convpool::cuda {

inline void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
struct DeviceGuard {
  explicit DeviceGuard(const at::Tensor& t) : guard(t.device()) {}
  c10::cuda::CUDAGuard guard;
};

}  // namespace convpool::cuda

#define CONVPOOL_KERNEL_NS cuda
#include "backend.h"

TORCH_LIBRARY_IMPL(convpool, CUDA, m) {
  using convpool::cuda::Conv2dBackend;
  using convpool::cuda::MaxPool2dBackend;
  m.impl("conv2d", &convpool::conv2d<Conv2dBackend>);
  m.impl("conv2d_grad_input", &convpool::conv2d_grad_input<Conv2dBackend>);
  m.impl("conv2d_grad_weight", &convpool::conv2d_grad_weight<Conv2dBackend>);
  m.impl("conv2d_grad_bias", &convpool::conv2d_grad_bias<Conv2dBackend>);
  m.impl("max_pool2d", &convpool::max_pool2d<MaxPool2dBackend>);
  m.impl("max_pool2d_values", &convpool::max_pool2d_values<MaxPool2dBackend>);
  m.impl("max_pool2d_backward", &convpool::max_pool2d_backward<MaxPool2dBackend>);
}
