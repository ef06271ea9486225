// convpool._C's direct entry points to the torch.ops.convpool ops, for autograd.call (src/convpool/
// autograd.py): each parses its Python arguments itself and calls the op through the dispatcher
// below the Autograd key, as `with torch._C._AutoDispatchBelowAutograd(): op(*args)` would. Why:
// torch.ops' generic binding matches the arguments against the schema in Python-facing C++ that
// costs ~8 us per call (mostly the int[] arguments), more than the arithmetic of a tiny layer;
// these cost well under 1 us. The dispatcher call keeps everything below autograd as it was: the
// CPU / CUDA / emulated kernels, fake and meta tensors, TorchDispatchModes, the profiler.
//
// Only plain calls take this path: exact torch.Tensor / nn.Parameter operands, no
// TorchFunctionMode, int[] as Python lists or tuples of ints, bool as bool. Anything else returns
// NotImplemented and the caller uses torch.ops (its __torch_function__ handling, its messages).
// conv2d_backward fuses the three backward ops of conv2d (one call where torch runs one
// convolution_backward with an output mask).
//
// _conv2d_autograd / _max_pool2d_autograd record their backward as a C++ autograd node (as
// torch's own ops do) instead of convpool.autograd's Python autograd.Functions: for plain
// reverse-mode calls only (autograd.call checks: no torch.func transform, no forward-AD level,
// no autocast, not compiling), where the Python Function's bookkeeping costs more than a tiny
// layer (measured: ~11 us forward, ~50 us backward on AMD EPYC Zen 3). Their backward calls the
// ops below autograd, or, when the backward itself is recorded (create_graph=True), through the
// dispatcher, whose Autograd kernels (the Python Functions) record the next order.
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/zeros.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/python_variable.h>

#include <array>
#include <optional>
#include <tuple>

#include "direct_calls.h"
#include "shape.h"

namespace convpool {
namespace {

using Ints = c10::SmallVector<int64_t, 4>;

// ---- argument parsing: false means "not a plain call", never an error --------------------------

bool parse_tensor(PyObject* obj, const at::Tensor*& out) {
  if (!THPVariable_CheckExact(obj)) return false;  // subclasses may override __torch_function__
  out = &THPVariable_Unpack(obj);
  return true;
}

bool parse_optional_tensor(PyObject* obj, std::optional<at::Tensor>& out) {
  if (obj == Py_None) return true;
  const at::Tensor* t = nullptr;
  if (!parse_tensor(obj, t)) return false;
  out = *t;
  return true;
}

bool parse_int(PyObject* obj, int64_t& out) {
  if (!PyLong_CheckExact(obj)) return false;  // bool is a subclass of int: refused here
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
  if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return false;
  }
  out = v;
  return true;
}

bool parse_ints(PyObject* obj, Ints& out) {
  if (!PyList_Check(obj) && !PyTuple_Check(obj)) return false;  // torch.Size is a tuple
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
  PyObject** items = PySequence_Fast_ITEMS(obj);
  out.resize(n);
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!parse_int(items[i], out[i])) return false;
  return true;
}

bool parse_bool(PyObject* obj, bool& out) {
  if (obj != Py_True && obj != Py_False) return false;
  out = obj == Py_True;
  return true;
}

// A TorchFunctionMode must see the call: torch.ops' binding dispatches to it.
bool plain_call(Py_ssize_t nargs, Py_ssize_t expected) {
  return nargs == expected && at::impl::PythonTorchFunctionTLS::stack_len() == 0;
}

PyObject* not_implemented() { Py_RETURN_NOTIMPLEMENTED; }

PyObject* wrap(at::Tensor t) { return THPVariable_Wrap(std::move(t)); }

PyObject* wrap_optional(const at::Tensor& t) {
  if (!t.defined()) Py_RETURN_NONE;
  return THPVariable_Wrap(t);
}

// Runs f (an op call) as `with torch._C._AutoDispatchBelowAutograd()` would, without the GIL (as
// torch's own bindings run their ops).
template <class F>
auto below_autograd(F&& f) {
  pybind11::gil_scoped_release no_gil;
  at::AutoDispatchBelowAutograd below;
  return f();
}

