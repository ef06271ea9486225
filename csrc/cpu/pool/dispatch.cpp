// The max_pool2d dispatcher: the pool ops' registry table (registry.h) and MaxPool2dBackend
// (backends.h). The portable entries run portable.h's templates in the tensors' dtype; the vector
// (float32) entries run the kernel table of their ISA (kernels_impl.h compiled once per ISA by
// avx2.cpp and avx512.cpp; the library itself stays baseline x86-64) and split the work over
// threads here. Every output (forward) or grad_input element (backward) is written by one task
// in a fixed order, so results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <atomic>
#include <limits>
#include <sstream>
#include <string>

#include "../../shape.h"
#include "../backends.h"
#include "../helpers.h"
#include "../isa.h"
#include "../memory.h"
#include "../registry.h"
#include "kernels.h"
#include "portable.h"

namespace convpool::cpu {
namespace {

using pool::portable::channels_innermost;
using pool::portable::UpdateMaxGeneric;

// ---- the registry of the pool ops (registry.h) ------------------------------------------------

// One call of a pool op.
struct PoolProblem {
  const Pool2dParams* p;
  const at::Tensor* x;        // forward: input; backward: grad_output
  at::Tensor* out;            // values or grad_input
  at::Tensor* indices;        // forward: the indices to write (null for the values alone)
  const at::Tensor* saved;    // backward: the indices to read
};

std::string describe(const PoolProblem& q) {
  const Pool2dParams& p = *q.p;
  std::ostringstream ss;
  ss << "(input [" << p.batch << ", " << p.channels << ", " << p.in_height << ", " << p.in_width
     << "] " << q.x->scalar_type() << (q.x->stride(1) == 1 ? " channels-innermost" : "")
     << ", kernel_size (" << p.kernel_h << ", " << p.kernel_w << "), stride (" << p.stride_h
     << ", " << p.stride_w << "), padding (" << p.pad_h << ", " << p.pad_w << "), dilation ("
     << p.dilation_h << ", " << p.dilation_w << "), ceil_mode " << p.ceil_mode << ")";
  return ss.str();
}

// The tuning key: every size and stride of the tensors (so N, the layout and the views), dtype,
// pool parameters and thread count.
TuneKey key(Op op, const PoolProblem& q) {
  const Pool2dParams& p = *q.p;
  TuneKey k(op, active_isa());
  k.tag(c10::toString(q.x->scalar_type())).tensor("x", *q.x).tensor("o", *q.out);
  if (q.indices) k.tag("i").add_all(q.indices->strides());
  if (q.saved) k.tag("i").add_all(q.saved->strides());
  k.tag("k").add(p.kernel_h).add(p.kernel_w).tag("s").add(p.stride_h).add(p.stride_w);
  k.tag("p").add(p.pad_h).add(p.pad_w).tag("d").add(p.dilation_h).add(p.dilation_w);
  k.tag("c").add(p.ceil_mode).tag("t").add(at::get_num_threads());
  return k;
}

using PoolAlgorithm = Algorithm<PoolProblem>;

bool forward_channels_innermost(const PoolProblem& q) {
  return channels_innermost(*q.p, *q.x, *q.out, q.indices);
}
bool any_pool(const PoolProblem&) { return true; }
// The vector kernels: float32, indices and positions in int32 lanes.
bool float_int32(const PoolProblem& q) {
  return q.x->scalar_type() == at::kFloat &&
         q.p->in_height * q.p->in_width <= std::numeric_limits<int32_t>::max();
}

// A forward entry's run function for both ops (with and without indices).
template <template <bool> class Kernel>
void forward_entry(const PoolProblem& q) {
  if (q.indices) {
    Kernel<true>::run(*q.p, *q.x, *q.out, q.indices);
  } else {
    Kernel<false>::run(*q.p, *q.x, *q.out, nullptr);
  }
}

template <bool kIndices>
struct PortableRows {
  static void run(const Pool2dParams& p, const at::Tensor& x, at::Tensor& v, at::Tensor* i) {
    AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d", [&] {
      pool::portable::forward_rows<scalar_t, int64_t, kIndices>(p, x, v, i, UpdateMaxGeneric<kIndices>{});
    });
  }
};
template <bool kIndices>
struct PortableChannelsLast {
  static void run(const Pool2dParams& p, const at::Tensor& x, at::Tensor& v, at::Tensor* i) {
    AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d", [&] {
      pool::portable::forward_channels_last<scalar_t, int64_t, kIndices>(p, x, v, i, UpdateMaxGeneric<kIndices>{});
    });
  }
};

