// The CPU dispatch key's kernels: the op bodies over the CPU backends (cpu/backends.h). Under
// convpool.testing.cuda_emulation() they run the emulated CUDA backends instead (emu/routing.h;
// without CONVPOOL_WITH_EMU the routed backends are the CPU ones themselves, at no cost). This is
// the one file that joins cpu/ and emu/.
#include <torch/library.h>

#include "conv2d_op.h"
#include "cpu/backends.h"
#include "emu/routing.h"
#include "max_pool2d_op.h"

namespace convpool {
namespace {
using CpuConv2dBackend = RoutedConv2dBackend<cpu::Conv2dBackend>;
using CpuMaxPool2dBackend = RoutedMaxPool2dBackend<cpu::MaxPool2dBackend>;
}  // namespace

TORCH_LIBRARY_IMPL(convpool, CPU, m) {
  m.impl("conv2d", &conv2d<CpuConv2dBackend>);
  m.impl("conv2d_grad_input", &conv2d_grad_input<CpuConv2dBackend>);
  m.impl("conv2d_grad_weight", &conv2d_grad_weight<CpuConv2dBackend>);
  m.impl("conv2d_grad_bias", &conv2d_grad_bias<CpuConv2dBackend>);
  m.impl("max_pool2d", &max_pool2d<CpuMaxPool2dBackend>);
  m.impl("max_pool2d_values", &max_pool2d_values<CpuMaxPool2dBackend>);
  m.impl("max_pool2d_backward", &max_pool2d_backward<CpuMaxPool2dBackend>);
}

}  // namespace convpool
