// The AVX-512F max_pool2d forward kernels for float (max_pool2d_kernels.h), apart from the
// portable and AVX2 ones of max_pool2d.cpp: 16 lanes, outputs kept in registers across all taps
// of a window (up to 4 vectors of output columns, or 8 of a pixel's channels, at a time, so as
// many independent compare/blend chains are in flight) and stored once; and the backward's
// vector index check. The library is built for baseline x86-64: each function carries
// target("avx512f") and runs only where the registry found AVX-512F.
#include "max_pool2d_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>

#define CONVPOOL_AVX512 __attribute__((target("avx512f")))

namespace convpool::cpu::pool_avx512 {
namespace {

using pool::columns_hitting;
using pool::forward_operands;

constexpr int kMaxBlocks = 4;  // output-row vectors per chunk (rows_chunk)

// Mask of lanes [begin, end), clipped to [0, 16).
CONVPOOL_AVX512 inline __mmask16 lane_mask(int64_t begin, int64_t end) {
  begin = std::max<int64_t>(begin, 0);
  end = std::min<int64_t>(end, kLanes);
  return end <= begin ? 0 : static_cast<__mmask16>(((1u << (end - begin)) - 1u) << begin);
}

// Masked loads and stores only where lanes are missing: on this AMD CPU (Zen 5) they are far
// slower than plain ones on data that is not in cache (8x64x112^2 pooling ran 2-3x slower), and
// masked stores even for a row's last partial vector cost more than a scalar copy.
CONVPOOL_AVX512 inline __m512 load(__mmask16 mask, const float* src) {
  return mask == 0xFFFF ? _mm512_loadu_ps(src) : _mm512_maskz_loadu_ps(mask, src);
}
CONVPOOL_AVX512 inline void store(float* dst, __mmask16 mask, __m512 v) {
  if (mask == 0xFFFF) {
    _mm512_storeu_ps(dst, v);
  } else {  // a prefix of the lanes (a row's or a pixel's tail)
    alignas(64) float lanes[kLanes];
    _mm512_store_ps(lanes, v);
    for (int j = 0; j < kLanes && (mask >> j & 1); ++j) dst[j] = lanes[j];
  }
}

// The lanes of `active` where v replaces best: greater, or NaN (PyTorch's rule).
CONVPOOL_AVX512 inline __mmask16 replaces(__m512 v, __m512 best, __mmask16 active) {
  return _mm512_mask_cmp_ps_mask(active, v, best, _CMP_GT_OQ) |
         _mm512_mask_cmp_ps_mask(active, v, v, _CMP_UNORD_Q);
}

// Stores 16 int32 lanes as int64 at dst (lanes of `mask`).
CONVPOOL_AVX512 inline void store_indices(int64_t* dst, __mmask16 mask, __m512i index) {
  // The maskz forms: GCC 12 warns about the plain ones' undefined pass-through operand.
  const __m512i lo = _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xFF, index, 0));
  const __m512i hi = _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xFF, index, 1));
  if (mask == 0xFFFF) {
    _mm512_storeu_si512(dst, lo);
    _mm512_storeu_si512(dst + 8, hi);
  } else {  // a prefix of the lanes, as in store()
    alignas(64) int64_t lanes[kLanes];
    _mm512_store_si512(lanes, lo);
    _mm512_store_si512(lanes + 8, hi);
    for (int j = 0; j < kLanes && (mask >> j & 1); ++j) dst[j] = lanes[j];
  }
}

// Lane j (for j in [a, b)) = src[j * step]; the other lanes are zero or, when the caller says all
// 16 * step elements from src are readable (`span_readable`), garbage for the caller to mask.
CONVPOOL_AVX512 inline __m512 load_lanes(const float* src, int64_t step, int64_t a, int64_t b,
                                        bool span_readable, __m512i gather_offsets) {
  const __mmask16 all = 0xFFFF;
  if (step == 1) return load(span_readable ? all : lane_mask(a, b), src);
  if (step == 2) {
    // Elements [2a, 2b - 1) in two loads, then the even ones: a deinterleave beats a gather.
    const __m512 lo = load(span_readable ? all : lane_mask(2 * a, 2 * b - 1), src);
    const __m512 hi = load(span_readable ? all : lane_mask(2 * a - kLanes, 2 * b - 1 - kLanes), src + kLanes);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(lo, even, hi);
  }
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lane_mask(a, b), gather_offsets, src, 4);
}


