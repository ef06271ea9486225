// The depthwise vector kernels, written once over the vector vocabulary of simd/<isa>.h (V,
// kLanes, load, fmadd, ...): avx2.cpp and avx512.cpp each compile this file once, for their ISA,
// into namespace depthwise::<isa>, and export its Kernels table (kernels.h). The including file
// defines CONVPOOL_DEPTHWISE_ISA (avx2, avx512) and sets the ISA's `#pragma GCC target` first.
#pragma once

#ifndef CONVPOOL_DEPTHWISE_ISA
#error "kernels_impl.h is compiled by depthwise/avx2.cpp and depthwise/avx512.cpp only"
#endif

#include "kernels.h"

namespace convpool::cpu::depthwise::CONVPOOL_DEPTHWISE_ISA {
namespace {

using namespace convpool::cpu::simd::CONVPOOL_DEPTHWISE_ISA;


// ---- vector helpers that read or write `rem` < kLanes lanes when kPartial --------------------------

template <bool kPartial>
inline V ld(const float* p, int rem) {
  if constexpr (kPartial) return load_n(p, rem);
  else return load(p);
}

template <bool kPartial>
inline void st(float* p, V v, int rem) {
  if constexpr (kPartial) store_n(p, v, rem);
  else store(p, v);
}

// Adds the lanes of v (rem of them) to dst[0..rem) in double.
inline void add_to_double(double* dst, V v, int rem) {
  alignas(64) float lane[kLanes];
  store(lane, v);
  if (rem == kLanes) {
    for (int l = 0; l < kLanes; ++l) dst[l] += static_cast<double>(lane[l]);  // vectorizes
  } else {
    for (int l = 0; l < rem; ++l) dst[l] += static_cast<double>(lane[l]);
  }
}

// ---- correlation over channels_last rows: fprop, and stride-1 dgrad ------------------------------

// P output pixels [ow, ow + P) of the interior (every tap inside), accumulators in registers.
template <int P, bool kPartial>
inline void correlate_pixels_cl(const Correlation& g, const float* x_img, int64_t xs_h,
                                int64_t xs_w, float* y_row, int64_t ys_w, const float* wbase,
                                int64_t w_kh, int64_t w_kw, V bias, int64_t row0, int64_t ow,
                                int rem) {
  const int64_t step = g.stride_w * xs_w;
  V acc[P];
  for (int i = 0; i < P; ++i) acc[i] = bias;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = row0 + kh * g.step_h;
    if (ih < 0 || ih >= g.in_h) continue;
    const float* xr = x_img + ih * xs_h + (ow * g.stride_w + g.off_w) * xs_w;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const V wv = ld<kPartial>(wbase + kh * w_kh + kw * w_kw, rem);
      const float* xp = xr + kw * g.step_w * xs_w;
      for (int i = 0; i < P; ++i) acc[i] = fmadd(wv, ld<kPartial>(xp + i * step, rem), acc[i]);
    }
  }
  for (int i = 0; i < P; ++i) st<kPartial>(y_row + (ow + i) * ys_w, acc[i], rem);
}

// Calls f(kh, kw, ih, iw) for each tap of output pixel (row0's row, column ow) that lands inside
// the input: the border pixels' path.
template <typename F>
inline void for_each_tap_inside(const Correlation& g, int64_t row0, int64_t ow, F&& f) {
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = row0 + kh * g.step_h;
    if (ih < 0 || ih >= g.in_h) continue;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t iw = ow * g.stride_w + g.off_w + kw * g.step_w;
      if (iw >= 0 && iw < g.in_w) f(kh, kw, ih, iw);
    }
  }
}

// One border pixel: every tap checked.
template <bool kPartial>
inline void correlate_pixel_checked_cl(const Correlation& g, const float* x_img, int64_t xs_h,
                                       int64_t xs_w, float* y_px, const float* wbase, int64_t w_kh,
                                       int64_t w_kw, V bias, int64_t row0, int64_t ow, int rem) {
  V acc = bias;
  for_each_tap_inside(g, row0, ow, [&](int64_t kh, int64_t kw, int64_t ih, int64_t iw) {
    acc = fmadd(ld<kPartial>(wbase + kh * w_kh + kw * w_kw, rem),
                ld<kPartial>(x_img + ih * xs_h + iw * xs_w, rem), acc);
  });
  st<kPartial>(y_px, acc, rem);
}

