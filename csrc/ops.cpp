// The schemas of every convpool op, in one block. Kernels register per dispatch key in their own
// files (cpu/, cuda/); fake kernels and autograd formulas are registered from Python
// (src/convpool/_fake.py, src/convpool/autograd.py).
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#include <exception>
#include <string>

#include "cpu/peak/peak.h"
#include "cpu/registry.h"
#include "direct_calls.h"
#include "cpu/winograd/winograd.h"
#include "shape.h"

// Importing convpool._C runs the static initializers below; no pybind11 needed here (the direct
// entry points of direct_calls.cpp use torch's Python headers, in that file only).
namespace convpool::cpu::gemm {
const char* active_isa();  // cpu/gemm/dispatch.cpp
}
#ifdef CONVPOOL_WITH_CUDA
namespace convpool::cuda {
const char* compiled_arch_list();  // cuda/build_info.cu
const char* nvcc_version();
}  // namespace convpool::cuda
#endif

// setup.py passes these as string literals; a build without it still reports what it can.
#ifndef CONVPOOL_VERSION
#define CONVPOOL_VERSION "unknown"
#endif
#ifndef CONVPOOL_TORCH_VERSION
#define CONVPOOL_TORCH_VERSION TORCH_VERSION  // without the local part, e.g. "+cu130"
#endif
#ifndef CONVPOOL_CUDA_ARCH_LIST
#define CONVPOOL_CUDA_ARCH_LIST ""
#endif
#ifndef CONVPOOL_CUDA_STATUS  // setup.py: why the CUDA kernels were (not) built
#define CONVPOOL_CUDA_STATUS ""
#endif
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

// Sets dict[key] = value and releases value; false (with a Python error set) on failure.
bool put(PyObject* dict, const char* key, PyObject* value) {
  if (value == nullptr) return false;
  const int status = PyDict_SetItemString(dict, key, value);
  Py_DECREF(value);
  return status == 0;
}

PyObject* cpu_features() {
  PyObject* features = PyDict_New();
  if (features == nullptr) return nullptr;
#if defined(__x86_64__) || defined(__i386__)
  // What the CPU offers, whatever CONVPOOL_CPU_ISA allows the GEMM to use.
  __builtin_cpu_init();
  const bool ok = put(features, "avx2", PyBool_FromLong(__builtin_cpu_supports("avx2"))) &&
                  put(features, "fma", PyBool_FromLong(__builtin_cpu_supports("fma"))) &&
                  put(features, "avx512f", PyBool_FromLong(__builtin_cpu_supports("avx512f")));
  if (!ok) {
    Py_DECREF(features);
    return nullptr;
  }
#endif
  return features;
}

// convpool._C._build_info(): how this binary was built, from compile-time macros (and the CPU
// features it finds at run time); convpool.build_info() and `python -m convpool` report it.
PyObject* build_info(PyObject*, PyObject*) {
#ifdef CONVPOOL_WITH_CUDA
  const bool with_cuda = true;
  const char* cuda_archs = convpool::cuda::compiled_arch_list();
  const char* nvcc = convpool::cuda::nvcc_version();
#else
  const bool with_cuda = false;
  const char* cuda_archs = "";
  const char* nvcc = "";
#endif
#ifdef CONVPOOL_WITH_EMU
  const bool with_emulator = true;
#else
  const bool with_emulator = false;
#endif
#if defined(__clang__)
  const char* compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  const char* compiler = "gcc " __VERSION__;
#else
  const char* compiler = "unknown";
#endif
#ifdef __OPTIMIZE__
  const bool optimized = true;
#else
  const bool optimized = false;
#endif
#if defined(__SANITIZE_ADDRESS__)  // gcc
  const bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)  // clang
  const bool sanitized = true;
#else
  const bool sanitized = false;
#endif
#else
  const bool sanitized = false;
#endif
#ifdef _OPENMP  // at::parallel_for is inline: without OpenMP here it runs every loop serially
  const bool openmp = true;
#else
  const bool openmp = false;
