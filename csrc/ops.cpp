// The schemas of every convpool op, in one block. Kernels register per dispatch key in their own
// files (cpu/, cuda/); fake kernels and autograd formulas are registered from Python
// (src/convpool/_fake.py, src/convpool/autograd.py).
#include <Python.h>
#include <torch/library.h>

#include <exception>
#include <string>

#include "cpu/winograd.h"
#include "shape.h"

// Importing convpool._C runs the static initializers below; no pybind11 needed.
namespace convpool::cpu::gemm {
const char* active_isa();  // cpu/gemm.cpp
}
namespace convpool::cpu {
const char* conv2d_algorithm(const Conv2dParams& p, c10::ScalarType dtype, bool dgrad);  // cpu/conv2d.cpp
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

// convpool._C._cpu_winograd_mode([mode]): the Winograd mode ("0", "1" or "auto", initially
// CONVPOOL_CPU_WINOGRAD); with an argument, sets it first. For tests and benchmarks.
PyObject* cpu_winograd_mode(PyObject*, PyObject* args) {
  const char* mode = nullptr;
  if (!PyArg_ParseTuple(args, "|s", &mode)) return nullptr;
  try {
    if (mode != nullptr) convpool::cpu::winograd::set_mode(mode);
    return PyUnicode_FromString(convpool::cpu::winograd::mode_name());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

// convpool._C._cpu_conv2d_algorithm(op, dtype, input_size, weight_size, stride, padding, dilation,
// groups): the CPU algorithm for conv2d (op "fprop") or its grad_input ("dgrad"); dtype is
// "float32", "float64", "float16" or "bfloat16"; sizes are 4-tuples, stride / padding /
// dilation ints.
PyObject* cpu_conv2d_algorithm(PyObject*, PyObject* args) {
  const char *op = nullptr, *dtype = nullptr;
  long long n, c, h, w, o, ci, kh, kw, stride, padding, dilation, groups;
  if (!PyArg_ParseTuple(args, "ss(LLLL)(LLLL)LLLL", &op, &dtype, &n, &c, &h, &w, &o, &ci, &kh, &kw,
                        &stride, &padding, &dilation, &groups))
    return nullptr;
  try {
    const std::string name(dtype);
    const c10::ScalarType type = name == "float64"   ? c10::kDouble
                                 : name == "float16"  ? c10::kHalf
                                 : name == "bfloat16" ? c10::kBFloat16
                                                      : c10::kFloat;
    const std::vector<int64_t> x{n, c, h, w}, wt{o, ci, kh, kw};
    const int64_t s[1] = {stride}, pd[1] = {padding}, d[1] = {dilation};
    const convpool::Conv2dParams p =
        convpool::conv2d_params(x, wt, std::nullopt, s, pd, d, groups);
    return PyUnicode_FromString(
        convpool::cpu::conv2d_algorithm(p, type, std::string(op) == "dgrad"));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"_cpu_isa", cpu_isa, METH_NOARGS, "ISA of the CPU GEMM kernels"},
    {"_cpu_winograd_mode", cpu_winograd_mode, METH_VARARGS, "get / set the CPU Winograd mode"},
    {"_cpu_conv2d_algorithm", cpu_conv2d_algorithm, METH_VARARGS, "CPU conv2d algorithm choice"},
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
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[] kernel_size, "
      "int[] stride, int[] padding, int[] dilation, bool ceil_mode) -> Tensor");
}