// (a, b) as a Python tuple of two tensors.
PyObject* pair(at::Tensor a, at::Tensor b) {
  PyObject* out = PyTuple_New(2);
  if (out == nullptr) return nullptr;
  PyObject* first = wrap(std::move(a));
  PyObject* second = first == nullptr ? nullptr : wrap(std::move(b));
  if (second == nullptr) {
    Py_XDECREF(first);
    Py_DECREF(out);
    return nullptr;
  }
  PyTuple_SET_ITEM(out, 0, first);
  PyTuple_SET_ITEM(out, 1, second);
  return out;
}

c10::SymIntArrayRef sym(const Ints& v) {
  return c10::fromIntArrayRefSlow(c10::IntArrayRef(v));  // checks the SymInt range
}

// ---- the ops' typed handles, looked up once -----------------------------------------------------

template <class Signature>
c10::TypedOperatorHandle<Signature> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using ConvSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t);
using GradSig = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                           c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t);
using GradBiasSig = at::Tensor(const at::Tensor&);
using PoolSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, c10::IntArrayRef,
                                                   c10::IntArrayRef, c10::IntArrayRef,
                                                   c10::IntArrayRef, bool);
using PoolValuesSig = at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
                                 c10::IntArrayRef, c10::IntArrayRef, bool);
using PoolBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef,
                                   c10::IntArrayRef, bool);

const c10::TypedOperatorHandle<ConvSig>& conv2d_op() {
  static const auto op = handle<ConvSig>("convpool::conv2d");
  return op;
}
const c10::TypedOperatorHandle<GradSig>& grad_input_op() {
  static const auto op = handle<GradSig>("convpool::conv2d_grad_input");
  return op;
}
const c10::TypedOperatorHandle<GradSig>& grad_weight_op() {
  static const auto op = handle<GradSig>("convpool::conv2d_grad_weight");
  return op;
}
const c10::TypedOperatorHandle<GradBiasSig>& grad_bias_op() {
  static const auto op = handle<GradBiasSig>("convpool::conv2d_grad_bias");
  return op;
}
const c10::TypedOperatorHandle<PoolSig>& pool_op() {
  static const auto op = handle<PoolSig>("convpool::max_pool2d");
  return op;
}
const c10::TypedOperatorHandle<PoolValuesSig>& pool_values_op() {
  static const auto op = handle<PoolValuesSig>("convpool::max_pool2d_values");
  return op;
}
const c10::TypedOperatorHandle<PoolBackwardSig>& pool_backward_op() {
  static const auto op = handle<PoolBackwardSig>("convpool::max_pool2d_backward");
  return op;
}

// The conv geometry shared by conv2d, grad_input, grad_weight: stride, padding, dilation, groups.
struct ConvArgs {
  Ints stride, padding, dilation;
  int64_t groups = 1;
  bool parse(PyObject* const* a) {
    return parse_ints(a[0], stride) && parse_ints(a[1], padding) && parse_ints(a[2], dilation) &&
           parse_int(a[3], groups);
  }
};

struct PoolArgs {
  Ints kernel_size, stride, padding, dilation;
  bool ceil_mode = false;
  bool parse(PyObject* const* a) {
    return parse_ints(a[0], kernel_size) && parse_ints(a[1], stride) &&
           parse_ints(a[2], padding) && parse_ints(a[3], dilation) && parse_bool(a[4], ceil_mode);
  }
};

// ---- the entry points (METH_FASTCALL: positional arguments as torch.ops.convpool.<op>) ---------

// conv2d(input, weight, bias, stride, padding, dilation, groups)
PyObject* conv2d(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor *input, *weight;
  std::optional<at::Tensor> bias;
  ConvArgs c;
  if (!plain_call(nargs, 7) || !parse_tensor(args[0], input) || !parse_tensor(args[1], weight) ||
      !parse_optional_tensor(args[2], bias) || !c.parse(args + 3))
    return not_implemented();
  return wrap(below_autograd([&] {
    return conv2d_op().call(*input, *weight, bias, c.stride, c.padding, c.dilation, c.groups);
  }));
  END_HANDLE_TH_ERRORS
}

