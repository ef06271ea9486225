// Vectorized float32 depthwise convolution (see depthwise_simd.h). The kernels are written once
// (depthwise_simd_kernels.h) over a vector type and compiled twice, for AVX-512 and for AVX2 + FMA,
// under `#pragma GCC target`; the library itself stays baseline x86-64.
//
// fprop and stride-1 dgrad are the same operation, a correlation: out[o] = sum over taps of
// w[tap] * in[o * stride + offset + tap * step]. fprop has offset = -padding, step = dilation;
// stride-1 dgrad reads grad_output with offset = +padding and step = -dilation (the adjoint
// gather, no kernel flip needed). channels_last tensors go along channels, NCHW rows along the width.
// Every output element is owned by one task and summed in a fixed order; grad_weight splits the
// batch's rows into a fixed number of blocks (a function of the shape, not of the thread count) and
// adds the blocks in order, so results do not depend on the thread count.
#include "depthwise_simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../shape.h"
#include "depthwise_conv2d.h"
#include "isa.h"
#include "window.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define CONVPOOL_DEPTHWISE_X86 1
#include <immintrin.h>
#endif

namespace convpool::cpu::depthwise {
namespace {

// A correlation's geometry (see the header comment); `in` is what it reads, `out` what it writes.
struct Correlation {
  int64_t in_h, in_w, out_h, out_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t off_h, off_w;    // input row/column of tap 0 = output row/column * stride + off
  int64_t step_h, step_w;  // between taps
};

Correlation fprop_correlation(const Conv2dParams& p) {
  return {p.in_height, p.in_width, p.out_height, p.out_width, p.kernel_h, p.kernel_w,
          p.stride_h, p.stride_w, -p.pad_h, -p.pad_w, p.dilation_h, p.dilation_w};
}

// stride-1 dgrad: grad_input[i] = sum over taps of w[tap] * grad_output[i + pad - tap * dilation].
Correlation dgrad_correlation(const Conv2dParams& p) {
  return {p.out_height, p.out_width, p.in_height, p.in_width, p.kernel_h, p.kernel_w,
          1, 1, p.pad_h, p.pad_w, -p.dilation_h, -p.dilation_w};
}

struct WidthRange {
  int64_t lo, hi;
};

// Output columns for which every tap lands inside the input row.
WidthRange interior(const Correlation& g) {
  int64_t lo = 0, hi = g.out_w;
  for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
    const OutputRange r = outputs_inside(g.off_w + kw * g.step_w, g.stride_w, g.in_w, g.out_w);
    lo = std::max(lo, r.begin);
    hi = std::min(hi, r.end);
  }
  lo = std::min(lo, g.out_w);  // a tap that never lands inside leaves no interior at all
  return {lo, std::max(lo, hi)};
}

struct Args {
  Conv2dParams p;
  Correlation geo;
  int64_t channels;
  const float* x;  // what is read: input (fprop, wgrad) or grad_output (dgrad)
  Strides4 xs;
  float* y;        // what is written: output, grad_input or grad_weight
  Strides4 ys;
  const float* go;  // wgrad: grad_output
  Strides4 gos;
  const float* w;  // tap-major [taps][C] (channels_last kernels) or [C][taps] (planes)
  const float* bias;
  int64_t band_rows;  // output rows per task of the channel-blocked NCHW kernel
};

// A tile's floats, left uninitialized (the kernels write before they read).
std::unique_ptr<float[]> tile_buffer(int64_t floats) { return std::unique_ptr<float[]>(new float[floats]); }

struct Kernels {
  int64_t lanes;  // floats per vector
  void (*correlate_cl)(const Args&, int64_t, int64_t);
  void (*correlate_planes)(const Args&, int64_t, int64_t);
  void (*correlate_blocked)(const Args&, int64_t, int64_t);
  void (*correlate_flat)(const Args&, int64_t, int64_t);
  void (*wgrad_flat)(const Args&, int64_t, int64_t);
  void (*dgrad_strided_cl)(const Args&, int64_t, int64_t);
  void (*dgrad_strided_blocked)(const Args&, int64_t, int64_t);
  void (*wgrad_cl)(const Args&, int64_t, int64_t, int64_t, int64_t, double*);
  void (*wgrad_planes)(const Args&, int64_t, int64_t);
  void (*wgrad_blocked)(const Args&, int64_t, int64_t);
};

#ifdef CONVPOOL_DEPTHWISE_X86

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
namespace avx512 {
using V = __m512;
constexpr int kLanes = 16;
inline __mmask16 lanes_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline V zero() { return _mm512_setzero_ps(); }
inline V set1(float v) { return _mm512_set1_ps(v); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes_mask(n), p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, lanes_mask(n), v); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline float hsum(V v) { return _mm512_reduce_add_ps(v); }
inline V load_bits(const float* p, uint32_t bits) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>(bits), p);
}

