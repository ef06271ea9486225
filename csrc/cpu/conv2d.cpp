// The conv ops' CPU backend (backends.h): the registry table of every CPU conv algorithm
// (registry.h) and the Conv2dBackend members, which select in it and run the entry. The kernels
// live in files of their own, one per job:
//   conv_gemm.cpp   gemm_im2col, gemm_col2im and winograd_f4x4's GEMM fallback (im2col.h packers)
//   direct/         direct_hwc (fprop, wgrad, and dgrad by stride phase; tiles per ISA)
//   dgrad_phases.cpp dgrad_phases
//   winograd/       Winograd F(4x4, 3x3) (dispatch.cpp: blocks and products; transforms per ISA)
//   grad_bias.cpp   bias_channels_last, bias_planes
//   depthwise/      the depthwise kernels (dispatch.cpp: vector walks and portable templates)
//   amx/            amx_bf16 (bfloat16 fprop, wgrad and stride-1 dgrad on AMX tiles)
// A new algorithm is a kernel file plus one entry in the table below (docs/registry.md).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <sstream>
#include <string>

#include "../shape.h"
#include "amx/amx.h"
#include "backends.h"
#include "conv_gemm.h"
#include "dgrad_phases.h"
#include "direct/direct.h"
#include "depthwise/depthwise.h"
#include "grad_bias.h"
#include "memory.h"
#include "registry.h"
#include "winograd/winograd.h"