// One output row o_h of one image, `channels` channels in vectors of kLanes (the last one
// partial): x_img is the image's first channel, tap (kh, kw)'s weights at wbase + kh * w_kh +
// kw * w_kw. The interior [lo, hi) (pixels whose taps all land inside the input) goes 8, 4, 2, 1
// pixels at a time with the accumulators in registers, every channel vector of a pixel block before
// the next block (its input stays in L1 and memory is read in order); border pixels check every tap.
inline void correlate_row_cl(const Correlation& g, const float* x_img, int64_t xs_h, int64_t xs_w,
                             float* y_row, int64_t ys_w, const float* wbase, int64_t w_kh,
                             int64_t w_kw, const float* bias_ptr, int64_t oh, int64_t channels,
                             Range inner) {
  const int64_t row0 = oh * g.stride_h + g.off_h;
  const int64_t full = channels / kLanes * kLanes;
  const int tail = static_cast<int>(channels - full);
  const auto bias_of = [&](auto partial, int64_t c0, int rem) {
    return bias_ptr ? ld<decltype(partial)::value>(bias_ptr + c0, rem) : zero();
  };
  const auto each_vector = [&](auto&& body) {
    for (int64_t c0 = 0; c0 < full; c0 += kLanes) body(std::false_type{}, c0, kLanes);
    if (tail) body(std::true_type{}, full, tail);
  };
  const auto border = [&](int64_t ow) {
    each_vector([&](auto partial, int64_t c0, int rem) {
      correlate_pixel_checked_cl<decltype(partial)::value>(
          g, x_img + c0, xs_h, xs_w, y_row + ow * ys_w + c0, wbase + c0, w_kh, w_kw,
          bias_of(partial, c0, rem), row0, ow, rem);
    });
  };
  int64_t ow = 0;
  for (; ow < inner.begin; ++ow) border(ow);
#define CONVPOOL_DW_PIXELS(P)                                                                  \
  for (; ow + P <= inner.end; ow += P)                                                          \
    each_vector([&](auto partial, int64_t c0, int rem) {                                       \
      correlate_pixels_cl<P, decltype(partial)::value>(g, x_img + c0, xs_h, xs_w, y_row + c0, \
                                                       ys_w, wbase + c0, w_kh, w_kw,          \
                                                       bias_of(partial, c0, rem), row0, ow, rem); \
    });
  if constexpr (kLanes == 16) {
    CONVPOOL_DW_PIXELS(8)
  }
  CONVPOOL_DW_PIXELS(4)
  CONVPOOL_DW_PIXELS(2)
  CONVPOOL_DW_PIXELS(1)
#undef CONVPOOL_DW_PIXELS
  for (; ow < g.out_w; ++ow) border(ow);
}

void correlate_cl(const Args& a, int64_t r0, int64_t r1) {
  const Correlation& g = a.geo;
  const Range inner = interior(g);
  const int64_t C = a.channels;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.out_h, oh = r % g.out_h;
    correlate_row_cl(g, a.x + n * a.xs.n, a.xs.h, a.xs.w, a.y + n * a.ys.n + oh * a.ys.h, a.ys.w,
                     a.w, g.kernel_w * C, C, a.bias, oh, C, inner);
  }
}

// ---- NCHW through channel-blocked tiles ------------------------------------------------------------
// kLanes channels of one image are packed as [row][column][lane] (what oneDNN calls nChw16c), the
// channels_last row kernels run on the tile, and each output row is unpacked to its planes. Tasks
// are (image, channel block, band of output rows); the tile holds only the band's input rows.