// Output columns [ow0, ow0 + 16 * kBlocks) of output row oh of one plane. cols[kw]: the output
// columns whose tap kw lands inside the input row (columns_hitting).
template <bool kIndices, int kBlocks>
CONVPOOL_AVX512 void rows_chunk(const Pool2dParams& p, const float* plane, const Strides4& is,
                                int64_t oh, int64_t ow0, const Range* cols, float* out_row,
                                int64_t* index_row) {
  const int64_t step = p.stride_w * is.w;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i gather_offsets = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(step)));
  const __m512i lane_index = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(p.stride_w)));
  __m512 best[kBlocks];
  __m512i best_index[kBlocks];
  __mmask16 seen[kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    best[b] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    best_index[b] = _mm512_set1_epi32(static_cast<int32_t>(kNoInputIndex));
    seen[b] = 0;
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
        const __m512 v = load_lanes(row + start, step, a, e, span_readable, gather_offsets);
        const __mmask16 active = lane_mask(a, e);
        if constexpr (kIndices) {
          // A window's first element always becomes its maximum (even -inf): PyTorch's index rule.
          const __mmask16 take = replaces(v, best[b], active) | (active & ~seen[b]);
          seen[b] |= active;
          best[b] = _mm512_mask_mov_ps(best[b], take, v);
          const __m512i here = _mm512_add_epi32(
              _mm512_set1_epi32(static_cast<int32_t>(ih * p.in_width + j0 * p.stride_w + offset)),
              lane_index);
          best_index[b] = _mm512_mask_mov_epi32(best_index[b], take, here);
        } else {
          best[b] = _mm512_mask_mov_ps(best[b], replaces(v, best[b], active), v);
        }
      }
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    const int64_t j0 = ow0 + b * kLanes;
    const __mmask16 lanes = lane_mask(0, p.out_width - j0);
    store(out_row + j0, lanes, best[b]);
    if constexpr (kIndices) store_indices(index_row + j0, lanes, best_index[b]);
  }
}

template <bool kIndices>
void forward_rows_t(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                  at::Tensor* indices) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<float>(input, values, indices);
  std::vector<Range> cols(p.kernel_w);
  for (int64_t kw = 0; kw < p.kernel_w; ++kw) cols[kw] = columns_hitting(p, kw);
  const int64_t rows = p.batch * p.channels * p.out_height;
  const int64_t work_per_row = std::max<int64_t>(1, p.out_width * p.kernel_h * p.kernel_w);
  at::parallel_for(0, rows, grain_for(work_per_row), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % p.out_height;
      const int64_t c = (r / p.out_height) % p.channels;
      const int64_t n = r / (p.out_height * p.channels);
      const float* plane = in + n * is.n + c * is.c;
      float* out_row = out + n * vs.n + c * vs.c + oh * vs.h;
      int64_t* index_row = kIndices ? idx + n * xs.n + c * xs.c + oh * xs.h : nullptr;
      for (int64_t ow0 = 0; ow0 < p.out_width; ow0 += kLanes * kMaxBlocks) {
        const int64_t blocks = std::min<int64_t>(kMaxBlocks, (p.out_width - ow0 + kLanes - 1) / kLanes);
        switch (blocks) {
          case 4: rows_chunk<kIndices, 4>(p, plane, is, oh, ow0, cols.data(), out_row, index_row); break;
          case 3: rows_chunk<kIndices, 3>(p, plane, is, oh, ow0, cols.data(), out_row, index_row); break;
          case 2: rows_chunk<kIndices, 2>(p, plane, is, oh, ow0, cols.data(), out_row, index_row); break;
          default: rows_chunk<kIndices, 1>(p, plane, is, oh, ow0, cols.data(), out_row, index_row);
        }
      }
    }
  });
}