// conv2d_grad_input(grad_output, weight, input_size, ...) and
// conv2d_grad_weight(grad_output, input, weight_size, ...)
template <const c10::TypedOperatorHandle<GradSig>& (*Op)()>
PyObject* conv2d_grad(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor *grad_output, *other;
  Ints size;
  ConvArgs c;
  if (!plain_call(nargs, 7) || !parse_tensor(args[0], grad_output) ||
      !parse_tensor(args[1], other) || !parse_ints(args[2], size) || !c.parse(args + 3))
    return not_implemented();
  return wrap(below_autograd([&] {
    return Op().call(*grad_output, *other, sym(size), c.stride, c.padding, c.dilation, c.groups);
  }));
  END_HANDLE_TH_ERRORS
}

// conv2d_grad_bias(grad_output)
PyObject* conv2d_grad_bias(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor* grad_output;
  if (!plain_call(nargs, 1) || !parse_tensor(args[0], grad_output)) return not_implemented();
  return wrap(below_autograd([&] { return grad_bias_op().call(*grad_output); }));
  END_HANDLE_TH_ERRORS
}

// conv2d's backward ops, each where `need` asks (grad_input, grad_weight, grad_bias), through the
// dispatcher as the caller's mode has it: the fused direct call and the C++ node's backward.
std::array<at::Tensor, 3> conv2d_backward_ops(const at::Tensor& grad_output, const at::Tensor& input,
                                              const at::Tensor& weight, c10::IntArrayRef stride,
                                              c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                              int64_t groups, const bool need[3]) {
  std::array<at::Tensor, 3> grads;
  if (need[0])
    grads[0] = grad_input_op().call(grad_output, weight, c10::fromIntArrayRefSlow(input.sizes()),
                                    stride, padding, dilation, groups);
  if (need[1])
    grads[1] = grad_weight_op().call(grad_output, input, c10::fromIntArrayRefSlow(weight.sizes()),
                                     stride, padding, dilation, groups);
  if (need[2])
    // No input channels: the output has none either (PyTorch's shape); its bias gets zeros.
    grads[2] = input.dim() >= 3 && input.size(-3) == 0
                   ? at::zeros({weight.size(0)}, grad_output.options())
                   : grad_bias_op().call(grad_output);
  return grads;
}

// conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, need_input,
// need_weight, need_bias) -> (grad_input | None, grad_weight | None, grad_bias | None): the
// three backward ops in one call, each only where asked (convpool.autograd's Conv2d.backward).
PyObject* conv2d_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor *grad_output, *input, *weight;
  ConvArgs c;
  bool need[3];
  if (!plain_call(nargs, 10) || !parse_tensor(args[0], grad_output) ||
      !parse_tensor(args[1], input) || !parse_tensor(args[2], weight) || !c.parse(args + 3) ||
      !parse_bool(args[7], need[0]) || !parse_bool(args[8], need[1]) ||
      !parse_bool(args[9], need[2]))
    return not_implemented();
  const auto grads = below_autograd([&] {
    return conv2d_backward_ops(*grad_output, *input, *weight, c.stride, c.padding, c.dilation,
                               c.groups, need);
  });
  PyObject* out = PyTuple_New(3);
  if (out == nullptr) return nullptr;
  for (int i = 0; i < 3; ++i) {
    PyObject* item = wrap_optional(grads[i]);
    if (item == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, i, item);
  }
  return out;
  END_HANDLE_TH_ERRORS
}

// max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode) -> (values, indices)
PyObject* max_pool2d(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor* input;
  PoolArgs p;
  if (!plain_call(nargs, 6) || !parse_tensor(args[0], input) || !p.parse(args + 1))
    return not_implemented();
  auto [values, indices] = below_autograd([&] {
    return pool_op().call(*input, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode);
  });
  return pair(std::move(values), std::move(indices));
  END_HANDLE_TH_ERRORS
}