// Rows [lo, hi) of `rem` planes (plane l at src + l * s.c) into tile[row][column][lane]; unit-stride
// rows go kLanes x kLanes at a time through a register transpose.
inline void pack_rows(const float* src, Strides4 s, int64_t width, int64_t lo, int64_t hi, int rem,
                      float* tile) {
  for (int64_t h = lo; h < hi; ++h) {
    float* dst = tile + h * width * kLanes;
    const float* row = src + h * s.h;
    if (s.w != 1) {
      for (int l = 0; l < rem; ++l)
        for (int64_t w = 0; w < width; ++w) dst[w * kLanes + l] = row[l * s.c + w * s.w];
      continue;
    }
    for (int64_t w = 0; w < width; w += kLanes) {
      const int cols = static_cast<int>(std::min<int64_t>(kLanes, width - w));
      V r[kLanes];
      for (int l = 0; l < kLanes; ++l)
        r[l] = l >= rem ? zero() : cols == kLanes ? load(row + l * s.c + w) : load_n(row + l * s.c + w, cols);
      transpose(r);
      for (int j = 0; j < cols; ++j) store(dst + (w + j) * kLanes, r[j]);
    }
  }
}

// One tile row [column][lane] out to `rem` planes (plane l at dst + l * s.c, the row's start).
inline void unpack_row(const float* tile, int64_t width, int rem, float* dst, Strides4 s) {
  if (s.w != 1) {
    for (int l = 0; l < rem; ++l)
      for (int64_t w = 0; w < width; ++w) dst[l * s.c + w * s.w] = tile[w * kLanes + l];
    return;
  }
  for (int64_t w = 0; w < width; w += kLanes) {
    const int cols = static_cast<int>(std::min<int64_t>(kLanes, width - w));
    V r[kLanes];
    for (int j = 0; j < kLanes; ++j) r[j] = j < cols ? load(tile + (w + j) * kLanes) : zero();
    transpose(r);
    for (int l = 0; l < rem; ++l) {
      if (cols == kLanes) store(dst + l * s.c + w, r[l]);
      else store_n(dst + l * s.c + w, r[l], cols);
    }
  }
}

// Input rows [lo, hi) that output rows [o0, o1) of a correlation read.
inline Range rows_read(const Correlation& g, int64_t o0, int64_t o1) {
  const int64_t reach = (g.kernel_h - 1) * g.step_h;
  const int64_t lo = o0 * g.stride_h + g.off_h + std::min<int64_t>(0, reach);
  const int64_t hi = (o1 - 1) * g.stride_h + g.off_h + std::max<int64_t>(0, reach) + 1;
  return {std::max<int64_t>(0, lo), std::max<int64_t>(0, std::min(g.in_h, hi))};
}

void correlate_blocked(const Args& a, int64_t t0, int64_t t1) {
  const Correlation& g = a.geo;
  const Range inner = interior(g);
  const int64_t C = a.channels, blocks = (C + kLanes - 1) / kLanes;
  const int64_t bands = (g.out_h + a.band_rows - 1) / a.band_rows;
  // Not zero-filled: pack_rows writes every lane of the rows a band reads, and only those are read.
  const auto in_tile = tile_buffer(g.in_h * g.in_w * kLanes);
  const auto out_row = tile_buffer(g.out_w * kLanes);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t band = t % bands, cb = (t / bands) % blocks, n = t / (bands * blocks);
    const int64_t c0 = cb * kLanes, o0 = band * a.band_rows;
    const int64_t o1 = std::min(g.out_h, o0 + a.band_rows);
    const int rem = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
    const Range rows = rows_read(g, o0, o1);
    pack_rows(a.x + n * a.xs.n + c0 * a.xs.c, a.xs, g.in_w, rows.begin, rows.end, rem, in_tile.get());
    const float* bias = a.bias ? a.bias + c0 : nullptr;
    for (int64_t oh = o0; oh < o1; ++oh) {
      correlate_row_cl(g, in_tile.get(), g.in_w * kLanes, kLanes, out_row.get(), kLanes, a.w + c0,
                       g.kernel_w * C, C, bias, oh, rem, inner);
      unpack_row(out_row.get(), g.out_w, rem, a.y + n * a.ys.n + c0 * a.ys.c + oh * a.ys.h, a.ys);
    }
  }
}

// ---- correlation over unit-stride rows of (n, c) planes at stride 1: fprop and dgrad -------------

