// The schemas of every convpool op, in one block. Kernels register per dispatch key in their own
// files (cpu/, cuda/); fake kernels and autograd formulas are registered from Python
// (src/convpool/_fake.py, src/convpool/autograd.py).
#include <Python.h>
#include <torch/library.h>

// Importing convpool._C runs the static initializers below; no pybind11 needed.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(convpool, m) {
  // fprop: output = input (*) weight + bias. input is (N, C, H, W) or unbatched (C, H, W).
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
      "int[] dilation, int groups) -> Tensor");
  // dgrad: gradient of conv2d with respect to its input.
  m.def(
      "conv2d_grad_input(Tensor grad_output, Tensor weight, SymInt[] input_size, int[] stride, "
      "int[] padding, int[] dilation, int groups) -> Tensor");
  // wgrad: gradient of conv2d with respect to its weight.
  m.def(
      "conv2d_grad_weight(Tensor grad_output, Tensor input, SymInt[] weight_size, int[] stride, "
      "int[] padding, int[] dilation, int groups) -> Tensor");
  // gradient of conv2d with respect to its bias: grad_output summed over all but the channels.
  m.def("conv2d_grad_bias(Tensor grad_output) -> Tensor");
  // Returns (values, indices); indices are int64 flat offsets h * W + w into each input plane.
  m.def(
      "max_pool2d(Tensor input, int[] kernel_size, int[] stride, int[] padding, int[] dilation, "
      "bool ceil_mode) -> (Tensor, Tensor)");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[] kernel_size, "
      "int[] stride, int[] padding, int[] dilation, bool ceil_mode) -> Tensor");
}