void backward_portable_channels_last(const PoolProblem& q) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.x->scalar_type(), "max_pool2d_backward", [&] {
    pool::portable::backward_channels_last<scalar_t>(*q.p, *q.x, *q.saved, *q.out);
  });
}
void backward_portable_planes(const PoolProblem& q) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.x->scalar_type(), "max_pool2d_backward", [&] {
    pool::portable::backward_planes<scalar_t>(*q.p, *q.x, *q.saved, *q.out);
  });
}

#if defined(__x86_64__) && defined(__GNUC__)
// The kernel table of one ISA: an entry runs its own ISA's kernels (pool_avx2_* on an AVX-512
// CPU too), so the registry can force and time each.
template <Isa kIsa>
const pool::Kernels& kernels() {
  static_assert(kIsa == Isa::avx2 || kIsa == Isa::avx512);
  return kIsa == Isa::avx512 ? pool::avx512::kKernels : pool::avx2::kKernels;
}

pool::Forward forward_args(const PoolProblem& q) {
  return {*q.p, q.x->const_data_ptr<float>(), strides4(*q.x), q.out->mutable_data_ptr<float>(),
          strides4(*q.out), q.indices ? q.indices->mutable_data_ptr<int64_t>() : nullptr,
          q.indices ? strides4(*q.indices) : Strides4{}};
}

template <Isa kIsa>
void vector_rows(const PoolProblem& q) {
  const pool::Kernels& k = kernels<kIsa>();
  const pool::Forward f = forward_args(q);
  const Pool2dParams& p = *q.p;
  const int64_t rows = p.batch * p.channels * p.out_height;
  at::parallel_for(0, rows, grain_for(std::max<int64_t>(1, p.out_width * p.kernel_h * p.kernel_w)),
                   [&](int64_t r0, int64_t r1) { k.forward_rows(f, r0, r1); });
}

template <Isa kIsa>
void vector_channels_last(const PoolProblem& q) {
  const pool::Kernels& k = kernels<kIsa>();
  const pool::Forward f = forward_args(q);
  const Pool2dParams& p = *q.p;
  const int64_t pixels = p.batch * p.out_height * p.out_width;
  at::parallel_for(0, pixels, grain_for(std::max<int64_t>(1, p.channels * p.kernel_h * p.kernel_w)),
                   [&](int64_t q0, int64_t q1) { k.forward_channels_last(f, q0, q1); });
}

bool rows_fit(const PoolProblem& q) {
  const Strides4 xs = q.indices ? strides4(*q.indices) : Strides4{};
  return float_int32(q) && !forward_channels_innermost(q) &&
         pool::rows_supported(*q.p, strides4(*q.x), strides4(*q.out), q.indices ? &xs : nullptr);
}
bool channels_last_fit(const PoolProblem& q) { return float_int32(q) && forward_channels_innermost(q); }
pool::Backward backward_args(const PoolProblem& q) {
  return {*q.p, q.x->const_data_ptr<float>(), strides4(*q.x), q.saved->const_data_ptr<int64_t>(),
          strides4(*q.saved), q.out->mutable_data_ptr<float>(), strides4(*q.out), 0};
}