#endif
  PyObject* info = PyDict_New();
  if (info == nullptr) return nullptr;
  const bool ok = put(info, "version", PyUnicode_FromString(CONVPOOL_VERSION)) &&
                  put(info, "torch_version", PyUnicode_FromString(CONVPOOL_TORCH_VERSION)) &&
                  put(info, "cuda", PyBool_FromLong(with_cuda)) &&
                  put(info, "cuda_archs", PyUnicode_FromString(cuda_archs)) &&
                  put(info, "cuda_arch_list", PyUnicode_FromString(CONVPOOL_CUDA_ARCH_LIST)) &&
                  put(info, "cuda_status", PyUnicode_FromString(CONVPOOL_CUDA_STATUS)) &&
                  put(info, "nvcc_version", PyUnicode_FromString(nvcc)) &&
                  put(info, "emulator", PyBool_FromLong(with_emulator)) &&
                  put(info, "cpu_features", cpu_features()) &&
                  put(info, "compiler", PyUnicode_FromString(compiler)) &&
                  put(info, "optimized", PyBool_FromLong(optimized)) &&
                  put(info, "sanitized", PyBool_FromLong(sanitized)) &&
                  put(info, "openmp", PyBool_FromLong(openmp));
  if (!ok) {
    Py_DECREF(info);
    return nullptr;
  }
  return info;
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
// groups): the registry name of the CPU algorithm for conv2d (op "fprop") or its grad_input
// ("dgrad") on contiguous tensors (convpool.backends.cpu.selected takes the op's own arguments);
// dtype is "float32", "float64", "float16" or "bfloat16"; sizes are 4-tuples, stride / padding /
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