// Output columns [ow, ow + rem) of one row; every one of them has all its taps inside the input.
template <bool kPartial, int P>
inline void correlate_span_planes(const Args& a, const float* xplane, const float* wc, float bias,
                                  int64_t row0, int64_t ow, int rem, float* yrow) {
  const Correlation& g = a.geo;
  V acc[P];
  for (int i = 0; i < P; ++i) acc[i] = set1(bias);
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = row0 + kh * g.step_h;
    if (ih < 0 || ih >= g.in_h) continue;
    const float* xr = xplane + ih * a.xs.h + ow * g.stride_w + g.off_w;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const V wv = set1(wc[kh * g.kernel_w + kw]);
      const float* xp = xr + kw * g.step_w;
      for (int i = 0; i < P; ++i) acc[i] = fmadd(wv, ld<kPartial>(xp + i * kLanes, rem), acc[i]);
    }
  }
  for (int i = 0; i < P; ++i) st<kPartial>(yrow + ow + i * kLanes, acc[i], rem);
}

void correlate_planes(const Args& a, int64_t r0, int64_t r1) {
  constexpr int P = 4;
  const Correlation& g = a.geo;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const Range inner = interior(g);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t oh = r % g.out_h, c = (r / g.out_h) % a.channels, n = r / (g.out_h * a.channels);
    const float* wc = a.w + c * taps;
    const float bias = a.bias ? a.bias[c] : 0.0f;
    const float* xplane = a.x + n * a.xs.n + c * a.xs.c;
    float* yrow = a.y + n * a.ys.n + c * a.ys.c + oh * a.ys.h;
    const int64_t row0 = oh * g.stride_h + g.off_h;
    const auto pixel = [&](int64_t ow) {
      float acc = bias;
      for_each_tap_inside(g, row0, ow, [&](int64_t kh, int64_t kw, int64_t ih, int64_t iw) {
        acc = std::fma(wc[kh * g.kernel_w + kw], xplane[ih * a.xs.h + iw], acc);
      });
      yrow[ow] = acc;
    };
    int64_t ow = 0;
    for (; ow < inner.begin; ++ow) pixel(ow);
    for (; ow + P * kLanes <= inner.end; ow += P * kLanes)
      correlate_span_planes<false, P>(a, xplane, wc, bias, row0, ow, kLanes, yrow);
    for (; ow + kLanes <= inner.end; ow += kLanes)
      correlate_span_planes<false, 1>(a, xplane, wc, bias, row0, ow, kLanes, yrow);
    if (ow < inner.end) {
      correlate_span_planes<true, 1>(a, xplane, wc, bias, row0, ow,
                                     static_cast<int>(inner.end - ow), yrow);
      ow = inner.end;
    }
    for (; ow < g.out_w; ++ow) pixel(ow);
  }
}

// ---- small NCHW planes at stride 1 with input and output rows of one width --------------------------
// Then in[j + shift(tap)] is tap's input for output j of the flattened plane, so a plane is a few
// vectors and every tap one masked load per vector (lanes whose tap lands in padding read nothing).

struct FlatPlane {
  int64_t size, vectors;
  std::vector<int64_t> shift;  // [tap]
  std::vector<uint32_t> bits;  // [vector][tap]: lanes whose input is inside the plane
  std::vector<uint32_t> lanes; // [vector]: lanes inside the output plane
};

inline FlatPlane flat_plane(const Correlation& g) {
  FlatPlane f;
  const int64_t taps = g.kernel_h * g.kernel_w;
  f.size = g.out_h * g.out_w;
  f.vectors = (f.size + kLanes - 1) / kLanes;
  f.shift.resize(taps);
  f.bits.assign(f.vectors * taps, 0);
  f.lanes.assign(f.vectors, 0);
  for (int64_t kh = 0; kh < g.kernel_h; ++kh)
    for (int64_t kw = 0; kw < g.kernel_w; ++kw)
      f.shift[kh * g.kernel_w + kw] = (g.off_h + kh * g.step_h) * g.in_w + g.off_w + kw * g.step_w;
  for (int64_t j = 0; j < f.size; ++j) {
    const int64_t v = j / kLanes, lane = j % kLanes, oh = j / g.out_w, ow = j % g.out_w;
    f.lanes[v] |= 1u << lane;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = oh + g.off_h + kh * g.step_h;
      if (ih < 0 || ih >= g.in_h) continue;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t iw = ow + g.off_w + kw * g.step_w;
        if (iw >= 0 && iw < g.in_w) f.bits[v * taps + kh * g.kernel_w + kw] |= 1u << lane;
      }
    }
  }
  return f;
}

