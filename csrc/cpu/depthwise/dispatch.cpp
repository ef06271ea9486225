// The depthwise dispatcher: every entry point of depthwise.h, i.e. every depthwise registry
// entry. The portable entries run the templates of portable.h in the tensor's dtype. The vector
// (float32) entries run the kernel table of the CPU's ISA (isa.h's choice, made once;
// kernels_impl.h compiled once per ISA by avx2.cpp and avx512.cpp, the library itself staying
// baseline x86-64) and split the walk over threads here.
//
// fprop and stride-1 dgrad are the same operation, a correlation: out[o] = sum over taps of
// w[tap] * in[o * stride + offset + tap * step]. fprop has offset = -padding, step = dilation;
// stride-1 dgrad reads grad_output with offset = +padding and step = -dilation (the adjoint
// gather, no kernel flip needed). channels_last tensors go along channels, NCHW rows along the width.
// Every output element is owned by one task and summed in a fixed order; grad_weight splits the
// batch's rows into a fixed number of blocks (a function of the shape, not of the thread count) and
// adds the blocks in order, so results do not depend on the thread count.
#include "depthwise.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "../../shape.h"
#include "../helpers.h"
#include "../isa.h"
#include "kernels.h"
#include "portable.h"

namespace convpool::cpu::depthwise {
namespace {

// The kernels of the widest ISA the CPU has (isa.h); nullptr without AVX2.
const Kernels* kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (use_avx512()) return &avx512::kKernels;
  if (use_avx2()) return &avx2::kKernels;
#endif
  return nullptr;
}

// The vector kernels for this CPU (the registry runs these entries only where it has AVX2).
const Kernels* kernels_checked() {
  const Kernels* k = kernels();
  TORCH_INTERNAL_ASSERT(k != nullptr, "depthwise vector kernels without AVX2");
  return k;
}

// Output rows per task of the channel-blocked NCHW kernel: the band's input rows (16 channels
// interleaved) stay within ~64 KiB.
int64_t band_rows(const Correlation& g) {
  const int64_t row_bytes = g.in_w * 16 * 4;
  const int64_t reach = std::abs((g.kernel_h - 1) * g.step_h);
  const int64_t rows_fit = (int64_t{64} << 10) / std::max<int64_t>(1, row_bytes);
  return std::max<int64_t>(1, (rows_fit - reach) / g.stride_h);
}

// Small planes at stride 1 with input and output rows of one width, dense rows: flattened.
bool flat_fits(const Correlation& g, Strides4 xs, Strides4 ys) {
  return g.stride_h == 1 && g.stride_w == 1 && g.in_w == g.out_w && xs.w == 1 &&
         xs.h == g.in_w && ys.w == 1 && ys.h == g.out_w && g.out_w <= 24 &&
         g.out_h * g.out_w <= 1024;
}

// The correlation a pass walks: dgrad's (stride 1; strided dgrad walks per phase) or fprop's.
Correlation correlation(Pass pass, const Conv2dParams& p) {
  return pass == Pass::dgrad ? dgrad_correlation(p) : fprop_correlation(p);
}

// The correlation `a` describes (fprop, or stride-1 dgrad), over rows of `a.geo.out_h`.
void run_correlation(const Kernels* k, Args& a, Walk walk) {
  const Correlation& g = a.geo;
  const int64_t taps = g.kernel_h * g.kernel_w, N = a.p.batch, C = a.channels;
  switch (walk) {
    case Walk::channels_last:
      at::parallel_for(0, N * g.out_h, grain_for(g.out_w * C * taps),
                       [&](int64_t r0, int64_t r1) { k->correlate_cl(a, r0, r1); });
      break;
    case Walk::flat:
      at::parallel_for(0, N * C, grain_for(g.out_h * g.out_w * taps),
                       [&](int64_t q0, int64_t q1) { k->correlate_flat(a, q0, q1); });
      break;
    case Walk::blocked: {
      a.band_rows = band_rows(g);
      const int64_t tasks = N * ((C + k->lanes - 1) / k->lanes) * ((g.out_h + a.band_rows - 1) / a.band_rows);
      at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) { k->correlate_blocked(a, t0, t1); });
      break;
    }
    case Walk::planes:
      at::parallel_for(0, N * C * g.out_h, grain_for(g.out_w * taps),
                       [&](int64_t r0, int64_t r1) { k->correlate_planes(a, r0, r1); });
      break;
  }
}