// max_pool2d_values(input, kernel_size, stride, padding, dilation, ceil_mode) -> values
PyObject* max_pool2d_values(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor* input;
  PoolArgs p;
  if (!plain_call(nargs, 6) || !parse_tensor(args[0], input) || !p.parse(args + 1))
    return not_implemented();
  return wrap(below_autograd([&] {
    return pool_values_op().call(*input, p.kernel_size, p.stride, p.padding, p.dilation,
                                 p.ceil_mode);
  }));
  END_HANDLE_TH_ERRORS
}

// max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation,
// ceil_mode) -> grad_input
PyObject* max_pool2d_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor *grad_output, *input, *indices;
  PoolArgs p;
  if (!plain_call(nargs, 8) || !parse_tensor(args[0], grad_output) ||
      !parse_tensor(args[1], input) || !parse_tensor(args[2], indices) || !p.parse(args + 3))
    return not_implemented();
  return wrap(below_autograd([&] {
    return pool_backward_op().call(*grad_output, *input, *indices, p.kernel_size, p.stride,
                                   p.padding, p.dilation, p.ceil_mode);
  }));
  END_HANDLE_TH_ERRORS
}


// ---- C++ autograd nodes for plain reverse-mode calls --------------------------------------------

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Runs f below autograd unless this backward is itself being recorded (create_graph=True): then
// through the dispatcher's Autograd kernels, so that the next order is recorded.
template <class F>
auto maybe_recorded(F&& f) {
  if (at::GradMode::is_enabled()) return f();
  at::AutoDispatchBelowAutograd below;
  return f();
}

// A node's int arguments in one saved IValue (one map entry, not one per argument: the map is
// keyed by strings): each list as its length then its values, then the scalars.
at::IValue pack(std::initializer_list<const Ints*> lists, std::initializer_list<int64_t> scalars) {
  std::vector<int64_t> out;
  for (const Ints* l : lists) {
    out.push_back(static_cast<int64_t>(l->size()));
    out.insert(out.end(), l->begin(), l->end());
  }
  out.insert(out.end(), scalars.begin(), scalars.end());
  return at::IValue(std::move(out));
}

// pack's lists and scalars again (views into one copy of the saved values).
struct Unpacked {
  std::vector<int64_t> values;
  c10::IntArrayRef list[4];
  const int64_t* scalar = nullptr;
  Unpacked(const at::IValue& packed, int lists) : values(packed.toIntVector()) {
    size_t at = 0;
    for (int i = 0; i < lists; ++i) {
      const auto n = static_cast<size_t>(values[at]);
      list[i] = c10::IntArrayRef(values.data() + at + 1, n);
      at += 1 + n;
    }
    scalar = values.data() + at;
  }
};

struct Conv2dFunction : torch::autograd::Function<Conv2dFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const ConvArgs& c) {
    at::Tensor out;
    {
      at::AutoDispatchBelowAutograd below;
      out = conv2d_op().call(input, weight, bias, c.stride, c.padding, c.dilation, c.groups);
    }
    ctx->save_for_backward({input, weight});
    // As PyTorch: the gradients take the layout the forward chose.
    ctx->saved_data["args"] = pack({&c.stride, &c.padding, &c.dilation},
                                   {c.groups, bias.has_value() && bias->defined(),
                                    is_channels_last(out)});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const Unpacked a(ctx->saved_data["args"], 3);
    const c10::IntArrayRef stride = a.list[0], padding = a.list[1], dilation = a.list[2];
    const int64_t groups = a.scalar[0];
    at::Tensor grad = grads[0];
    if (a.scalar[2] && !is_channels_last(grad))
      grad = grad.contiguous(at::MemoryFormat::ChannelsLast);
    // needs_input_grad counts the tensor arguments only: the bias is the third when given.
    const bool need[3] = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                          a.scalar[1] != 0 && ctx->needs_input_grad(2)};
    auto g = maybe_recorded([&] {
      return conv2d_backward_ops(grad, input, weight, stride, padding, dilation, groups, need);
    });
    return {std::move(g[0]), std::move(g[1]), std::move(g[2]), at::Tensor()};
  }
};