// Planes q = n * C + c in [q0, q1); weights [C][taps].
void correlate_flat(const Args& a, int64_t q0, int64_t q1) {
  const Correlation& g = a.geo;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const FlatPlane f = flat_plane(g);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / a.channels, c = q % a.channels;
    const float* xp = a.x + n * a.xs.n + c * a.xs.c;
    float* yp = a.y + n * a.ys.n + c * a.ys.c;
    const float* wc = a.w + c * taps;
    const V bias = set1(a.bias ? a.bias[c] : 0.0f);
    for (int64_t v = 0; v < f.vectors; ++v) {
      const int64_t j0 = v * kLanes;
      const uint32_t* bits = f.bits.data() + v * taps;
      V acc = bias;
      for (int64_t t = 0; t < taps; ++t)
        if (bits[t]) acc = fmadd(set1(wc[t]), load_bits(xp + j0 + f.shift[t], bits[t]), acc);
      if (j0 + kLanes <= f.size) store(yp + j0, acc);
      else store_n(yp + j0, acc, static_cast<int>(f.size - j0));
    }
  }
}

// Channels [c0, c1), each over the whole batch: per image and tap a float sum over the plane,
// images added in double.
void wgrad_flat(const Args& a, int64_t c0, int64_t c1) {
  const Correlation& g = a.geo;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const FlatPlane f = flat_plane(g);
  std::vector<double> total(taps);
  for (int64_t c = c0; c < c1; ++c) {
    std::fill(total.begin(), total.end(), 0.0);
    for (int64_t n = 0; n < a.p.batch; ++n) {
      const float* xp = a.x + n * a.xs.n + c * a.xs.c;
      const float* gp = a.go + n * a.gos.n + c * a.gos.c;
      for (int64_t t = 0; t < taps; ++t) {
        V acc0 = zero(), acc1 = zero();
        for (int64_t v = 0; v < f.vectors; ++v) {
          const uint32_t bits = f.bits[v * taps + t];
          if (!bits) continue;
          const int64_t j0 = v * kLanes;
          const V prod_in = load_bits(xp + j0 + f.shift[t], bits);
          const V grad = load_bits(gp + j0, f.lanes[v]);
          if (v & 1) acc1 = fmadd(grad, prod_in, acc1);
          else acc0 = fmadd(grad, prod_in, acc0);
        }
        total[t] += static_cast<double>(hsum(add(acc0, acc1)));
      }
    }
    float* gw = a.y + c * a.ys.n;
    for (int64_t t = 0; t < taps; ++t)
      gw[(t / g.kernel_w) * a.ys.h + (t % g.kernel_w) * a.ys.w] = static_cast<float>(total[t]);
  }
}

// ---- channels_last dgrad at any stride: a stride-1 correlation per phase ----------------------
// Input positions i = phase + stride * j of one phase are reached by the taps k = k0, k0 + m, ...
// (m = stride / gcd(stride, dilation)) from outputs o = j + (phase + pad - k0 * dilation) / stride
// - t * (m * dilation / stride): per phase of rows and of columns a stride-1 correlation over
// grad_output, written to every stride-th pixel. Phases no tap reaches get zeros.

struct Phase {
  int64_t first_tap, taps, tap_step;  // taps first_tap + t * tap_step, t < taps
  int64_t offset, out_step;           // output o = j + offset + t * out_step
};

inline Phase phase_of(int64_t phase, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  Phase f{0, 0, stride / std::gcd(stride, dilation), 0, 0};
  // k * dilation mod stride repeats with period tap_step: if no k below it fits, none does.
  for (int64_t k = 0; k < kernel && k < f.tap_step; ++k)
    if ((phase + pad - k * dilation) % stride == 0) {
      f.first_tap = k;
      f.taps = (kernel - k + f.tap_step - 1) / f.tap_step;
      break;
    }
  f.offset = (phase + pad - f.first_tap * dilation) / stride;  // exact (a multiple of stride)
  f.out_step = -(f.tap_step * dilation / stride);
  return f;
}