// The vector backward kernels read grad_output and indices along their unit-stride dimension
// (columns, or channels) and write a dense grad_input.
bool backward_planes_fit(const PoolProblem& q) {
  const Pool2dParams& p = *q.p;
  const Strides4 gs = strides4(*q.x), xs = strides4(*q.saved), is = strides4(*q.out);
  return float_int32(q) && gs.w == 1 && xs.w == 1 && is.w == 1 && is.h == p.in_width;
}
bool backward_channels_last_fit(const PoolProblem& q) {
  const Pool2dParams& p = *q.p;
  const Strides4 gs = strides4(*q.x), xs = strides4(*q.saved), is = strides4(*q.out);
  return float_int32(q) && p.channels > 1 && gs.c == 1 && xs.c == 1 && is.c == 1 &&
         is.w == p.channels && is.h == p.in_width * p.channels;
}

// The tap-masked channels_last backward does kernel_h * kernel_w vector read-modify-writes per
// channel vector of an output; the portable scatter one scalar add per output, and it splits a
// batch smaller than the thread count into channel blocks that each pass over every output.
// Measured (Zen 4, run.py --quick --suite pool --algorithms, 2 threads): the vector kernel wins
// on 2x2 windows (VGG-16 pool3 256ch @56: 0.20 ms against 1.18 at batch 1, 0.41 against 0.43 at
// batch 2) and on any window at batch 1 (ResNet stem 64ch @112, 3x3: 0.26 against 0.51;
// SqueezeNet pool1 3x3: 0.46 against 0.71), not on 3x3 windows once every thread has an image
// (batch 2: 0.52 against 0.42, 0.68 against 0.58).
bool vector_backward_channels_last_preferred(const PoolProblem& q) {
  return q.p->kernel_h * q.p->kernel_w <= 4 || q.p->batch < at::get_num_threads();
}

template <Isa kIsa>
void vector_backward_planes(const PoolProblem& q) {
  const pool::Kernels& k = kernels<kIsa>();
  const pool::Backward b = backward_args(q);
  std::atomic<bool> clean{true};
  at::parallel_for(0, q.p->batch * q.p->channels, 1, [&](int64_t q0, int64_t q1) {
    if (!k.backward_planes(b, q0, q1)) clean = false;
  });
  // An index outside its plane: the portable kernel computes the whole call again and names it.
  if (!clean) backward_portable_planes(q);
}

template <Isa kIsa>
void vector_backward_channels_last(const PoolProblem& q) {
  const pool::Kernels& k = kernels<kIsa>();
  pool::Backward b = backward_args(q);
  const Pool2dParams& p = *q.p;
  // Bands of grad_input rows: about 4 tasks per thread however small the batch (each task also
  // compares the output rows that reach its band's edges), a few stride rows at least.
  const int64_t bands = std::max<int64_t>(1, (4 * at::get_num_threads() + p.batch - 1) / p.batch);
  const int64_t least = p.stride_h >= p.in_height ? p.in_height : 2 * p.stride_h;
  b.band_rows = std::min(p.in_height, std::max((p.in_height + bands - 1) / bands, least));
  const int64_t tasks = p.batch * ((p.in_height + b.band_rows - 1) / b.band_rows);
  std::atomic<bool> clean{true};
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    if (!k.backward_channels_last(b, t0, t1)) clean = false;
  });
  // An index that is not one of its window's taps (or not in the plane): the portable scatter
  // computes the whole call again (it sums such indices where torch would, or raises).
  if (!clean) backward_portable_channels_last(q);
}

#endif

#define CONVPOOL_POOL_FORWARD(NAME, ISA, PRIORITY, APPLICABLE, PREFERRED, RUN)         \
  {NAME, Op::pool_forward, ISA, PRIORITY, APPLICABLE, PREFERRED, RUN}, \
  {NAME, Op::pool_values, ISA, PRIORITY, APPLICABLE, PREFERRED, RUN}