// convpool._C._cpu_force([name]): the forced CPU algorithm (None: none; initially
// CONVPOOL_CPU_ALGO); with an argument (a name, or None / "" to clear) sets it first.
// convpool.backends.cpu.force wraps it.
PyObject* cpu_force(PyObject*, PyObject* args) {
  PyObject* name = nullptr;
  if (!PyArg_ParseTuple(args, "|O", &name)) return nullptr;
  try {
    if (name != nullptr) {
      if (name == Py_None) {
        convpool::cpu::set_forced(nullptr);
      } else {
        const char* text = PyUnicode_AsUTF8(name);
        if (text == nullptr) return nullptr;
        convpool::cpu::set_forced(text);
      }
    }
    const char* current = convpool::cpu::forced();
    if (current == nullptr) Py_RETURN_NONE;
    return PyUnicode_FromString(current);
  } catch (const c10::Error& e) {  // an unknown name: the message without the C++ backtrace
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

// convpool._C._cpu_query(on): True starts the debug query on this thread (the next CPU op call
// records its algorithms instead of computing); False ends it and returns (applicable names in
// heuristic order, selected name), or None if no op recorded. convpool.backends.cpu wraps it.
PyObject* cpu_query(PyObject*, PyObject* args) {
  int on = 0;
  if (!PyArg_ParseTuple(args, "p", &on)) return nullptr;
  thread_local convpool::cpu::QueryRecord record;
  if (on) {
    record = convpool::cpu::QueryRecord{};
    convpool::cpu::set_query(&record);
    Py_RETURN_NONE;
  }
  convpool::cpu::set_query(nullptr);
  if (!record.recorded) Py_RETURN_NONE;
  PyObject* names = PyList_New(0);
  if (names == nullptr) return nullptr;
  for (const std::string& name : record.applicable) {
    PyObject* item = PyUnicode_FromString(name.c_str());
    if (item == nullptr || PyList_Append(names, item) != 0) {
      Py_XDECREF(item);
      Py_DECREF(names);
      return nullptr;
    }
    Py_DECREF(item);
  }
  return Py_BuildValue("(Ns)", names, record.selected.c_str());
}

// convpool._C._cpu_isas(): the instruction sets registry entries may need that this CPU reaches
// (isa_reached: "generic" ... "avx512", and "amx" where the CPU and Linux allow AMX).
PyObject* cpu_isas(PyObject*, PyObject*) {
  using convpool::cpu::Isa;
  PyObject* out = PyList_New(0);
  if (out == nullptr) return nullptr;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::amx}) {
    if (!convpool::cpu::isa_reached(isa)) continue;
    PyObject* name = PyUnicode_FromString(convpool::cpu::isa_name(isa));
    if (name == nullptr || PyList_Append(out, name) != 0) {
      Py_XDECREF(name);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(name);
  }
  return out;
}

// convpool._C._cpu_algorithm_table(): every registered CPU algorithm as (op, name, isa), op the
// torch.ops.convpool name; for tests and force()'s check.
PyObject* cpu_algorithm_table(PyObject*, PyObject*) {
  const auto& entries = convpool::cpu::registered_names();
  PyObject* out = PyList_New(0);
  if (out == nullptr) return nullptr;
  for (const auto& e : entries) {
    PyObject* item = Py_BuildValue("(sss)", convpool::cpu::op_name(e.op), e.name,
                                   convpool::cpu::isa_name(e.isa));
    if (item == nullptr || PyList_Append(out, item) != 0) {
      Py_XDECREF(item);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(item);
  }
  return out;
}

// convpool._C._cpu_benchmark([on]): whether CPU autotuning is on (initially
// CONVPOOL_CPU_BENCHMARK); with an argument, sets it first. convpool.backends.cpu.benchmark.
PyObject* cpu_benchmark(PyObject*, PyObject* args) {
  int on = -1;
  if (!PyArg_ParseTuple(args, "|p", &on)) return nullptr;
  if (on >= 0) convpool::cpu::set_benchmark(on != 0);
  return PyBool_FromLong(convpool::cpu::benchmark_enabled());
}

// convpool._C._cpu_tuning_stats(): (problems timed, seconds spent timing, choices known).
PyObject* cpu_tuning_stats(PyObject*, PyObject*) {
  const auto stats = convpool::cpu::tuning_stats();
  return Py_BuildValue("(LdL)", static_cast<long long>(stats.problems), stats.seconds,
                       static_cast<long long>(stats.cached));
}

// convpool._C._cpu_fma_peak(threads, seconds): the measured fp32 FMA peak in GFLOP/s of the
// active ISA on that many threads (cpu/peak/peak.h), for the benchmarks' "% of peak".
PyObject* cpu_fma_peak(PyObject*, PyObject* args) {
  int threads = 1;
  double seconds = 0.2;
  if (!PyArg_ParseTuple(args, "|id", &threads, &seconds)) return nullptr;
  if (threads < 1 || threads > 4096 || !(seconds > 0 && seconds <= 60)) {
    const std::string message = "_cpu_fma_peak: threads must be in [1, 4096] and seconds in (0, 60], got " +
                                std::to_string(threads) + " and " + std::to_string(seconds);
    PyErr_SetString(PyExc_ValueError, message.c_str());
    return nullptr;
  }
  double gflops = 0;
  Py_BEGIN_ALLOW_THREADS
  gflops = convpool::cpu::peak::fma_gflops(threads, seconds);
  Py_END_ALLOW_THREADS
  return PyFloat_FromDouble(gflops);
}

// convpool._C._cpu_tuning_clear(): forgets this process's tuning choices.
PyObject* cpu_tuning_clear(PyObject*, PyObject*) {
  convpool::cpu::clear_tuning();
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"_cpu_benchmark", cpu_benchmark, METH_VARARGS, "get / set CPU autotuning"},
    {"_cpu_tuning_stats", cpu_tuning_stats, METH_NOARGS, "CPU autotuning statistics"},
    {"_cpu_tuning_clear", cpu_tuning_clear, METH_NOARGS, "forget CPU autotuning choices"},
    {"_cpu_force", cpu_force, METH_VARARGS, "get / set the forced CPU algorithm"},
    {"_cpu_query", cpu_query, METH_VARARGS, "record the next CPU op's algorithms"},
    {"_cpu_algorithm_table", cpu_algorithm_table, METH_NOARGS, "every CPU algorithm"},
    {"_cpu_isas", cpu_isas, METH_NOARGS, "the instruction sets CPU algorithms may need that this CPU reaches"},
    {"_cpu_isa", cpu_isa, METH_NOARGS, "ISA of the CPU GEMM kernels"},
    {"_cpu_fma_peak", cpu_fma_peak, METH_VARARGS, "measured fp32 FMA peak, GFLOP/s"},
    {"_build_info", build_info, METH_NOARGS, "how this binary was built"},
    {"_cpu_winograd_mode", cpu_winograd_mode, METH_VARARGS, "get / set the CPU Winograd mode"},
    {"_cpu_conv2d_algorithm", cpu_conv2d_algorithm, METH_VARARGS, "CPU conv2d algorithm choice"},
    {nullptr, nullptr, 0, nullptr}};
}  // namespace

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && PyModule_AddFunctions(module, convpool::direct_call_methods()) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
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