// The correlation that writes column phase `col_phase` of the input rows of one row phase.
inline Correlation phase_correlation(const Conv2dParams& p, const Phase& rows, const Phase& cols,
                                     int64_t col_phase) {
  const int64_t width = std::max<int64_t>(0, (p.in_width - col_phase + p.stride_w - 1) / p.stride_w);
  return {p.out_height, p.out_width, p.in_height, width, rows.taps, cols.taps,
          1, 1, rows.offset, cols.offset, rows.out_step, cols.out_step};
}

// The phases of a strided dgrad, worked out once per call.
struct StridedDgrad {
  const Conv2dParams& p;
  std::vector<Phase> rows, cols;    // [row phase], [column phase]
  std::vector<Correlation> geo;     // [row phase][column phase]
  std::vector<Range> inner;

  explicit StridedDgrad(const Conv2dParams& params) : p(params) {
    for (int64_t f = 0; f < p.stride_h; ++f)
      rows.push_back(phase_of(f, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h));
    for (int64_t f = 0; f < p.stride_w; ++f)
      cols.push_back(phase_of(f, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w));
    for (int64_t i = 0; i < p.stride_h; ++i)
      for (int64_t f = 0; f < p.stride_w; ++f) {
        geo.push_back(phase_correlation(p, rows[i], cols[f], f));
        inner.push_back(interior(geo.back()));
      }
  }

  // Input row ih of one image, `channels` channels: go_img / gos_h / gos_w read grad_output, the
  // row is written at y_row with pixel stride ys_w; tap (kh, kw)'s weights at w + (kh * kW + kw) * w_c.
  void row(const float* go_img, int64_t gos_h, int64_t gos_w, float* y_row, int64_t ys_w,
           const float* w, int64_t w_c, int64_t ih, int64_t channels) const {
    const int64_t i = ih % p.stride_h;
    for (int64_t f = 0; f < p.stride_w; ++f) {
      const Correlation& g = geo[i * p.stride_w + f];
      if (g.out_w == 0) continue;
      correlate_row_cl(g, go_img, gos_h, gos_w, y_row + f * ys_w, p.stride_w * ys_w,
                       w + (rows[i].first_tap * p.kernel_w + cols[f].first_tap) * w_c,
                       rows[i].tap_step * p.kernel_w * w_c, cols[f].tap_step * w_c, nullptr,
                       ih / p.stride_h, channels, inner[i * p.stride_w + f]);
    }
  }
};

void dgrad_strided_cl(const Args& a, int64_t r0, int64_t r1) {
  const StridedDgrad plan(a.p);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.p.in_height, ih = r % a.p.in_height;
    plan.row(a.x + n * a.xs.n, a.xs.h, a.xs.w, a.y + n * a.ys.n + ih * a.ys.h, a.ys.w, a.w,
             a.channels, ih, a.channels);
  }
}

// ---- grad_weight ------------------------------------------------------------------------------
// Per output row and tap the products are summed in float (four interleaved partial sums, combined
// in a fixed order); rows are added in double, as in the portable kernels.