// Heuristic order: the widest vectors the CPU has, along channels where they are innermost.
const PoolAlgorithm kPoolAlgorithms[] = {
#if defined(__x86_64__) && defined(__GNUC__)
    CONVPOOL_POOL_FORWARD("pool_avx512_channels_last", Isa::avx512, 0, channels_last_fit, nullptr,
                          vector_channels_last<Isa::avx512>),
    CONVPOOL_POOL_FORWARD("pool_avx512_rows", Isa::avx512, 1, rows_fit, nullptr, vector_rows<Isa::avx512>),
    CONVPOOL_POOL_FORWARD("pool_avx2_channels_last", Isa::avx2, 2, channels_last_fit, nullptr,
                          vector_channels_last<Isa::avx2>),
    CONVPOOL_POOL_FORWARD("pool_avx2_rows", Isa::avx2, 3, rows_fit, nullptr, vector_rows<Isa::avx2>),
#endif
    CONVPOOL_POOL_FORWARD("pool_channels_last", Isa::generic, 4, forward_channels_innermost, nullptr,
                          forward_entry<PortableChannelsLast>),
    CONVPOOL_POOL_FORWARD("pool_rows", Isa::generic, 5, any_pool, nullptr, forward_entry<PortableRows>),
#if defined(__x86_64__) && defined(__GNUC__)
    {"pool_backward_avx512_channels_last", Op::pool_backward, Isa::avx512, 0,
     backward_channels_last_fit, vector_backward_channels_last_preferred,
     vector_backward_channels_last<Isa::avx512>},
    {"pool_backward_avx2_channels_last", Op::pool_backward, Isa::avx2, 1,
     backward_channels_last_fit, vector_backward_channels_last_preferred,
     vector_backward_channels_last<Isa::avx2>},
#endif
    {"pool_backward_channels_last", Op::pool_backward, Isa::generic, 2,
     [](const PoolProblem& q) { return q.p->channels > 1 && q.out->stride(1) == 1; }, nullptr,
     backward_portable_channels_last},
#if defined(__x86_64__) && defined(__GNUC__)
    {"pool_backward_avx512_planes", Op::pool_backward, Isa::avx512, 3, backward_planes_fit,
     nullptr, vector_backward_planes<Isa::avx512>},
    {"pool_backward_avx2_planes", Op::pool_backward, Isa::avx2, 4, backward_planes_fit, nullptr,
     vector_backward_planes<Isa::avx2>},
#endif
    {"pool_backward_planes", Op::pool_backward, Isa::generic, 5, any_pool, nullptr,
     backward_portable_planes},
};
#undef CONVPOOL_POOL_FORWARD

const bool kPoolNamesRegistered = register_table(kPoolAlgorithms);

}  // namespace

// Elements a forward visits (outputs times window), saturating: registry.h's kSerialWork.
int64_t window_visits(int64_t outputs, const Pool2dParams& p) {
  const double visits = static_cast<double>(outputs) * p.kernel_h * p.kernel_w;
  return visits >= 9e18 ? INT64_MAX : static_cast<int64_t>(visits);
}

void MaxPool2dBackend::forward(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                               at::Tensor* indices) {
  advise_huge_pages(values);
  if (indices) advise_huge_pages(*indices);
  dispatch(kPoolAlgorithms, indices ? Op::pool_forward : Op::pool_values,
           PoolProblem{&p, &input, &values, indices, nullptr}, describe, key,
           window_visits(values.numel(), p));
}

void MaxPool2dBackend::backward(const Pool2dParams& p, const at::Tensor& grad_output,
                                const at::Tensor& indices, at::Tensor& grad_input) {
  advise_huge_pages(grad_input);
  dispatch(kPoolAlgorithms, Op::pool_backward,
           PoolProblem{&p, &grad_output, &grad_input, nullptr, &indices}, describe, key,
           grad_input.numel() + grad_output.numel());
}

}  // namespace convpool::cpu
