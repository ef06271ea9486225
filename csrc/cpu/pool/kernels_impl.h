// The max_pool2d vector kernels for float, written once over the vector vocabulary of
// simd/<isa>.h (V, M, I, kLanes, load, greater_or_nan, select, ...): avx2.cpp and avx512.cpp each
// compile this file once, for their ISA, into namespace pool::<isa>, and export its Kernels table
// (kernels.h). The including file defines CONVPOOL_POOL_ISA (avx2, avx512) and sets the ISA's
// `#pragma GCC target` first.
//
// PyTorch's rules, kept bit for bit: a window's first in-bounds element starts its maximum (so an
// all -inf window reports it), an element replaces the maximum if it is greater or NaN (the first
// of tied maxima wins, the last NaN wins), padding is never selected. Indices live in int32 lanes
// (the dispatcher ensures a plane has fewer than 2^31 elements) and are stored as int64.
#pragma once

#ifndef CONVPOOL_POOL_ISA
#error "kernels_impl.h is compiled by pool/avx2.cpp and pool/avx512.cpp only"
#endif

#include "kernels.h"

namespace convpool::cpu::pool::CONVPOOL_POOL_ISA {
namespace {

using namespace convpool::cpu::simd::CONVPOOL_POOL_ISA;

constexpr int kMaxBlocks = 4;  // output-row vectors per chunk (rows_chunk)
// Channel vectors of a channels_last pixel kept in registers with their indices: 128 channels
// with AVX-512's 32 registers, 32 with AVX2's 16.
constexpr int kMaxPixelBlocks = kLanes == 16 ? 8 : 4;

// Plain loops, not std::fill: a standard template instantiated here would be a weak symbol built
// for this ISA, which the linker may pick for generic callers too.
inline void fill(float* begin, float* end, float value) {
  for (float* q = begin; q < end; ++q) *q = value;
}
inline void fill(int64_t* begin, int64_t* end, int64_t value) {
  for (int64_t* q = begin; q < end; ++q) *q = value;
}

// Masked loads only where lanes are missing: on AMD CPUs (Zen 5) they are far slower than plain
// ones on data that is not in cache (8x64x112^2 pooling ran 2-3x slower with them).
inline V load_lanes(const float* p, M m) { return all_of(m) ? load(p) : load_mask(p, m); }

// The first n lanes of v to dst (n <= kLanes). A short tail goes through a lane buffer: masked
// stores, even for a row's last partial vector, cost more than a scalar copy there.
inline void store_prefix(float* dst, V v, int64_t n) {
  if (n >= kLanes) {
    store(dst, v);
    return;
  }
  alignas(64) float lanes[kLanes];
  store(lanes, v);
  for (int64_t j = 0; j < n; ++j) dst[j] = lanes[j];
}

inline void store_index_prefix(int64_t* dst, I v, int64_t n) {
  if (n >= kLanes) {
    store_int64(dst, v);
    return;
  }
  alignas(64) int32_t lanes[kLanes];
  istore(lanes, v);
  for (int64_t j = 0; j < n; ++j) dst[j] = lanes[j];
}

// ---- forward, NCHW: output rows, columns in lanes ---------------------------------------------------

// Lane j (for j in [a, b)) = src[j * step]; the other lanes are zero or, when the caller says all
// kLanes * step elements from src are readable (`span_readable`), garbage for the caller to mask.
inline V load_strided(const float* src, int64_t step, int64_t a, int64_t b, bool span_readable,
                      I gather_offsets) {
  if (step == 1) return span_readable ? load(src) : load_lanes(src, mask_range(a, b));
  if (step == 2) {
    // Elements [2a, 2b - 1) in two loads, then the even ones: a deinterleave beats a gather.
    const V lo = span_readable ? load(src) : load_lanes(src, mask_range(2 * a, 2 * b - 1));
    const V hi = span_readable ? load(src + kLanes)
                               : load_lanes(src + kLanes, mask_range(2 * a - kLanes, 2 * b - 1 - kLanes));
    return even_lanes(lo, hi);
  }
  return gather(src, gather_offsets, mask_range(a, b));
}

// Output columns [ow0, ow0 + kLanes * kBlocks) of output row oh of one plane, the maxima in
// registers across every tap of the windows and stored once. cols[kw]: the output columns whose
// tap kw lands inside the input row (columns_hitting).
template <bool kIndices, int kBlocks>
void rows_chunk(const Pool2dParams& p, const float* plane, const Strides4& is, int64_t oh,
                int64_t ow0, const Range* cols, float* out_row, int64_t* index_row) {
  const int64_t step = p.stride_w * is.w;
  const I gather_offsets = imul(iota(), iset1(static_cast<int32_t>(step)));
  const I lane_index = imul(iota(), iset1(static_cast<int32_t>(p.stride_w)));
  V best[kBlocks];
  I best_index[kBlocks];
  M seen[kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    best[b] = set1(-__builtin_inff());
    best_index[b] = iset1(static_cast<int32_t>(kNoInputIndex));
    seen[b] = mask_none();
  }
  const int64_t h0 = oh * p.stride_h - p.pad_h;
  const Range th = taps_inside(h0, p.kernel_h, p.dilation_h, p.in_height);
  for (int64_t kh = th.begin; kh < th.end; ++kh) {
    const int64_t ih = h0 + kh * p.dilation_h;
    const float* row = plane + ih * is.h;
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t offset = kw * p.dilation_w - p.pad_w;  // iw = ow * stride_w + offset
      for (int b = 0; b < kBlocks; ++b) {
        const int64_t j0 = ow0 + b * kLanes;
        const int64_t a = std::max<int64_t>(cols[kw].begin - j0, 0);
        const int64_t e = std::min<int64_t>(cols[kw].end - j0, kLanes);
        if (a >= e) continue;
        // Edge blocks still load whole vectors when they stay inside the row.
        const int64_t start = (j0 * p.stride_w + offset) * is.w;
        const bool span_readable = is.w == 1 && start >= 0 && start + kLanes * step <= p.in_width;
        const V v = load_strided(row + start, step, a, e, span_readable, gather_offsets);
        const M active = mask_range(a, e);
        if constexpr (kIndices) {
          // A window's first element always becomes its maximum (even -inf): PyTorch's index rule.
          const M take = mask_or(mask_and(greater_or_nan(v, best[b]), active), mask_andnot(active, seen[b]));
          seen[b] = mask_or(seen[b], active);
          best[b] = select(take, best[b], v);
          const I here = iadd(iset1(static_cast<int32_t>(ih * p.in_width + j0 * p.stride_w + offset)), lane_index);
          best_index[b] = select(take, best_index[b], here);
        } else {
          best[b] = select(mask_and(greater_or_nan(v, best[b]), active), best[b], v);
        }
      }
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    const int64_t j0 = ow0 + b * kLanes;
    store_prefix(out_row + j0, best[b], p.out_width - j0);
    if constexpr (kIndices) store_index_prefix(index_row + j0, best_index[b], p.out_width - j0);
  }
}

template <bool kIndices>
void forward_rows_t(const Forward& f, int64_t r0, int64_t r1) {
  const Pool2dParams& p = f.p;
  const std::unique_ptr<Range[]> cols(new Range[p.kernel_w]);
  for (int64_t kw = 0; kw < p.kernel_w; ++kw) cols[kw] = columns_hitting(p, kw);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t oh = r % p.out_height;
    const int64_t c = (r / p.out_height) % p.channels;
    const int64_t n = r / (p.out_height * p.channels);
    const float* plane = f.in + n * f.is.n + c * f.is.c;
    float* out_row = f.out + n * f.vs.n + c * f.vs.c + oh * f.vs.h;
    int64_t* index_row = kIndices ? f.idx + n * f.xs.n + c * f.xs.c + oh * f.xs.h : nullptr;
    for (int64_t ow0 = 0; ow0 < p.out_width; ow0 += kLanes * kMaxBlocks) {
      const int64_t blocks = std::min<int64_t>(kMaxBlocks, (p.out_width - ow0 + kLanes - 1) / kLanes);
      switch (blocks) {
        case 4: rows_chunk<kIndices, 4>(p, plane, f.is, oh, ow0, cols.get(), out_row, index_row); break;
        case 3: rows_chunk<kIndices, 3>(p, plane, f.is, oh, ow0, cols.get(), out_row, index_row); break;
        case 2: rows_chunk<kIndices, 2>(p, plane, f.is, oh, ow0, cols.get(), out_row, index_row); break;
        default: rows_chunk<kIndices, 1>(p, plane, f.is, oh, ow0, cols.get(), out_row, index_row);
      }
    }
  }
}

void forward_rows(const Forward& f, int64_t r0, int64_t r1) {
  if (f.idx) {
    forward_rows_t<true>(f, r0, r1);
  } else {
    forward_rows_t<false>(f, r0, r1);
  }
}

// ---- forward, channels_last: one output pixel, channels in lanes ------------------------------------

// Channels [0, channels) (at most kLanes * kBlocks) of one output pixel whose window is not
// empty, in registers across its taps; `image` and the outputs point at channel 0 of this image /
// pixel; channels are unit-stride.
template <bool kIndices, int kBlocks>
void pixel_chunk(const Pool2dParams& p, const float* image, const Strides4& is, int64_t h0,
                 int64_t w0, Range th, Range tw, float* out_pixel, int64_t* index_pixel) {
  M active[kBlocks];
  V best[kBlocks];
  for (int b = 0; b < kBlocks; ++b) active[b] = mask_range(0, p.channels - b * kLanes);
  // The window's first element starts every channel's maximum (PyTorch's index rule).
  const int64_t ih0 = h0 + th.begin * p.dilation_h, iw0 = w0 + tw.begin * p.dilation_w;
  const float* first = image + ih0 * is.h + iw0 * is.w;
  for (int b = 0; b < kBlocks; ++b) best[b] = load_lanes(first + b * kLanes, active[b]);
  I best_index[kBlocks];
  if constexpr (kIndices)
    for (int b = 0; b < kBlocks; ++b) best_index[b] = iset1(static_cast<int32_t>(ih0 * p.in_width + iw0));
  for (int64_t kh = th.begin; kh < th.end; ++kh) {
    const int64_t ih = h0 + kh * p.dilation_h;
    for (int64_t kw = kh == th.begin ? tw.begin + 1 : tw.begin; kw < tw.end; ++kw) {
      const int64_t iw = w0 + kw * p.dilation_w;
      const float* src = image + ih * is.h + iw * is.w;
      const I here = iset1(static_cast<int32_t>(ih * p.in_width + iw));
      for (int b = 0; b < kBlocks; ++b) {
        const V v = load_lanes(src + b * kLanes, active[b]);
        const M take = mask_and(greater_or_nan(v, best[b]), active[b]);
        best[b] = select(take, best[b], v);
        if constexpr (kIndices) best_index[b] = select(take, best_index[b], here);
      }
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    store_prefix(out_pixel + b * kLanes, best[b], p.channels - b * kLanes);
    if constexpr (kIndices) store_index_prefix(index_pixel + b * kLanes, best_index[b], p.channels - b * kLanes);
  }
}

// A pixel with more channels than the registers hold: tap by tap, each streaming over all
// channels, with the maxima in L1 buffers (`best`, `best_index`: channels rounded up to kLanes).
// Chunks of registers revisiting every tap once per chunk ran 2-3x slower from 4 chunks on
// (AVX-512, 8x256x56^2 channels_last, 2x2/2; likely the prefetchers losing the pattern).
template <bool kIndices>
void pixel_wide(const Pool2dParams& p, const float* image, const Strides4& is, int64_t h0,
                int64_t w0, Range th, Range tw, float* out_pixel, int64_t* index_pixel,
                float* best, int32_t* best_index) {
  const int64_t channels = p.channels;
  const int64_t ih0 = h0 + th.begin * p.dilation_h, iw0 = w0 + tw.begin * p.dilation_w;
  const float* first = image + ih0 * is.h + iw0 * is.w;
  const I first_index = iset1(static_cast<int32_t>(ih0 * p.in_width + iw0));
  for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
    store(best + c0, load_lanes(first + c0, mask_range(0, channels - c0)));
    if constexpr (kIndices) istore(best_index + c0, first_index);
  }
  for (int64_t kh = th.begin; kh < th.end; ++kh) {
    const int64_t ih = h0 + kh * p.dilation_h;
    for (int64_t kw = kh == th.begin ? tw.begin + 1 : tw.begin; kw < tw.end; ++kw) {
      const int64_t iw = w0 + kw * p.dilation_w;
      const float* src = image + ih * is.h + iw * is.w;
      const I here = iset1(static_cast<int32_t>(ih * p.in_width + iw));
      for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
        const M active = mask_range(0, channels - c0);
        const V v = load_lanes(src + c0, active);
        const V b = load(best + c0);
        const M take = mask_and(greater_or_nan(v, b), active);
        store(best + c0, select(take, b, v));
        if constexpr (kIndices) istore(best_index + c0, select(take, iload(best_index + c0), here));
      }
    }
  }
  for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
    store_prefix(out_pixel + c0, load(best + c0), channels - c0);
    if constexpr (kIndices) store_index_prefix(index_pixel + c0, iload(best_index + c0), channels - c0);
  }
}