// channels_last: output rows [r0, r1) into part[tap][C] (double). Rows go in groups of about 256
// products per sum (so small maps do not pay a double conversion per row and tap), each group's
// sum in float with four interleaved partial sums.
template <bool kPartial>
inline void wgrad_tap_cl(const Args& a, int64_t g0, int64_t g1, int64_t kh, const Columns& cols,
                         int64_t c0, int rem, double* dst) {
  const Conv2dParams& p = a.p;
  const int64_t gw_step = a.gos.w, x_step = p.stride_w * a.xs.w;
  V acc0 = zero(), acc1 = zero(), acc2 = zero(), acc3 = zero();
  for (int64_t r = g0; r < g1; ++r) {
    const int64_t n = r / p.out_height, oh = r % p.out_height;
    const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
    if (ih < 0 || ih >= p.in_height) continue;
    const float* g_row = a.go + n * a.gos.n + oh * a.gos.h + c0;
    const float* x_row = a.x + n * a.xs.n + ih * a.xs.h + cols.offset * a.xs.w + c0;
    int64_t ow = cols.begin;
    for (; ow + 4 <= cols.end; ow += 4) {
      acc0 = fmadd(ld<kPartial>(g_row + ow * gw_step, rem), ld<kPartial>(x_row + ow * x_step, rem), acc0);
      acc1 = fmadd(ld<kPartial>(g_row + (ow + 1) * gw_step, rem),
                   ld<kPartial>(x_row + (ow + 1) * x_step, rem), acc1);
      acc2 = fmadd(ld<kPartial>(g_row + (ow + 2) * gw_step, rem),
                   ld<kPartial>(x_row + (ow + 2) * x_step, rem), acc2);
      acc3 = fmadd(ld<kPartial>(g_row + (ow + 3) * gw_step, rem),
                   ld<kPartial>(x_row + (ow + 3) * x_step, rem), acc3);
    }
    for (; ow < cols.end; ++ow)
      acc0 = fmadd(ld<kPartial>(g_row + ow * gw_step, rem), ld<kPartial>(x_row + ow * x_step, rem), acc0);
  }
  add_to_double(dst, add(add(acc0, acc1), add(acc2, acc3)), rem);
}

// Channels [c_begin, c_end) (whole vectors but the last).
void wgrad_cl(const Args& a, int64_t r0, int64_t r1, int64_t c_begin, int64_t c_end, double* part) {
  const Conv2dParams& p = a.p;
  const int64_t C = a.channels;
  const int64_t group = std::max<int64_t>(1, 256 / std::max<int64_t>(1, p.out_width));
  for (int64_t g0 = r0; g0 < r1; g0 += group) {
    const int64_t g1 = std::min(r1, g0 + group);
    // Channel vector outermost: the group's rows of one vector stay in L1 across the taps.
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kLanes) {
      const int rem = static_cast<int>(std::min<int64_t>(kLanes, c_end - c0));
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const Columns cols = columns_for_tap(p, kw);
          if (cols.begin >= cols.end) continue;
          double* dst = part + (kh * p.kernel_w + kw) * C + c0;
          if (rem == kLanes) wgrad_tap_cl<false>(a, g0, g1, kh, cols, c0, rem, dst);
          else wgrad_tap_cl<true>(a, g0, g1, kh, cols, c0, rem, dst);
        }
      }
    }
  }
}


// NCHW dgrad at any stride through channel-blocked tiles: tasks (image, channel block); the block's
// grad_output planes are packed whole, each input row is the phase correlations of
// dgrad_strided_cl written into a tile row, then unpacked.
void dgrad_strided_blocked(const Args& a, int64_t t0, int64_t t1) {
  const Conv2dParams& p = a.p;
  const int64_t C = a.channels, blocks = (C + kLanes - 1) / kLanes;
  const StridedDgrad plan(p);
  const auto go_tile = tile_buffer(p.out_height * p.out_width * kLanes);
  const auto in_row = tile_buffer(p.in_width * kLanes);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t cb = t % blocks, n = t / blocks, c0 = cb * kLanes;
    const int rem = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
    pack_rows(a.x + n * a.xs.n + c0 * a.xs.c, a.xs, p.out_width, 0, p.out_height, rem, go_tile.get());
    for (int64_t ih = 0; ih < p.in_height; ++ih) {
      plan.row(go_tile.get(), p.out_width * kLanes, kLanes, in_row.get(), kLanes, a.w + c0, C, ih,
               rem);
      unpack_row(in_row.get(), p.in_width, rem, a.y + n * a.ys.n + c0 * a.ys.c + ih * a.ys.h, a.ys);
    }
  }
}