// Weights as the walk reads them: tap-major [taps][C] along channels, else [C][taps].
std::vector<float> weights_for(Walk walk, const Conv2dParams& p, const at::Tensor& weight) {
  return walk == Walk::channels_last || walk == Walk::blocked ? tap_major_weights<float>(p, weight)
                                                              : weights_as_acc<float>(weight);
}

}  // namespace

bool walk_fits(Walk walk, Pass pass, const Conv2dParams& p, const at::Tensor& x,
               const at::Tensor& y) {
  if (x.scalar_type() != at::kFloat || p.out_channels != p.in_channels || p.groups != p.in_channels)
    return false;
  const bool stride1 = p.stride_h == 1 && p.stride_w == 1;
  const Correlation g = correlation(pass, p);
  const Strides4 xs = strides4(x), ys = strides4(y);
  switch (walk) {
    case Walk::channels_last: return channels_innermost(p, x, y);
    case Walk::flat: return (pass != Pass::dgrad || stride1) && flat_fits(g, xs, ys);
    case Walk::planes:
      return (pass != Pass::dgrad || stride1) && xs.w == 1 && ys.w == 1 && g.stride_w == 1;
    case Walk::blocked: return true;
  }
  return false;
}

bool walk_preferred(Walk walk, Pass pass, const Conv2dParams& p, const at::Tensor&,
                    const at::Tensor&) {
  // Wide unit-stride rows at stride 1 vectorize along the width; otherwise channel-blocked tiles
  // (measured: the tiles win from 56 columns down, and at stride 2 even at 112 columns, 1.9 vs
  // 7.1 ms for MobileNetV2's 96@112, where the width walk stalls on its loads).
  if (walk == Walk::planes) return correlation(pass, p).out_w >= 64;
  return true;
}

void fprop_simd(Walk walk, const Conv2dParams& p, const at::Tensor& input,
                const at::Tensor& weight, const at::Tensor* bias, at::Tensor& output) {
  const Kernels* k = kernels_checked();
  const Correlation g = fprop_correlation(p);
  const std::vector<float> w = weights_for(walk, p, weight);
  std::vector<float> b;
  if (bias) {
    b.resize(p.out_channels);
    for (int64_t c = 0; c < p.out_channels; ++c) b[c] = bias->const_data_ptr<float>()[c * bias->stride(0)];
  }
  Args a{p, g, p.in_channels, input.const_data_ptr<float>(), strides4(input),
         output.mutable_data_ptr<float>(), strides4(output), nullptr, {}, w.data(),
         bias ? b.data() : nullptr, 0};
  run_correlation(k, a, walk);
}

void dgrad_simd(Walk walk, const Conv2dParams& p, const at::Tensor& grad_output,
                const at::Tensor& weight, at::Tensor& grad_input) {
  const Kernels* k = kernels_checked();
  const Correlation g = dgrad_correlation(p);
  Args a{p, g, p.in_channels, grad_output.const_data_ptr<float>(), strides4(grad_output),
         grad_input.mutable_data_ptr<float>(), strides4(grad_input), nullptr, {}, nullptr,
         nullptr, 0};
  if (p.stride_h == 1 && p.stride_w == 1) {
    const std::vector<float> w = weights_for(walk, p, weight);
    a.w = w.data();
    run_correlation(k, a, walk);
    return;
  }
  // Strided: a stride-1 correlation per phase, along channels for channels_last, in
  // channel-blocked tiles for any other layout (walk_fits admits only these two).
  const std::vector<float> w = tap_major_weights<float>(p, weight);
  a.w = w.data();
  if (walk == Walk::channels_last) {
    at::parallel_for(0, p.batch * p.in_height,
                     grain_for(p.in_width * p.in_channels * p.kernel_h * p.kernel_w),
                     [&](int64_t r0, int64_t r1) { k->dgrad_strided_cl(a, r0, r1); });
  } else {
    const int64_t tasks = p.batch * ((p.in_channels + k->lanes - 1) / k->lanes);
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) { k->dgrad_strided_blocked(a, t0, t1); });
  }
}