template <bool kIndices>
void forward_channels_last_t(const Forward& f, int64_t q0, int64_t q1) {
  const Pool2dParams& p = f.p;
  const bool wide = p.channels > kLanes * kMaxPixelBlocks;  // see pixel_wide
  const int64_t padded = wide ? (p.channels + kLanes - 1) / kLanes * kLanes : 0;
  std::unique_ptr<float[]> best(wide ? new float[padded] : nullptr);
  std::unique_ptr<int32_t[]> best_index(wide && kIndices ? new int32_t[padded] : nullptr);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t ow = q % p.out_width;
    const int64_t oh = (q / p.out_width) % p.out_height;
    const int64_t n = q / (p.out_width * p.out_height);
    const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
    const Range th = taps_inside(h0, p.kernel_h, p.dilation_h, p.in_height);
    const Range tw = taps_inside(w0, p.kernel_w, p.dilation_w, p.in_width);
    float* out_pixel = f.out + n * f.vs.n + oh * f.vs.h + ow * f.vs.w;
    int64_t* index_pixel = kIndices ? f.idx + n * f.xs.n + oh * f.xs.h + ow * f.xs.w : nullptr;
    if (th.begin == th.end || tw.begin == tw.end) {  // only padding: -inf, no index
      fill(out_pixel, out_pixel + p.channels, -__builtin_inff());
      if (kIndices) fill(index_pixel, index_pixel + p.channels, kNoInputIndex);
      continue;
    }
    const float* image = f.in + n * f.is.n;
    if (wide) {
      pixel_wide<kIndices>(p, image, f.is, h0, w0, th, tw, out_pixel, index_pixel, best.get(),
                           best_index.get());
      continue;
    }
    // All channel vectors in registers at once (SqueezeNet pool1's 96 channels as 4 + 2 vectors
    // walked every tap twice and ran 1.35x slower, AVX-512, 1 thread).
    switch ((p.channels + kLanes - 1) / kLanes) {
#define CONVPOOL_POOL_PIXEL(B)                                                                \
  case B:                                                                                     \
    if constexpr (B <= kMaxPixelBlocks)                                                       \
      pixel_chunk<kIndices, B>(p, image, f.is, h0, w0, th, tw, out_pixel, index_pixel);       \
    break;
      CONVPOOL_POOL_PIXEL(8)
      CONVPOOL_POOL_PIXEL(7)
      CONVPOOL_POOL_PIXEL(6)
      CONVPOOL_POOL_PIXEL(5)
      CONVPOOL_POOL_PIXEL(4)
      CONVPOOL_POOL_PIXEL(3)
      CONVPOOL_POOL_PIXEL(2)
#undef CONVPOOL_POOL_PIXEL
      default: pixel_chunk<kIndices, 1>(p, image, f.is, h0, w0, th, tw, out_pixel, index_pixel);
    }
  }
}