// NCHW grad_weight through channel-blocked tiles: channel blocks [b0, b1), each over the whole
// batch (images in order): the image's input and grad_output planes are packed and summed as
// channels_last rows into [taps][lanes] (double).
void wgrad_blocked(const Args& a, int64_t b0, int64_t b1) {
  const Conv2dParams& p = a.p;
  const int64_t C = a.channels, taps = p.kernel_h * p.kernel_w;
  const auto x_tile = tile_buffer(p.in_height * p.in_width * kLanes);
  const auto go_tile = tile_buffer(p.out_height * p.out_width * kLanes);
  std::vector<double> part(taps * kLanes);
  Args tile = a;
  tile.p.batch = 1;
  tile.channels = kLanes;
  tile.x = x_tile.get();
  tile.xs = {0, 1, p.in_width * kLanes, kLanes};
  tile.go = go_tile.get();
  tile.gos = {0, 1, p.out_width * kLanes, kLanes};
  for (int64_t cb = b0; cb < b1; ++cb) {
    const int64_t c0 = cb * kLanes;
    const int rem = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
    std::fill(part.begin(), part.end(), 0.0);
    for (int64_t n = 0; n < p.batch; ++n) {
      pack_rows(a.x + n * a.xs.n + c0 * a.xs.c, a.xs, p.in_width, 0, p.in_height, rem, x_tile.get());
      pack_rows(a.go + n * a.gos.n + c0 * a.gos.c, a.gos, p.out_width, 0, p.out_height, rem,
                go_tile.get());
      wgrad_cl(tile, 0, p.out_height, 0, rem, part.data());
    }
    for (int l = 0; l < rem; ++l)
      for (int64_t t = 0; t < taps; ++t)
        a.y[(c0 + l) * a.ys.n + (t / p.kernel_w) * a.ys.h + (t % p.kernel_w) * a.ys.w] =
            static_cast<float>(part[t * kLanes + l]);
  }
}

// (n, c) planes with unit-stride rows at stride 1: channels [c0, c1), each summed over the batch.
void wgrad_planes(const Args& a, int64_t c0, int64_t c1) {
  const Conv2dParams& p = a.p;
  const int64_t taps = p.kernel_h * p.kernel_w;
  std::vector<double> total(taps);
  for (int64_t c = c0; c < c1; ++c) {
    std::fill(total.begin(), total.end(), 0.0);
    for (int64_t n = 0; n < p.batch; ++n) {
      for (int64_t oh = 0; oh < p.out_height; ++oh) {
        const float* g_row = a.go + n * a.gos.n + c * a.gos.c + oh * a.gos.h;
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_height) continue;
          const float* x_row = a.x + n * a.xs.n + c * a.xs.c + ih * a.xs.h;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const Columns cols = columns_for_tap(p, kw);
            const float* src = x_row + cols.offset;
            V acc[4] = {zero(), zero(), zero(), zero()};
            int64_t ow = cols.begin;
            for (; ow + 4 * kLanes <= cols.end; ow += 4 * kLanes)
              for (int i = 0; i < 4; ++i)
                acc[i] = fmadd(load(g_row + ow + i * kLanes), load(src + ow + i * kLanes), acc[i]);
            for (; ow + kLanes <= cols.end; ow += kLanes)
              acc[0] = fmadd(load(g_row + ow), load(src + ow), acc[0]);
            if (ow < cols.end) {
              const int rem = static_cast<int>(cols.end - ow);
              acc[1] = fmadd(load_n(g_row + ow, rem), load_n(src + ow, rem), acc[1]);
            }
            const float row_sum = hsum(add(add(acc[0], acc[1]), add(acc[2], acc[3])));
            total[kh * p.kernel_w + kw] += static_cast<double>(row_sum);
          }
        }
      }
    }
    float* gw = a.y + c * a.ys.n;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh)
      for (int64_t kw = 0; kw < p.kernel_w; ++kw)
        gw[kh * a.ys.h + kw * a.ys.w] = static_cast<float>(total[kh * p.kernel_w + kw]);
  }
}

}  // namespace

// Declared extern in kernels.h, so defined here with external linkage.
const Kernels kKernels = {kLanes, &correlate_cl,     &correlate_planes, &correlate_blocked, &correlate_flat,
                          &wgrad_flat,       &dgrad_strided_cl, &dgrad_strided_blocked,
                          &wgrad_cl,         &wgrad_planes,     &wgrad_blocked};

}  // namespace convpool::cpu::depthwise::CONVPOOL_DEPTHWISE_ISA