// Channels [c0, c0 + 16 * kBlocks) ∩ [0, channels) of one output pixel whose window is not empty;
// `image` and the outputs point at channel 0 of this image / pixel; channels are unit-stride.
template <bool kIndices, int kBlocks>
CONVPOOL_AVX512 void pixel_chunk(const Pool2dParams& p, const float* image, const Strides4& is,
                                 int64_t h0, int64_t w0, Range th, Range tw, int64_t c0,
                                 float* out_pixel, int64_t* index_pixel) {
  __mmask16 active[kBlocks];
  __m512 best[kBlocks];
  for (int b = 0; b < kBlocks; ++b) active[b] = lane_mask(0, p.channels - c0 - b * kLanes);
  // The window's first element starts every channel's maximum (PyTorch's index rule).
  const int64_t ih0 = h0 + th.begin * p.dilation_h, iw0 = w0 + tw.begin * p.dilation_w;
  const float* first = image + ih0 * is.h + iw0 * is.w + c0;
  for (int b = 0; b < kBlocks; ++b) best[b] = load(active[b], first + b * kLanes);
  __m512i best_index[kBlocks];
  if constexpr (kIndices)
    for (int b = 0; b < kBlocks; ++b)
      best_index[b] = _mm512_set1_epi32(static_cast<int32_t>(ih0 * p.in_width + iw0));
  for (int64_t kh = th.begin; kh < th.end; ++kh) {
    const int64_t ih = h0 + kh * p.dilation_h;
    for (int64_t kw = kh == th.begin ? tw.begin + 1 : tw.begin; kw < tw.end; ++kw) {
      const int64_t iw = w0 + kw * p.dilation_w;
      const float* src = image + ih * is.h + iw * is.w + c0;
      const __m512i here = _mm512_set1_epi32(static_cast<int32_t>(ih * p.in_width + iw));
      for (int b = 0; b < kBlocks; ++b) {
        const __m512 v = load(active[b], src + b * kLanes);
        const __mmask16 take = replaces(v, best[b], active[b]);
        best[b] = _mm512_mask_mov_ps(best[b], take, v);
        if constexpr (kIndices) best_index[b] = _mm512_mask_mov_epi32(best_index[b], take, here);
      }
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    store(out_pixel + c0 + b * kLanes, active[b], best[b]);
    if constexpr (kIndices) store_indices(index_pixel + c0 + b * kLanes, active[b], best_index[b]);
  }
}

// A pixel with more than 128 channels: tap by tap, each streaming over all channels, with the
// maxima in L1 buffers (`best`, `best_index`: channels rounded up to 16). Chunks of 64 channels
// in registers revisit every tap once per chunk, which from 4 chunks on ran 2-3x slower
// (8x256x56^2 channels_last, 2x2/2; likely the prefetchers losing the pattern); up to 128
// channels, one chunk of pixel_chunk, the registers win.
template <bool kIndices>
CONVPOOL_AVX512 void pixel_wide(const Pool2dParams& p, const float* image, const Strides4& is,
                                int64_t h0, int64_t w0, Range th, Range tw, float* out_pixel,
                                int64_t* index_pixel, float* best, int32_t* best_index) {
  const int64_t channels = p.channels;
  const int64_t ih0 = h0 + th.begin * p.dilation_h, iw0 = w0 + tw.begin * p.dilation_w;
  const float* first = image + ih0 * is.h + iw0 * is.w;
  const __m512i first_index = _mm512_set1_epi32(static_cast<int32_t>(ih0 * p.in_width + iw0));
  for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
    _mm512_storeu_ps(best + c0, load(lane_mask(0, channels - c0), first + c0));
    if constexpr (kIndices) _mm512_storeu_si512(best_index + c0, first_index);
  }
  for (int64_t kh = th.begin; kh < th.end; ++kh) {
    const int64_t ih = h0 + kh * p.dilation_h;
    for (int64_t kw = kh == th.begin ? tw.begin + 1 : tw.begin; kw < tw.end; ++kw) {
      const int64_t iw = w0 + kw * p.dilation_w;
      const float* src = image + ih * is.h + iw * is.w;
      const __m512i here = _mm512_set1_epi32(static_cast<int32_t>(ih * p.in_width + iw));
      for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
        const __mmask16 active = lane_mask(0, channels - c0);
        const __m512 v = load(active, src + c0);
        const __m512 b = _mm512_loadu_ps(best + c0);
        const __mmask16 take = replaces(v, b, active);
        _mm512_storeu_ps(best + c0, _mm512_mask_mov_ps(b, take, v));
        if constexpr (kIndices) {
          const __m512i bi = _mm512_loadu_si512(best_index + c0);
          _mm512_storeu_si512(best_index + c0, _mm512_mask_mov_epi32(bi, take, here));
        }
      }
    }
  }
  for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
    const __mmask16 active = lane_mask(0, channels - c0);
    store(out_pixel + c0, active, _mm512_loadu_ps(best + c0));
    if constexpr (kIndices) store_indices(index_pixel + c0, active, _mm512_loadu_si512(best_index + c0));
  }
}