void forward_channels_last(const Forward& f, int64_t q0, int64_t q1) {
  if (f.idx) {
    forward_channels_last_t<true>(f, q0, q1);
  } else {
    forward_channels_last_t<false>(f, q0, q1);
  }
}

// ---- backward, NCHW: a plane per task, zeroed and scattered into while it is in cache ---------------

// The indices of a row are range-checked kLanes at a time (one vector compare instead of a
// compare and branch per element); then a scalar scatter in output order (the sum order of
// PyTorch's kernel, so the results are its bits).
bool backward_planes(const Backward& a, int64_t q0, int64_t q1) {
  const Pool2dParams& p = a.p;
  const int64_t plane_size = p.in_height * p.in_width;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / p.channels, c = q % p.channels;
    float* plane = a.gi + n * a.is.n + c * a.is.c;
    fill(plane, plane + plane_size, 0.0f);
    for (int64_t oh = 0; oh < p.out_height; ++oh) {
      const int64_t* index_row = a.idx + n * a.xs.n + c * a.xs.c + oh * a.xs.h;
      const float* grad_row = a.go + n * a.gs.n + c * a.gs.c + oh * a.gs.h;
      for (int64_t ow0 = 0; ow0 < p.out_width; ow0 += kLanes) {
        const int count = static_cast<int>(std::min<int64_t>(kLanes, p.out_width - ow0));
        M bad = mask_none();
        load_index(index_row + ow0, count, plane_size, bad);
        if (any_of(bad)) return false;
        for (int j = 0; j < count; ++j) {
          const int64_t index = index_row[ow0 + j];
          if (index >= 0) plane[index] += grad_row[ow0 + j];
        }
      }
    }
  }
  return true;
}