// One round of the 16 x 16 transpose below (index vectors are compile-time constants, so the 16
// rows stay in registers).
template <int b>
inline void transpose_round(V r[kLanes]) {
  // lane m of the top row takes the bottom row's lane m - b where bit b of m is set, and vice versa
  const __m512i lo_idx = _mm512_setr_epi32(
      (0 & b) ? 16 + 0 - b : 0, (1 & b) ? 16 + 1 - b : 1, (2 & b) ? 16 + 2 - b : 2, (3 & b) ? 16 + 3 - b : 3,
      (4 & b) ? 16 + 4 - b : 4, (5 & b) ? 16 + 5 - b : 5, (6 & b) ? 16 + 6 - b : 6, (7 & b) ? 16 + 7 - b : 7,
      (8 & b) ? 16 + 8 - b : 8, (9 & b) ? 16 + 9 - b : 9, (10 & b) ? 16 + 10 - b : 10, (11 & b) ? 16 + 11 - b : 11,
      (12 & b) ? 16 + 12 - b : 12, (13 & b) ? 16 + 13 - b : 13, (14 & b) ? 16 + 14 - b : 14, (15 & b) ? 16 + 15 - b : 15);
  const __m512i hi_idx = _mm512_setr_epi32(
      (0 & b) ? 16 + 0 : 0 + b, (1 & b) ? 16 + 1 : 1 + b, (2 & b) ? 16 + 2 : 2 + b, (3 & b) ? 16 + 3 : 3 + b,
      (4 & b) ? 16 + 4 : 4 + b, (5 & b) ? 16 + 5 : 5 + b, (6 & b) ? 16 + 6 : 6 + b, (7 & b) ? 16 + 7 : 7 + b,
      (8 & b) ? 16 + 8 : 8 + b, (9 & b) ? 16 + 9 : 9 + b, (10 & b) ? 16 + 10 : 10 + b, (11 & b) ? 16 + 11 : 11 + b,
      (12 & b) ? 16 + 12 : 12 + b, (13 & b) ? 16 + 13 : 13 + b, (14 & b) ? 16 + 14 : 14 + b, (15 & b) ? 16 + 15 : 15 + b);
#pragma GCC unroll 16
  for (int i = 0; i < kLanes; ++i) {
    if (i & b) continue;
    const V top = r[i], bottom = r[i + b];
    r[i] = _mm512_permutex2var_ps(top, lo_idx, bottom);
    r[i + b] = _mm512_permutex2var_ps(top, hi_idx, bottom);
  }
}

// r[i][j] <- r[j][i]: one round per bit b of the index swaps bit b of the row with bit b of the
// column (the off-diagonal b x b blocks of every 2b x 2b block).
inline void transpose(V r[kLanes]) {
  transpose_round<8>(r);
  transpose_round<4>(r);
  transpose_round<2>(r);
  transpose_round<1>(r);
}
#include "depthwise_simd_kernels.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using V = __m256;
constexpr int kLanes = 8;
inline __m256i lanes_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline V zero() { return _mm256_setzero_ps(); }
inline V set1(float v) { return _mm256_set1_ps(v); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline V load_n(const float* p, int n) { return _mm256_maskload_ps(p, lanes_mask(n)); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, lanes_mask(n), v); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V load_bits(const float* p, uint32_t bits) {
  const __m256i pow2 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i set = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), pow2);
  return _mm256_maskload_ps(p, _mm256_cmpeq_epi32(set, pow2));
}
inline float hsum(V v) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
// r[i][j] <- r[j][i], as the AVX-512 version: rounds b = 4 (128-bit halves), 2 (pairs), 1.
inline void transpose(V r[kLanes]) {
  for (int i = 0; i < 4; ++i) {
    const V top = r[i], bottom = r[i + 4];
    r[i] = _mm256_permute2f128_ps(top, bottom, 0x20);
    r[i + 4] = _mm256_permute2f128_ps(top, bottom, 0x31);
  }
  for (int i : {0, 1, 4, 5}) {
    const V top = r[i], bottom = r[i + 2];
    r[i] = _mm256_shuffle_ps(top, bottom, _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 2] = _mm256_shuffle_ps(top, bottom, _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i : {0, 2, 4, 6}) {
    const V top = r[i], bottom = r[i + 1];
    r[i] = _mm256_blend_ps(top, _mm256_moveldup_ps(bottom), 0xAA);
    r[i + 1] = _mm256_blend_ps(_mm256_movehdup_ps(top), bottom, 0xAA);
  }
}
#include "depthwise_simd_kernels.h"
}  // namespace avx2
#pragma GCC pop_options

const Kernels* kernels() {
  if (use_avx512()) return &avx512::kKernels;
  if (use_avx2()) return &avx2::kKernels;
  return nullptr;
}

#else
const Kernels* kernels() { return nullptr; }
#endif

// The vector kernels for this CPU (the registry runs these entries only where it has AVX2).
const Kernels* kernels_checked() {
  const Kernels* k = kernels();
  TORCH_INTERNAL_ASSERT(k != nullptr, "depthwise vector kernels without AVX2");
  return k;
}

// The grain of a row-parallel loop: ~32K multiply-adds per task.
int64_t row_grain(int64_t work_per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_row));
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
      at::parallel_for(0, N * g.out_h, row_grain(g.out_w * C * taps),
                       [&](int64_t r0, int64_t r1) { k->correlate_cl(a, r0, r1); });
      break;
    case Walk::flat:
      at::parallel_for(0, N * C, row_grain(g.out_h * g.out_w * taps),
                       [&](int64_t q0, int64_t q1) { k->correlate_flat(a, q0, q1); });
      break;
    case Walk::blocked: {
      a.band_rows = band_rows(g);
      const int64_t tasks = N * ((C + k->lanes - 1) / k->lanes) * ((g.out_h + a.band_rows - 1) / a.band_rows);
      at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) { k->correlate_blocked(a, t0, t1); });
      break;
    }
    case Walk::planes:
      at::parallel_for(0, N * C * g.out_h, row_grain(g.out_w * taps),
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
                     row_grain(p.in_width * p.in_channels * p.kernel_h * p.kernel_w),
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

}  // namespace convpool::cpu::depthwise