void wgrad_simd(Walk walk, const Conv2dParams& p, const at::Tensor& grad_output,
                const at::Tensor& input, at::Tensor& grad_weight) {
  const Kernels* k = kernels_checked();
  const Correlation g = fprop_correlation(p);
  const int64_t C = p.in_channels, taps = p.kernel_h * p.kernel_w;
  Args a{p, g, C, input.const_data_ptr<float>(), strides4(input),
         grad_weight.mutable_data_ptr<float>(), strides4(grad_weight),
         grad_output.const_data_ptr<float>(), strides4(grad_output), nullptr, nullptr, 0};
  // The forward's walks over (input, grad_output); NCHW walks give each task whole channels.
  switch (walk) {
    case Walk::flat:
      at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) { k->wgrad_flat(a, c0, c1); });
      return;
    case Walk::planes:
      at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) { k->wgrad_planes(a, c0, c1); });
      return;
    case Walk::blocked:
      at::parallel_for(0, (C + k->lanes - 1) / k->lanes, 1,
                       [&](int64_t b0, int64_t b1) { k->wgrad_blocked(a, b0, b1); });
      return;
    case Walk::channels_last:
      break;
  }
  // Rows in a fixed number of blocks (a function of the shape: up to 16, at least ~1024 pixels
  // each, at most 32 MiB of double partial sums), each summed into its own [taps][C] block, then
  // the blocks added in order. Tasks are (block, 64 channels): small maps still give every thread
  // work without more blocks.
  const int64_t rows = p.batch * p.out_height;
  const int64_t block_values = taps * C;
  const int64_t max_blocks = std::max<int64_t>(1, (int64_t{32} << 20) / (8 * block_values));
  const int64_t blocks = std::max<int64_t>(
      1, std::min({rows, int64_t{16}, max_blocks, rows * p.out_width / 1024}));
  constexpr int64_t kTaskChannels = 64;
  const int64_t channel_groups = (C + kTaskChannels - 1) / kTaskChannels;
  std::vector<double> part(blocks * block_values, 0.0);
  at::parallel_for(0, blocks * channel_groups, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t blk = t / channel_groups, c0 = (t % channel_groups) * kTaskChannels;
      k->wgrad_cl(a, rows * blk / blocks, rows * (blk + 1) / blocks, c0,
                  std::min(C, c0 + kTaskChannels), part.data() + blk * block_values);
    }
  });
  const Strides4 ws = strides4(grad_weight);
  float* gw = grad_weight.mutable_data_ptr<float>();
  at::parallel_for(0, C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        double total = 0.0;
        for (int64_t blk = 0; blk < blocks; ++blk) total += part[blk * block_values + t * C + c];
        gw[c * ws.n + (t / p.kernel_w) * ws.h + (t % p.kernel_w) * ws.w] = static_cast<float>(total);
      }
  });
}

// ---- the portable entries: portable.h's templates in the tensors' dtype -------------------------

#define CONVPOOL_DEPTHWISE_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void fprop_channels_last(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor* bias, at::Tensor& output) {
  CONVPOOL_DEPTHWISE_TYPES(input.scalar_type(), "conv2d", [&] {
    portable::fprop_channels_last<scalar_t>(p, input, weight, bias, output);
  });
}

void dgrad_channels_last(const Conv2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& weight, at::Tensor& grad_input) {
  CONVPOOL_DEPTHWISE_TYPES(grad_output.scalar_type(), "conv2d_grad_input", [&] {
    portable::dgrad_channels_last<scalar_t>(p, grad_output, weight, grad_input);
  });
}

void wgrad_channels_last(const Conv2dParams& p, const at::Tensor& grad_output,
                         const at::Tensor& input, at::Tensor& grad_weight) {
  CONVPOOL_DEPTHWISE_TYPES(grad_output.scalar_type(), "conv2d_grad_weight", [&] {
    portable::wgrad_channels_last<scalar_t>(p, grad_output, input, grad_weight);
  });
}

void fprop_rows(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                const at::Tensor* bias, at::Tensor& output) {
  CONVPOOL_DEPTHWISE_TYPES(input.scalar_type(), "conv2d", [&] {
    portable::fprop<scalar_t>(p, input, weight, bias, output);
  });
}

void dgrad_rows(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                at::Tensor& grad_input) {
  CONVPOOL_DEPTHWISE_TYPES(grad_output.scalar_type(), "conv2d_grad_input", [&] {
    portable::dgrad<scalar_t>(p, grad_output, weight, grad_input);
  });
}

void wgrad_rows(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                at::Tensor& grad_weight) {
  CONVPOOL_DEPTHWISE_TYPES(grad_output.scalar_type(), "conv2d_grad_weight", [&] {
    portable::wgrad<scalar_t>(p, grad_output, input, grad_weight);
  });
}

#undef CONVPOOL_DEPTHWISE_TYPES

}  // namespace convpool::cpu::depthwise
