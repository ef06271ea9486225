// The schemas of every convpool op, in one block. Kernels register per dispatch key in their own
// files (cpu/, cuda/); fake kernels and autograd formulas are registered from Python
// (src/convpool/_fake.py, src/convpool/autograd.py).
#include <Python.h>
#include <torch/library.h>

#include <exception>

// Importing convpool._C runs the static initializers below; no pybind11 needed.
namespace convpool::cpu::gemm {
const char* active_isa();  // cpu/gemm.cpp
}

namespace {
// convpool._C._cpu_isa(): the instruction set of the CPU GEMM kernels ("avx512", "avx2" or
// "generic"), after CONVPOOL_CPU_ISA; for tests and benchmark reports.
PyObject* cpu_isa(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(convpool::cpu::gemm::active_isa());
  } catch (const std::exception& e) {  // e.g. a bad CONVPOOL_CPU_ISA value
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}
PyMethodDef methods[] = {{"_cpu_isa", cpu_isa, METH_NOARGS, "ISA of the CPU GEMM kernels"},
                         {nullptr, nullptr, 0, nullptr}};
}  // namespace

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
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
  // The values of max_pool2d alone, for inference: no indices computed or stored. No autograd
  // formula (functional.max_pool2d uses it only when no gradient is needed).
  m.def(
      "max_pool2d_values(Tensor input, int[] kernel_size, int[] stride, int[] padding, "
      "int[] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[] kernel_size, "
      "int[] stride, int[] padding, int[] dilation, bool ceil_mode) -> Tensor");
}