namespace convpool::cpu {
namespace {

// The conv ops' dtypes, for a `run` that dispatches a kernel template itself (the kernel files
// above export functions that dispatch on the dtype themselves).
#define CONVPOOL_DISPATCH_CONV_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// ---- the registry of the conv ops (registry.h) ------------------------------------------------

// One call of a conv op. grad_bias has no Conv2dParams (p is null).
struct ConvProblem {
  const char* x_name;      // for messages: "input" or "grad_output"
  const Conv2dParams* p;
  const at::Tensor* x;     // fprop: input; dgrad, wgrad, grad_bias: grad_output
  const at::Tensor* w;     // fprop, dgrad: weight; wgrad: input
  const at::Tensor* bias;  // fprop's bias or null
  at::Tensor* out;         // output, grad_input, grad_weight or grad_bias
};

std::string describe(const ConvProblem& q) {
  std::ostringstream ss;
  ss << "(" << q.x_name << " " << q.x->sizes() << " " << q.x->scalar_type()
     << (is_channels_last(*q.x) ? " channels_last" : "");
  if (q.p != nullptr) {
    const Conv2dParams& p = *q.p;
    ss << ", weight [" << p.out_channels << ", " << p.in_channels_per_group() << ", " << p.kernel_h
       << ", " << p.kernel_w << "], stride (" << p.stride_h << ", " << p.stride_w << "), padding ("
       << p.pad_h << ", " << p.pad_w << "), dilation (" << p.dilation_h << ", " << p.dilation_w
       << "), groups " << p.groups;
  }
  ss << ")";
  return ss.str();
}

// The tuning key: every size and stride of the tensors (so N, the layout and the views), dtype,
// bias, conv parameters and thread count.
TuneKey key(Op op, const ConvProblem& q) {
  TuneKey k(op, active_isa());
  k.tag(c10::toString(q.x->scalar_type())).tensor("x", *q.x);
  if (q.w) k.tensor("w", *q.w);
  k.tensor("o", *q.out).tag("b").add(q.bias != nullptr);
  if (q.p != nullptr) {
    const Conv2dParams& p = *q.p;
    k.tag("s").add(p.stride_h).add(p.stride_w).tag("p").add(p.pad_h).add(p.pad_w);
    k.tag("d").add(p.dilation_h).add(p.dilation_w).tag("g").add(p.groups);
  }
  k.tag("t").add(at::get_num_threads());
  return k;
}

using ConvAlgorithm = Algorithm<ConvProblem>;
using depthwise::Pass;
using depthwise::Walk;

bool depthwise_problem(const ConvProblem& q) { return is_depthwise(*q.p); }
bool not_depthwise(const ConvProblem& q) { return !is_depthwise(*q.p); }
bool any_problem(const ConvProblem&) { return true; }

// The vector depthwise kernels' walks: what each pass reads along the correlation and writes.
template <Pass pass>
const at::Tensor& walk_x(const ConvProblem& q) { return pass == Pass::wgrad ? *q.w : *q.x; }
template <Pass pass>
const at::Tensor& walk_y(const ConvProblem& q) { return pass == Pass::wgrad ? *q.x : *q.out; }
template <Pass pass, Walk walk>
bool walk_fits(const ConvProblem& q) {
  return is_depthwise(*q.p) && depthwise::walk_fits(walk, pass, *q.p, walk_x<pass>(q), walk_y<pass>(q));
}
template <Pass pass, Walk walk>
bool walk_preferred(const ConvProblem& q) {
  return depthwise::walk_preferred(walk, pass, *q.p, walk_x<pass>(q), walk_y<pass>(q));
}
template <Walk walk>
void depthwise_vec_fprop(const ConvProblem& q) {
  depthwise::fprop_simd(walk, *q.p, *q.x, *q.w, q.bias, *q.out);
}
template <Walk walk>
void depthwise_vec_dgrad(const ConvProblem& q) {
  depthwise::dgrad_simd(walk, *q.p, *q.x, *q.w, *q.out);
}
template <Walk walk>
void depthwise_vec_wgrad(const ConvProblem& q) {
  depthwise::wgrad_simd(walk, *q.p, *q.x, *q.w, *q.out);
}
#define CONVPOOL_DEPTHWISE_VEC(NAME, WALK, PRIORITY, PREFERRED)                                    \
  {NAME, Op::fprop, Isa::avx2, PRIORITY, walk_fits<Pass::fprop, WALK>, PREFERRED(Pass::fprop, WALK), \
   depthwise_vec_fprop<WALK>},                                                                     \
  {NAME, Op::dgrad, Isa::avx2, PRIORITY, walk_fits<Pass::dgrad, WALK>, PREFERRED(Pass::dgrad, WALK), \
   depthwise_vec_dgrad<WALK>},                                                                     \
  {NAME, Op::wgrad, Isa::avx2, PRIORITY, walk_fits<Pass::wgrad, WALK>, PREFERRED(Pass::wgrad, WALK), \
   depthwise_vec_wgrad<WALK>}
#define CONVPOOL_ALWAYS(PASS, WALK) nullptr
#define CONVPOOL_WALK_RULE(PASS, WALK) walk_preferred<PASS, WALK>

// The transposed problem stride-1 dgrad runs as an fprop (dgrad_as_fprop).
bool dgrad_as_winograd(const ConvProblem& q) {
  return conv_gemm::dgrad_as_fprop(*q.p) &&
         winograd::applies(conv_gemm::dgrad_as_fprop_params(*q.p), q.x->scalar_type());
}

// The heuristic order is `preferred` first, then `priority` (then table order): for a depthwise
// conv the depthwise walks (vector ones first), for any other in bfloat16 on an AMX CPU the AMX
// tiles, then the Winograd thresholds, then the
// direct kernel where preferred (short reductions: direct/dispatch.cpp), then the implicit GEMM,
// then (dgrad only) the GEMM per output phase where preferred (dgrad_phases.cpp) and the
// explicit col2im GEMM; for a stride-1 dgrad of few output pixels the col2im GEMM before the
// implicit one (conv_gemm::dgrad_col2im_preferred). Every entry is tested on its own
// (tests/test_registry.py).
const ConvAlgorithm kConvAlgorithms[] = {
    CONVPOOL_DEPTHWISE_VEC("depthwise_vec_channels_last", Walk::channels_last, 0, CONVPOOL_ALWAYS),
    CONVPOOL_DEPTHWISE_VEC("depthwise_vec_flat", Walk::flat, 1, CONVPOOL_ALWAYS),
    CONVPOOL_DEPTHWISE_VEC("depthwise_vec_planes", Walk::planes, 2, CONVPOOL_WALK_RULE),
    CONVPOOL_DEPTHWISE_VEC("depthwise_vec_tiles", Walk::blocked, 3, CONVPOOL_ALWAYS),
    {"depthwise_channels_last", Op::fprop, Isa::generic, 4,
     [](const ConvProblem& q) {
       return is_depthwise(*q.p) && depthwise::channels_innermost(*q.p, *q.x, *q.out);
     },
     nullptr,
     [](const ConvProblem& q) { depthwise::fprop_channels_last(*q.p, *q.x, *q.w, q.bias, *q.out); }},
    {"depthwise_channels_last", Op::dgrad, Isa::generic, 4,
     [](const ConvProblem& q) {
       return is_depthwise(*q.p) && depthwise::channels_innermost(*q.p, *q.x, *q.out);
     },
     nullptr,
     [](const ConvProblem& q) { depthwise::dgrad_channels_last(*q.p, *q.x, *q.w, *q.out); }},
    {"depthwise_channels_last", Op::wgrad, Isa::generic, 4,
     [](const ConvProblem& q) {
       return is_depthwise(*q.p) && depthwise::channels_innermost(*q.p, *q.x, *q.w);
     },
     nullptr,
     [](const ConvProblem& q) { depthwise::wgrad_channels_last(*q.p, *q.x, *q.w, *q.out); }},
    {"depthwise_rows", Op::fprop, Isa::generic, 5, depthwise_problem, nullptr,
     [](const ConvProblem& q) { depthwise::fprop_rows(*q.p, *q.x, *q.w, q.bias, *q.out); }},
    {"depthwise_rows", Op::dgrad, Isa::generic, 5, depthwise_problem, nullptr,
     [](const ConvProblem& q) { depthwise::dgrad_rows(*q.p, *q.x, *q.w, *q.out); }},
    {"depthwise_rows", Op::wgrad, Isa::generic, 5, depthwise_problem, nullptr,
     [](const ConvProblem& q) { depthwise::wgrad_rows(*q.p, *q.x, *q.w, *q.out); }},
    {"amx_bf16", Op::fprop, Isa::amx, 6,
     [](const ConvProblem& q) { return amx::fprop_applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return amx::fprop_preferred(*q.p); },
     [](const ConvProblem& q) { amx::fprop(*q.p, *q.x, *q.w, q.bias, *q.out); }},
    {"amx_bf16", Op::dgrad, Isa::amx, 6,
     [](const ConvProblem& q) { return amx::dgrad_applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return amx::dgrad_preferred(*q.p); },
     [](const ConvProblem& q) { amx::dgrad(*q.p, *q.x, *q.w, *q.out); }},
    {"amx_bf16", Op::wgrad, Isa::amx, 6,
     [](const ConvProblem& q) { return amx::wgrad_applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return amx::wgrad_preferred(*q.p); },
     [](const ConvProblem& q) { amx::wgrad(*q.p, *q.x, *q.w, *q.out); }},
    {"winograd_f4x4", Op::fprop, Isa::generic, 6,
     [](const ConvProblem& q) { return winograd::applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return winograd::preferred(*q.p); },
     [](const ConvProblem& q) { conv_gemm::winograd_fprop(*q.p, *q.x, *q.w, q.bias, *q.out); }},
    {"winograd_f4x4", Op::dgrad, Isa::generic, 6, dgrad_as_winograd,
     [](const ConvProblem& q) { return winograd::preferred(conv_gemm::dgrad_as_fprop_params(*q.p)); },
     [](const ConvProblem& q) { conv_gemm::winograd_dgrad(*q.p, *q.x, *q.w, *q.out); }},
    {"direct_hwc", Op::fprop, Isa::generic, 7,
     [](const ConvProblem& q) { return direct::fprop_applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return direct::fprop_preferred(*q.p, *q.out); },
     [](const ConvProblem& q) { direct::fprop(*q.p, *q.x, *q.w, q.bias, *q.out); }},
    {"direct_hwc", Op::dgrad, Isa::generic, 7,
     [](const ConvProblem& q) { return direct::dgrad_applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return direct::dgrad_preferred(*q.p, *q.out); },
     [](const ConvProblem& q) { direct::dgrad(*q.p, *q.x, *q.w, *q.out); }},
    {"direct_hwc", Op::wgrad, Isa::generic, 7,
     [](const ConvProblem& q) { return direct::wgrad_applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return direct::wgrad_preferred(*q.p); },
     [](const ConvProblem& q) { direct::wgrad(*q.p, *q.x, *q.w, *q.out); }},
    {"gemm_im2col", Op::fprop, Isa::generic, 7, any_problem, not_depthwise,
     [](const ConvProblem& q) { conv_gemm::fprop(*q.p, *q.x, *q.w, q.bias, *q.out); }},
    {"gemm_im2col", Op::dgrad, Isa::generic, 7,
     [](const ConvProblem& q) { return conv_gemm::dgrad_as_fprop(*q.p); },
     [](const ConvProblem& q) {
       return !is_depthwise(*q.p) && !conv_gemm::dgrad_col2im_preferred(*q.p, *q.out);
     },
     [](const ConvProblem& q) { conv_gemm::dgrad_by_fprop(*q.p, *q.x, *q.w, *q.out); }},
    {"gemm_im2col", Op::wgrad, Isa::generic, 7, any_problem, not_depthwise,
     [](const ConvProblem& q) { conv_gemm::wgrad(*q.p, *q.x, *q.w, *q.out); }},
    {"dgrad_phases", Op::dgrad, Isa::generic, 7,
     [](const ConvProblem& q) { return dgrad_phases_applies(*q.p); },
     [](const ConvProblem& q) { return dgrad_phases_preferred(*q.p, *q.out); },
     [](const ConvProblem& q) { dgrad_phases(*q.p, *q.x, *q.w, *q.out); }},
    {"gemm_col2im", Op::dgrad, Isa::generic, 8, any_problem,
     [](const ConvProblem& q) {
       return !is_depthwise(*q.p) && conv_gemm::dgrad_col2im_preferred(*q.p, *q.out);
     },
     [](const ConvProblem& q) { conv_gemm::dgrad_col2im(*q.p, *q.x, *q.w, *q.out); }},
    {"bias_channels_last", Op::grad_bias, Isa::generic, 0,
     [](const ConvProblem& q) { return q.x->stride(1) == 1 && q.x->size(1) > 1; }, nullptr,
     [](const ConvProblem& q) { grad_bias_channels_last(*q.x, *q.out); }},
    {"bias_planes", Op::grad_bias, Isa::generic, 1, any_problem, nullptr,
     [](const ConvProblem& q) { grad_bias_planes(*q.x, *q.out); }},
};
#undef CONVPOOL_DEPTHWISE_VEC
#undef CONVPOOL_ALWAYS
#undef CONVPOOL_WALK_RULE

const bool kConvNamesRegistered = register_table(kConvAlgorithms);

}  // namespace

// The algorithm the CPU backend selects for conv2d ("fprop") or conv2d_grad_input ("dgrad") of
// `p` on contiguous tensors (the registry's name); convpool._C._cpu_conv2d_algorithm.
const char* conv2d_algorithm(const Conv2dParams& p, c10::ScalarType dtype, bool dgrad) {
  const auto options = at::TensorOptions().dtype(dtype);
  const at::Tensor input = at::empty({p.batch, p.in_channels, p.in_height, p.in_width}, options);
  const at::Tensor weight =
      at::empty({p.out_channels, p.in_channels_per_group(), p.kernel_h, p.kernel_w}, options);
  at::Tensor output = at::empty({p.batch, p.out_channels, p.out_height, p.out_width}, options);
  at::Tensor grad_input = input;
  const ConvProblem q = dgrad ? ConvProblem{"grad_output", &p, &output, &weight, nullptr, &grad_input}
                              : ConvProblem{"input", &p, &input, &weight, nullptr, &output};
  return select(kConvAlgorithms, dgrad ? Op::dgrad : Op::fprop, q, describe).name;
}

// The multiply-adds of one pass (fprop, dgrad and wgrad alike), saturating: for kSerialWork.
int64_t multiply_adds(const Conv2dParams& p) {
  const double macs = static_cast<double>(p.batch) * p.out_channels * p.out_height * p.out_width *
                      p.in_channels_per_group() * p.kernel_h * p.kernel_w;
  return macs >= 9e18 ? INT64_MAX : static_cast<int64_t>(macs);
}

void Conv2dBackend::fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                          const at::Tensor* bias, at::Tensor& output) {
  advise_huge_pages(output);
  dispatch(kConvAlgorithms, Op::fprop, ConvProblem{"input", &p, &input, &weight, bias, &output},
           describe, key, multiply_adds(p));
}

void Conv2dBackend::dgrad(const Conv2dParams& p, const at::Tensor& grad_output,
                          const at::Tensor& weight, at::Tensor& grad_input) {
  advise_huge_pages(grad_input);
  dispatch(kConvAlgorithms, Op::dgrad,
           ConvProblem{"grad_output", &p, &grad_output, &weight, nullptr, &grad_input}, describe,
           key, multiply_adds(p));
}

void Conv2dBackend::wgrad(const Conv2dParams& p, const at::Tensor& grad_output,
                          const at::Tensor& input, at::Tensor& grad_weight) {
  dispatch(kConvAlgorithms, Op::wgrad,
           ConvProblem{"grad_output", &p, &grad_output, &input, nullptr, &grad_weight}, describe,
           key, multiply_adds(p));
}

void Conv2dBackend::grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  dispatch(kConvAlgorithms, Op::grad_bias,
           ConvProblem{"grad_output", nullptr, &grad_output, nullptr, nullptr, &grad_bias},
           describe, key, grad_output.numel());
}

}  // namespace convpool::cpu