template <bool kIndices>
void forward_channels_last_t(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                           at::Tensor* indices) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<float>(input, values, indices);
  const int64_t pixels = p.batch * p.out_height * p.out_width;
  const int64_t work_per_pixel = std::max<int64_t>(1, p.channels * p.kernel_h * p.kernel_w);
  const bool wide = p.channels > kLanes * kMaxPixelBlocks;  // see pixel_wide
  at::parallel_for(0, pixels, grain_for(work_per_pixel), [&](int64_t q0, int64_t q1) {
    const int64_t padded = wide ? (p.channels + kLanes - 1) / kLanes * kLanes : 0;
    std::vector<float> best(padded);
    std::vector<int32_t> best_index(kIndices ? padded : 0);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t ow = q % p.out_width;
      const int64_t oh = (q / p.out_width) % p.out_height;
      const int64_t n = q / (p.out_width * p.out_height);
      const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
      const Range th = taps_inside(h0, p.kernel_h, p.dilation_h, p.in_height);
      const Range tw = taps_inside(w0, p.kernel_w, p.dilation_w, p.in_width);
      float* out_pixel = out + n * vs.n + oh * vs.h + ow * vs.w;
      int64_t* index_pixel = kIndices ? idx + n * xs.n + oh * xs.h + ow * xs.w : nullptr;
      if (th.begin == th.end || tw.begin == tw.end) {  // only padding: -inf, no index
        std::fill(out_pixel, out_pixel + p.channels, -std::numeric_limits<float>::infinity());
        if (kIndices) std::fill(index_pixel, index_pixel + p.channels, kNoInputIndex);
        continue;
      }
      const float* image = in + n * is.n;
      if (wide) {
        pixel_wide<kIndices>(p, image, is, h0, w0, th, tw, out_pixel, index_pixel, best.data(),
                             best_index.data());
        continue;
      }
      // Not wide: at most kMaxPixelBlocks vectors of channels, all in registers at once
      // (SqueezeNet pool1's 96 channels as 4 + 2 vectors walked every tap twice and ran 1.35x
      // slower, 1 thread).
      const int64_t blocks = (p.channels + kLanes - 1) / kLanes;
      switch (blocks) {
        case 8: pixel_chunk<kIndices, 8>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel); break;
        case 7: pixel_chunk<kIndices, 7>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel); break;
        case 6: pixel_chunk<kIndices, 6>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel); break;
        case 5: pixel_chunk<kIndices, 5>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel); break;
        case 4: pixel_chunk<kIndices, 4>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel); break;
        case 3: pixel_chunk<kIndices, 3>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel); break;
        case 2: pixel_chunk<kIndices, 2>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel); break;
        default: pixel_chunk<kIndices, 1>(p, image, is, h0, w0, th, tw, 0, out_pixel, index_pixel);
      }
    }
  });
}

}  // namespace

// Whether rows_chunk handles this problem (max_pool2d_kernels.h): unit-stride output rows, int32 lane offsets.
bool rows_supported(const Pool2dParams& p, const Strides4& is, const Strides4& vs,
                           const Strides4* xs) {
  const int64_t step = p.stride_w * is.w;
  return vs.w == 1 && (!xs || xs->w == 1) && is.w >= 0 && step < (int64_t(1) << 26);
}

void forward_rows(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                  at::Tensor* indices) {
  if (indices) {
    forward_rows_t<true>(p, input, values, indices);
  } else {
    forward_rows_t<false>(p, input, values, nullptr);
  }
}

void forward_channels_last(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                           at::Tensor* indices) {
  if (indices) {
    forward_channels_last_t<true>(p, input, values, indices);
  } else {
    forward_channels_last_t<false>(p, input, values, nullptr);
  }
}

CONVPOOL_AVX512 bool indices_in_range(const int64_t* index, int64_t count, int64_t plane_size) {
  // index + 1 < plane_size + 1 as unsigned: -1 (no input element) passes, other negatives fail.
  const __m512i one = _mm512_set1_epi64(1), limit = _mm512_set1_epi64(plane_size + 1);
  __mmask8 bad = 0;
  int64_t j = 0;
  for (; j + 8 <= count; j += 8)
    bad |= _mm512_cmpge_epu64_mask(_mm512_add_epi64(_mm512_loadu_si512(index + j), one), limit);
  for (; j < count; ++j) bad |= static_cast<uint64_t>(index[j] + 1) > static_cast<uint64_t>(plane_size);
  return bad == 0;
}

}  // namespace convpool::cpu::pool_avx512

#undef CONVPOOL_AVX512
#endif  // __x86_64__
