// The emulated CUDA backends: csrc/cuda/backend.h on the kernels compiled for the emulator
// (emu/kernels.cpp), behind the functions the CPU registrations route to (emu/routing.h), and
// the private op that flips the routing switch, used by convpool.testing.cuda_emulation():
//   convpool::_set_cuda_emulation(bool enabled, int order, int seed)
// order: 0 forward, 1 reverse, 2 seeded shuffle (cuda_emu.h); and the emulator's self-tests:
//   convpool::_cuda_emulator_self_test(str name) -> int[]
#include <torch/library.h>

#include <atomic>
#include <string>
#include <vector>

#include "../emu/routing.h"

namespace convpool::emu {

// CPU tensors: no stream, nothing to guard.
inline void* current_stream() { return nullptr; }
struct DeviceGuard {
  explicit DeviceGuard(const at::Tensor&) {}
};

}  // namespace convpool::emu

#define CONVPOOL_KERNEL_NS emu
#include "../cuda/backend.h"
// After every torch header: it defines __host__, __device__, threadIdx and friends.
#include "cuda_emu.h"

namespace convpool::emu {
std::vector<int64_t> self_test(const std::string& name);  // self_test.cpp
}

namespace convpool::emulated {
namespace {
std::atomic<bool> enabled{false};

void set_cuda_emulation(bool on, int64_t order, int64_t seed) {
  TORCH_CHECK(order >= 0 && order <= 2, "_set_cuda_emulation: order must be 0, 1 or 2, got ",
              order);
  emu::set_order(static_cast<emu::Order>(order), static_cast<uint64_t>(seed));
  enabled = on;
}

std::vector<int64_t> cuda_emulator_self_test(std::string name) { return emu::self_test(name); }
}  // namespace

bool active() { return enabled.load(std::memory_order_relaxed); }

void conv2d_fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                  const at::Tensor* bias, at::Tensor& output) {
  emu::Conv2dBackend::fprop(p, input, weight, bias, output);
}
void conv2d_dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input) {
  emu::Conv2dBackend::dgrad(p, grad_output, weight, grad_input);
}
void conv2d_wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                  at::Tensor& grad_weight) {
  emu::Conv2dBackend::wgrad(p, grad_output, input, grad_weight);
}
void conv2d_grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  emu::Conv2dBackend::grad_bias(grad_output, grad_bias);
}
void max_pool2d_forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                        at::Tensor* indices) {
  emu::MaxPool2dBackend::forward(p, input, values, indices);
}
void max_pool2d_backward(const Pool2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& indices, at::Tensor& grad_input) {
  emu::MaxPool2dBackend::backward(p, grad_output, indices, grad_input);
}

}  // namespace convpool::emulated

TORCH_LIBRARY_FRAGMENT(convpool, m) {
  m.def("_set_cuda_emulation(bool enabled, int order, int seed) -> ()",
        &convpool::emulated::set_cuda_emulation);
  // Small kernels that test the emulator itself (emu/self_test.cpp).
  m.def("_cuda_emulator_self_test(str name) -> int[]", &convpool::emulated::cuda_emulator_self_test);
}