// ---- backward, channels_last: bands of grad_input rows, channels in lanes ---------------------------

// A task owns rows [r0, r1) of one image's grad_input and visits, in output order, every output
// pixel whose window reaches them. The gradient of channel vector (pixel, c0) can only land on
// one of its window's taps, so each in-band tap's row is updated with a masked add where the
// index names that tap: unit-stride loads and stores along channels instead of a scatter, each
// grad_input element summed in output order (PyTorch's order, so its bits). A lane whose index
// (other than -1) names none of its window's taps, or lies outside the plane, makes the task
// return false: the dispatcher reruns the portable scatter, which sums such indices or raises.
// Rows are zeroed just before the first output row that reaches them, so they are in cache.
bool backward_channels_last(const Backward& a, int64_t t0, int64_t t1) {
  const Pool2dParams& p = a.p;
  const int64_t C = p.channels, plane_size = p.in_height * p.in_width;
  const int64_t bands = (p.in_height + a.band_rows - 1) / a.band_rows;
  const int64_t row_floats = p.in_width * C;  // dense channels_last rows
  const I minus_one = iset1(static_cast<int32_t>(kNoInputIndex));
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / bands;
    const int64_t r0 = (t % bands) * a.band_rows, r1 = std::min(p.in_height, r0 + a.band_rows);
    float* image = a.gi + n * a.is.n;
    int64_t zeroed = r0;  // rows [r0, zeroed) are zero
    const Range rows = rows_reaching(p, r0, r1);
    for (int64_t oh = rows.begin; oh < rows.end; ++oh) {
      const int64_t h0 = oh * p.stride_h - p.pad_h;
      const Range th = taps_inside(h0, p.kernel_h, p.dilation_h, p.in_height);
      if (th.begin < th.end) {
        const int64_t last = std::min(r1 - 1, h0 + (th.end - 1) * p.dilation_h);
        if (last >= zeroed) {
          fill(image + zeroed * row_floats, image + (last + 1) * row_floats, 0.0f);
          zeroed = last + 1;
        }
      }
      // One channel vector at a time along the output row, so the taps' grad_input vectors stay
      // in L1 between neighbouring windows (3 rows of all channels of ResNet's stem are 86 KB).
      for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
        for (int64_t ow = 0; ow < p.out_width; ++ow) {
          const int64_t w0 = ow * p.stride_w - p.pad_w;
          const Range tw = taps_inside(w0, p.kernel_w, p.dilation_w, p.in_width);
          const int64_t* pixel_index = a.idx + n * a.xs.n + oh * a.xs.h + ow * a.xs.w;
          const float* pixel_grad = a.go + n * a.gs.n + oh * a.gs.h + ow * a.gs.w;
          const int count = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
          const M lanes = mask_range(0, count);
          M bad = mask_none();
          const I index = load_index(pixel_index + c0, count, plane_size, bad);
          const V g = count == kLanes ? load(pixel_grad + c0) : load_n(pixel_grad + c0, count);
          M hit = ieq(index, minus_one);
          for (int64_t kh = th.begin; kh < th.end; ++kh) {
            const int64_t ih = h0 + kh * p.dilation_h;
            const bool in_band = ih >= r0 && ih < r1;
            for (int64_t kw = tw.begin; kw < tw.end; ++kw) {
              const int64_t iw = w0 + kw * p.dilation_w;
              const M here = mask_and(ieq(index, iset1(static_cast<int32_t>(ih * p.in_width + iw))), lanes);
              hit = mask_or(hit, here);
              if (!in_band) continue;
              float* dst = image + ih * row_floats + iw * C + c0;
              if (count == kLanes) {
                store(dst, mask_add(load(dst), here, g));
              } else {
                store_n(dst, mask_add(load_n(dst, count), here, g), count);
              }
            }
          }
          if (any_of(mask_or(bad, mask_andnot(lanes, hit)))) return false;
        }
      }
    }
    if (zeroed < r1) fill(image + zeroed * row_floats, image + r1 * row_floats, 0.0f);
  }
  return true;
}

}  // namespace

const Kernels kKernels = {kLanes, kLanes * kMaxPixelBlocks, forward_rows, forward_channels_last,
                          backward_planes, backward_channels_last};

}  // namespace convpool::cpu::pool::CONVPOOL_POOL_ISA