struct MaxPool2dFunction : torch::autograd::Function<MaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const PoolArgs& p) {
    at::Tensor values, indices;
    {
      at::AutoDispatchBelowAutograd below;
      std::tie(values, indices) =
          pool_op().call(input, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode);
    }
    ctx->mark_non_differentiable({indices});
    ctx->save_for_backward({input, indices});
    ctx->saved_data["args"] =
        pack({&p.kernel_size, &p.stride, &p.padding, &p.dilation}, {p.ceil_mode});
    return {values, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Unpacked a(ctx->saved_data["args"], 4);
    at::Tensor grad_input;
    if (ctx->needs_input_grad(0))
      grad_input = maybe_recorded([&] {
        return pool_backward_op().call(grads[0], saved[0], saved[1], a.list[0], a.list[1],
                                       a.list[2], a.list[3], a.scalar[0] != 0);
      });
    return {grad_input, at::Tensor()};
  }
};

// conv2d(...) recording a C++ autograd node (the op's arguments).
PyObject* conv2d_autograd(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor *input, *weight;
  std::optional<at::Tensor> bias;
  ConvArgs c;
  if (!plain_call(nargs, 7) || !parse_tensor(args[0], input) || !parse_tensor(args[1], weight) ||
      !parse_optional_tensor(args[2], bias) || !c.parse(args + 3))
    return not_implemented();
  at::Tensor out;
  {
    pybind11::gil_scoped_release no_gil;
    out = Conv2dFunction::apply(*input, *weight, bias, c);
  }
  return wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

// max_pool2d(...) -> (values, indices) recording a C++ autograd node.
PyObject* max_pool2d_autograd(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const at::Tensor* input;
  PoolArgs p;
  if (!plain_call(nargs, 6) || !parse_tensor(args[0], input) || !p.parse(args + 1))
    return not_implemented();
  variable_list out;
  {
    pybind11::gil_scoped_release no_gil;
    out = MaxPool2dFunction::apply(*input, p);
  }
  return pair(std::move(out[0]), std::move(out[1]));
  END_HANDLE_TH_ERRORS
}

#define CONVPOOL_FASTCALL(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f))

PyMethodDef methods[] = {
    {"_conv2d", CONVPOOL_FASTCALL(conv2d), METH_FASTCALL, "convpool::conv2d below autograd"},
    {"_conv2d_grad_input", CONVPOOL_FASTCALL(conv2d_grad<grad_input_op>), METH_FASTCALL,
     "convpool::conv2d_grad_input below autograd"},
    {"_conv2d_grad_weight", CONVPOOL_FASTCALL(conv2d_grad<grad_weight_op>), METH_FASTCALL,
     "convpool::conv2d_grad_weight below autograd"},
    {"_conv2d_grad_bias", CONVPOOL_FASTCALL(conv2d_grad_bias), METH_FASTCALL,
     "convpool::conv2d_grad_bias below autograd"},
    {"_conv2d_backward", CONVPOOL_FASTCALL(conv2d_backward), METH_FASTCALL,
     "conv2d's three backward ops below autograd, by output mask"},
    {"_conv2d_autograd", CONVPOOL_FASTCALL(conv2d_autograd), METH_FASTCALL,
     "convpool::conv2d recording a C++ autograd node"},
    {"_max_pool2d_autograd", CONVPOOL_FASTCALL(max_pool2d_autograd), METH_FASTCALL,
     "convpool::max_pool2d recording a C++ autograd node"},
    {"_max_pool2d", CONVPOOL_FASTCALL(max_pool2d), METH_FASTCALL,
     "convpool::max_pool2d below autograd"},
    {"_max_pool2d_values", CONVPOOL_FASTCALL(max_pool2d_values), METH_FASTCALL,
     "convpool::max_pool2d_values below autograd"},
    {"_max_pool2d_backward", CONVPOOL_FASTCALL(max_pool2d_backward), METH_FASTCALL,
     "convpool::max_pool2d_backward below autograd"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMethodDef* direct_call_methods() { return methods; }

}  // namespace convpool
