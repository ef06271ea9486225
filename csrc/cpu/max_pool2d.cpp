// CPU max_pool2d: forward (values + int64 indices, or the values alone) and backward.
//
// Rules shared with PyTorch: a window starts from its first in-bounds, dilation-aligned element
// with value -inf (lowest for integers); an element replaces the maximum if it is greater or NaN.
// So the first of tied maxima wins, the last NaN wins, padding is never selected, and an all -inf
// window reports its first valid element. Tensors are read and written through their strides.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/NumericUtils.h>

#include <limits>
#include <sstream>
#include <string>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <type_traits>
#include <vector>

#include "../shape.h"
#include "backends.h"
#include "isa.h"
#include "memory.h"
#include "registry.h"
#include "window.h"

namespace convpool::cpu {
namespace {

// Taps [begin, end) of one window dimension that land inside [0, size).
struct TapRange {
  int64_t begin, end;
};

inline TapRange valid_taps(int64_t start, int64_t kernel, int64_t dilation, int64_t size) {
  const int64_t begin = start < 0 ? (-start + dilation - 1) / dilation : 0;
  const int64_t end = start >= size ? 0 : std::min(kernel, (size - start + dilation - 1) / dilation);
  return {begin, std::max(begin, end)};
}

template <typename scalar_t>
scalar_t lowest() {
  if constexpr (std::numeric_limits<scalar_t>::has_infinity) {
    return -std::numeric_limits<scalar_t>::infinity();
  } else {
    return std::numeric_limits<scalar_t>::lowest();
  }
}

template <typename scalar_t>
inline bool replaces_max(scalar_t value, scalar_t current) {
  if constexpr (std::is_integral_v<scalar_t>) {
    return value > current;
  } else {
    return value > current || value != value;  // NaN wins
  }
}

// For j in [begin, end): element v = src[j * src_step]; if it replaces best[j] (greater, or NaN),
// best[j] = v and, with kIndices, best_index[j] = index0 + j * index_step. Written without
// branches: the comparisons are data-dependent and would mispredict half the time.
template <bool kIndices>
struct UpdateMaxGeneric {
  template <typename scalar_t, typename index_t>
  void operator()(const scalar_t* __restrict src, int64_t src_step, int64_t begin, int64_t end,
                  int64_t index_step, int64_t index0, scalar_t* __restrict best,
                  index_t* __restrict best_index) const {
    for (int64_t j = begin; j < end; ++j) {
      const scalar_t v = src[j * src_step];
      const bool take = replaces_max(v, best[j]);
      best[j] = take ? v : best[j];
      if constexpr (kIndices)
        best_index[j] = take ? static_cast<index_t>(index0 + j * index_step) : best_index[j];
    }
  }
};

#if defined(__x86_64__)
// The same update for float with 8 lanes of AVX2; indices in int32 lanes (the caller ensures a
// plane has fewer than 2^31 elements).
template <bool kIndices>
struct UpdateMaxFloatAvx2 {
  __attribute__((target("avx2"))) void operator()(const float* __restrict src, int64_t src_step,
                                                  int64_t begin, int64_t end, int64_t index_step,
                                                  int64_t index0, float* __restrict best,
                                                  int32_t* __restrict best_index) const {
    int64_t j = begin;
    const bool contiguous = src_step == 1;
    const bool gatherable = src_step > 0 && src_step < (int64_t(1) << 27);
    if (contiguous || gatherable) {
      const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i lane_index = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(index_step)));
      const __m256i lane_offset = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(src_step)));
      for (; j + 8 <= end; j += 8) {
        __m256 v;
        if (contiguous) {
          v = _mm256_loadu_ps(src + j);
        } else if (src_step == 2 && j + 9 <= end) {
          // Stride 2 (the common pooling stride): two loads and a deinterleave beat a gather.
          // j + 9 <= end keeps the second load inside the row.
          const __m256 lo = _mm256_loadu_ps(src + 2 * j), hi = _mm256_loadu_ps(src + 2 * j + 8);
          v = _mm256_castpd_ps(_mm256_permute4x64_pd(
              _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
        } else {
          v = _mm256_i32gather_ps(src + j * src_step, lane_offset, 4);
        }
        const __m256 b = _mm256_loadu_ps(best + j);
        const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, b, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        _mm256_storeu_ps(best + j, _mm256_blendv_ps(b, v, take));
        if constexpr (kIndices) {
          const __m256i here = _mm256_add_epi32(
              _mm256_set1_epi32(static_cast<int32_t>(index0 + j * index_step)), lane_index);
          const __m256 old_index = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(best_index + j)));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(best_index + j),
                              _mm256_castps_si256(_mm256_blendv_ps(old_index, _mm256_castsi256_ps(here), take)));
        }
      }
    }
    UpdateMaxGeneric<kIndices>{}(src, src_step, j, end, index_step, index0, best, best_index);
  }
};
#endif

// Output columns [begin, end) whose tap `kw` lands inside the input row.
inline TapRange columns_hitting(const Pool2dParams& p, int64_t kw) {
  const int64_t offset = kw * p.dilation_w - p.pad_w;  // iw = ow * stride_w + offset
  const OutputRange r = outputs_inside(offset, p.stride_w, p.in_width, p.out_width);
  return {r.begin, r.end};
}

// What every forward loop reads and writes: strides and data of input, values and (when asked
// for) indices.
template <typename scalar_t>
struct ForwardOperands {
  Strides4 is, vs, xs;
  const scalar_t* in;
  scalar_t* out;
  int64_t* idx;  // nullptr: values only
};

template <typename scalar_t>
ForwardOperands<scalar_t> forward_operands(const at::Tensor& input, at::Tensor& values,
                                           at::Tensor* indices) {
  return {strides4(input), strides4(values), indices ? strides4(*indices) : Strides4{},
          input.const_data_ptr<scalar_t>(), values.mutable_data_ptr<scalar_t>(),
          indices ? indices->mutable_data_ptr<int64_t>() : nullptr};
}

// Index of a window's first in-bounds element, or kNoInputIndex.
inline int64_t first_index(const Pool2dParams& p, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  const TapRange th = valid_taps(h0, p.kernel_h, p.dilation_h, p.in_height);
  const TapRange tw = valid_taps(w0, p.kernel_w, p.dilation_w, p.in_width);
  if (th.begin == th.end || tw.begin == tw.end) return kNoInputIndex;
  return (h0 + th.begin * p.dilation_h) * p.in_width + (w0 + tw.begin * p.dilation_w);
}

#if defined(__x86_64__)
// AVX-512F kernels for float: 16 lanes, outputs kept in registers across all taps of a window
// (up to 4 vectors of output columns, or 8 of a pixel's channels, at a time, so as many
// independent compare/blend chains are in flight) and stored once. Indices in int32 lanes (the
// caller ensures a plane has fewer than 2^31 elements).
#define CONVPOOL_AVX512 __attribute__((target("avx512f")))
namespace avx512 {

constexpr int kLanes = 16;
constexpr int kMaxBlocks = 4;       // output-row vectors per chunk (rows_chunk)
constexpr int kMaxPixelBlocks = 8;  // channel vectors of a pixel in registers (pixel_chunk)

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

// Whether rows_chunk handles this problem: unit-stride output rows, int32 lane offsets.
inline bool rows_supported(const Pool2dParams& p, const Strides4& is, const Strides4& vs,
                           const Strides4* xs) {
  const int64_t step = p.stride_w * is.w;
  return vs.w == 1 && (!xs || xs->w == 1) && is.w >= 0 && step < (int64_t(1) << 26);
}

// Output columns [ow0, ow0 + 16 * kBlocks) of output row oh of one plane. cols[kw]: the output
// columns whose tap kw lands inside the input row (columns_hitting).
template <bool kIndices, int kBlocks>
CONVPOOL_AVX512 void rows_chunk(const Pool2dParams& p, const float* plane, const Strides4& is,
                                int64_t oh, int64_t ow0, const TapRange* cols, float* out_row,
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
  const TapRange th = valid_taps(h0, p.kernel_h, p.dilation_h, p.in_height);
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
void forward_rows(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                  at::Tensor* indices) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<float>(input, values, indices);
  std::vector<TapRange> cols(p.kernel_w);
  for (int64_t kw = 0; kw < p.kernel_w; ++kw) cols[kw] = columns_hitting(p, kw);
  const int64_t rows = p.batch * p.channels * p.out_height;
  const int64_t work_per_row = std::max<int64_t>(1, p.out_width * p.kernel_h * p.kernel_w);
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / work_per_row), [&](int64_t r0, int64_t r1) {
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
                                 int64_t h0, int64_t w0, TapRange th, TapRange tw, int64_t c0,
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
                                int64_t h0, int64_t w0, TapRange th, TapRange tw, float* out_pixel,
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
void forward_channels_last(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                           at::Tensor* indices) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<float>(input, values, indices);
  const int64_t pixels = p.batch * p.out_height * p.out_width;
  const int64_t work_per_pixel = std::max<int64_t>(1, p.channels * p.kernel_h * p.kernel_w);
  const bool wide = p.channels > kLanes * kMaxPixelBlocks;  // see pixel_wide
  at::parallel_for(0, pixels, std::max<int64_t>(1, 32768 / work_per_pixel), [&](int64_t q0, int64_t q1) {
    const int64_t padded = wide ? (p.channels + kLanes - 1) / kLanes * kLanes : 0;
    std::vector<float> best(padded);
    std::vector<int32_t> best_index(kIndices ? padded : 0);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t ow = q % p.out_width;
      const int64_t oh = (q / p.out_width) % p.out_height;
      const int64_t n = q / (p.out_width * p.out_height);
      const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
      const TapRange th = valid_taps(h0, p.kernel_h, p.dilation_h, p.in_height);
      const TapRange tw = valid_taps(w0, p.kernel_w, p.dilation_w, p.in_width);
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

}  // namespace avx512
#endif

// One output row of one plane at a time, taps outermost and output columns innermost, so the
// inner loop streams along the input row. Every output still sees its taps in row-major order,
// which is what makes the tie and NaN rules identical to a per-window loop.
template <typename scalar_t, typename index_t, bool kIndices, typename Update>
void forward_rows(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                  at::Tensor* indices, Update update) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<scalar_t>(input, values, indices);
  const int64_t wo = p.out_width;
  const int64_t rows = p.batch * p.channels * p.out_height;
  const int64_t work_per_row = std::max<int64_t>(1, wo * p.kernel_h * p.kernel_w);
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / work_per_row), [&](int64_t r0, int64_t r1) {
    std::vector<scalar_t> best(wo);
    std::vector<index_t> best_index(kIndices ? wo : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % p.out_height;
      const int64_t c = (r / p.out_height) % p.channels;
      const int64_t n = r / (p.out_height * p.channels);
      std::fill(best.begin(), best.end(), lowest<scalar_t>());
      if constexpr (kIndices)
        for (int64_t ow = 0; ow < wo; ++ow) best_index[ow] = static_cast<index_t>(first_index(p, oh, ow));
      const int64_t h0 = oh * p.stride_h - p.pad_h;
      const TapRange th = valid_taps(h0, p.kernel_h, p.dilation_h, p.in_height);
      for (int64_t kh = th.begin; kh < th.end; ++kh) {
        const int64_t ih = h0 + kh * p.dilation_h;
        const scalar_t* row = in + n * is.n + c * is.c + ih * is.h;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const TapRange cols = columns_hitting(p, kw);
          const int64_t offset = kw * p.dilation_w - p.pad_w;
          const int64_t row_index = ih * p.in_width + offset;
          update(row + offset * is.w, p.stride_w * is.w, cols.begin, cols.end, p.stride_w,
                     row_index, best.data(), best_index.data());
        }
      }
      scalar_t* out_row = out + n * vs.n + c * vs.c + oh * vs.h;
      for (int64_t ow = 0; ow < wo; ++ow) out_row[ow * vs.w] = best[ow];
      if constexpr (kIndices) {
        int64_t* idx_row = idx + n * xs.n + c * xs.c + oh * xs.h;
        for (int64_t ow = 0; ow < wo; ++ow) idx_row[ow * xs.w] = best_index[ow];
      }
    }
  });
}

// channels_last: one output pixel at a time with all its channels, channels innermost
// (unit stride in input and outputs).
template <typename scalar_t, typename index_t, bool kIndices, typename Update>
void forward_channels_last(const Pool2dParams& p, const at::Tensor& input, at::Tensor& values,
                           at::Tensor* indices, Update update) {
  const auto [is, vs, xs, in, out, idx] = forward_operands<scalar_t>(input, values, indices);
  const int64_t channels = p.channels;
  const int64_t pixels = p.batch * p.out_height * p.out_width;
  const int64_t work_per_pixel = std::max<int64_t>(1, channels * p.kernel_h * p.kernel_w);
  at::parallel_for(0, pixels, std::max<int64_t>(1, 32768 / work_per_pixel), [&](int64_t q0, int64_t q1) {
    std::vector<scalar_t> best(channels);
    std::vector<index_t> best_index(kIndices ? channels : 0);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t ow = q % p.out_width;
      const int64_t oh = (q / p.out_width) % p.out_height;
      const int64_t n = q / (p.out_width * p.out_height);
      std::fill(best.begin(), best.end(), lowest<scalar_t>());
      if constexpr (kIndices)
        std::fill(best_index.begin(), best_index.end(), static_cast<index_t>(first_index(p, oh, ow)));
      const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
      const TapRange th = valid_taps(h0, p.kernel_h, p.dilation_h, p.in_height);
      const TapRange tw = valid_taps(w0, p.kernel_w, p.dilation_w, p.in_width);
      for (int64_t kh = th.begin; kh < th.end; ++kh) {
        const int64_t ih = h0 + kh * p.dilation_h;
        for (int64_t kw = tw.begin; kw < tw.end; ++kw) {
          const int64_t iw = w0 + kw * p.dilation_w;
          const scalar_t* src = in + n * is.n + ih * is.h + iw * is.w;
          // Channels are the unit-stride "columns" here, all at the same input position.
          update(src, 1, 0, channels, 0, ih * p.in_width + iw, best.data(), best_index.data());
        }
      }
      scalar_t* out_pixel = out + n * vs.n + oh * vs.h + ow * vs.w;
      for (int64_t c = 0; c < channels; ++c) out_pixel[c * vs.c] = best[c];
      if constexpr (kIndices) {
        int64_t* idx_pixel = idx + n * xs.n + oh * xs.h + ow * xs.w;
        for (int64_t c = 0; c < channels; ++c) idx_pixel[c * xs.c] = best_index[c];
      }
    }
  });
}

// channels_last (channels unit-stride in the input and every output) or not.
inline bool channels_innermost(const Pool2dParams& p, const at::Tensor& input,
                               const at::Tensor& values, const at::Tensor* indices) {
  return p.channels > 1 && input.stride(1) == 1 && values.stride(1) == 1 &&
         (!indices || indices->stride(1) == 1);
}

inline void check_index(const Pool2dParams& p, int64_t index, int64_t n, int64_t c, int64_t oh,
                        int64_t ow) {
  TORCH_CHECK(index >= 0 && index < p.in_height * p.in_width, "max_pool2d_backward: index ", index,
              " at output position (", n, ", ", c, ", ", oh, ", ", ow,
              ") is outside the input plane of ", p.in_height, "x", p.in_width, " elements");
}

#if defined(__x86_64__)
CONVPOOL_AVX512 bool indices_in_range_avx512(const int64_t* index, int64_t count, int64_t plane_size) {
  // index + 1 < plane_size + 1 as unsigned: -1 (no input element) passes, other negatives fail.
  const __m512i one = _mm512_set1_epi64(1), limit = _mm512_set1_epi64(plane_size + 1);
  __mmask8 bad = 0;
  int64_t j = 0;
  for (; j + 8 <= count; j += 8)
    bad |= _mm512_cmpge_epu64_mask(_mm512_add_epi64(_mm512_loadu_si512(index + j), one), limit);
  for (; j < count; ++j) bad |= static_cast<uint64_t>(index[j] + 1) > static_cast<uint64_t>(plane_size);
  return bad == 0;
}
#endif

// Whether count indices (unit stride) all lie in [-1, plane_size): one vectorized check before a
// run of the scatter, instead of a compare and branch per element inside it (40% of its time).
inline bool indices_in_range(const int64_t* index, int64_t count, int64_t plane_size) {
#if defined(__x86_64__)
  if (use_avx512()) return indices_in_range_avx512(index, count, plane_size);
#endif
  bool valid = true;
  for (int64_t j = 0; j < count; ++j)
    valid &= static_cast<uint64_t>(index[j] + 1) <= static_cast<uint64_t>(plane_size);
  return valid;
}

// Scatter by indices, one (n, c) plane per task: tasks never share an element and the sum order
// is fixed, so the result is deterministic. Reduced-precision gradients accumulate in float.
template <typename scalar_t>
void backward_planes(const Pool2dParams& p, const at::Tensor& grad_output,
                     const at::Tensor& indices, at::Tensor& grad_input) {
  using acc = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const Strides4 gs = strides4(grad_output), xs = strides4(indices), is = strides4(grad_input);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t plane_size = p.in_height * p.in_width;
  // float/double planes stored row-major accumulate in place, zeroed here while in cache.
  const bool in_place = std::is_same_v<scalar_t, acc> && is.w == 1 && is.h == p.in_width;
  at::parallel_for(0, p.batch * p.channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> buffer(in_place ? 0 : plane_size);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / p.channels, c = q % p.channels;
      acc* sums = in_place ? reinterpret_cast<acc*>(gi + n * is.n + c * is.c) : buffer.data();
      std::fill(sums, sums + plane_size, acc(0));
      // Dense index planes are checked whole, others a row at a time.
      const bool dense_indices = xs.w == 1 && xs.h == p.out_width;
      const bool plane_checked =
          dense_indices && indices_in_range(idx + n * xs.n + c * xs.c, p.out_height * p.out_width, plane_size);
      for (int64_t oh = 0; oh < p.out_height; ++oh) {
        const int64_t* index_row = idx + n * xs.n + c * xs.c + oh * xs.h;
        const scalar_t* grad_row = go + n * gs.n + c * gs.c + oh * gs.h;
        const bool checked = plane_checked || (xs.w == 1 && !dense_indices &&
                                               indices_in_range(index_row, p.out_width, plane_size));
        for (int64_t ow = 0; ow < p.out_width; ++ow) {
          const int64_t index = index_row[ow * xs.w];
          if (index == kNoInputIndex) continue;
          if (!checked) check_index(p, index, n, c, oh, ow);
          sums[index] += static_cast<acc>(grad_row[ow * gs.w]);
        }
      }
      if (in_place) continue;
      scalar_t* plane = gi + n * is.n + c * is.c;
      for (int64_t ih = 0; ih < p.in_height; ++ih)
        for (int64_t iw = 0; iw < p.in_width; ++iw)
          plane[ih * is.h + iw * is.w] = static_cast<scalar_t>(sums[ih * p.in_width + iw]);
    }
  });
}

// channels_last: a task owns one image and a block of channels and walks the output pixels in
// order, so the channel loop is unit-stride, no two tasks share an element and the sum order is
// fixed (deterministic). Reduced-precision gradients accumulate in a float copy of the block.
template <typename scalar_t>
void backward_channels_last(const Pool2dParams& p, const at::Tensor& grad_output,
                            const at::Tensor& indices, at::Tensor& grad_input) {
  using acc = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  // Whole pixels when there are images enough for every thread (each pass over an image's pixels
  // then handles all its channels); else blocks of 64 channels, so small batches still split.
  const int64_t kBlock = p.batch >= at::get_num_threads() ? p.channels : 64;
  const Strides4 gs = strides4(grad_output), xs = strides4(indices), is = strides4(grad_input);
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t blocks = (p.channels + kBlock - 1) / kBlock;
  const int64_t plane_size = p.in_height * p.in_width;
  // float/double in a dense channels_last image accumulate in place (zeroed here first):
  // element (index, c) of the block is then at index * is.w + c.
  const bool in_place = std::is_same_v<scalar_t, acc> && is.c == 1 && is.h == p.in_width * is.w;
  at::parallel_for(0, p.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> buffer;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / blocks;
      const int64_t c0 = (t % blocks) * kBlock;
      const int64_t width = std::min(kBlock, p.channels - c0);
      const int64_t pitch = in_place ? is.w : width;
      if (!in_place) buffer.assign(plane_size * width, acc(0));
      acc* sums = in_place ? reinterpret_cast<acc*>(gi + n * is.n + c0) : buffer.data();
      if (in_place)
        for (int64_t e = 0; e < plane_size; ++e) std::fill(sums + e * pitch, sums + e * pitch + width, acc(0));
      for (int64_t oh = 0; oh < p.out_height; ++oh) {
        for (int64_t ow = 0; ow < p.out_width; ++ow) {
          const int64_t* pixel_idx = idx + n * xs.n + c0 * xs.c + oh * xs.h + ow * xs.w;
          const scalar_t* pixel_go = go + n * gs.n + c0 * gs.c + oh * gs.h + ow * gs.w;
          const bool checked = xs.c == 1 && indices_in_range(pixel_idx, width, plane_size);
          for (int64_t c = 0; c < width; ++c) {
            const int64_t index = pixel_idx[c * xs.c];
            if (index == kNoInputIndex) continue;
            if (!checked) check_index(p, index, n, c0 + c, oh, ow);
            sums[index * pitch + c] += static_cast<acc>(pixel_go[c * gs.c]);
          }
        }
      }
      if (in_place) continue;
      for (int64_t e = 0; e < plane_size; ++e) {
        scalar_t* dst = gi + n * is.n + c0 * is.c + (e / p.in_width) * is.h + (e % p.in_width) * is.w;
        for (int64_t c = 0; c < width; ++c) dst[c * is.c] = static_cast<scalar_t>(sums[e * width + c]);
      }
    }
  });
}

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
std::string key(const PoolProblem& q) {
  const Pool2dParams& p = *q.p;
  std::ostringstream ss;
  ss << q.x->scalar_type() << "|x" << q.x->sizes() << q.x->strides() << "|o" << q.out->sizes()
     << q.out->strides();
  if (q.indices) ss << "|i" << q.indices->strides();
  if (q.saved) ss << "|i" << q.saved->strides();
  ss << "|k" << p.kernel_h << "," << p.kernel_w << "|s" << p.stride_h << "," << p.stride_w << "|p"
     << p.pad_h << "," << p.pad_w << "|d" << p.dilation_h << "," << p.dilation_w << "|c"
     << p.ceil_mode << "|t" << at::get_num_threads();
  return ss.str();
}

using PoolAlgorithm = Algorithm<PoolProblem>;

bool forward_channels_innermost(const PoolProblem& q) {
  return channels_innermost(*q.p, *q.x, *q.out, q.indices);
}
bool any_pool(const PoolProblem&) { return true; }
// The vector kernels: float32, indices in int32 lanes.
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
      forward_rows<scalar_t, int64_t, kIndices>(p, x, v, i, UpdateMaxGeneric<kIndices>{});
    });
  }
};
template <bool kIndices>
struct PortableChannelsLast {
  static void run(const Pool2dParams& p, const at::Tensor& x, at::Tensor& v, at::Tensor* i) {
    AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d", [&] {
      forward_channels_last<scalar_t, int64_t, kIndices>(p, x, v, i, UpdateMaxGeneric<kIndices>{});
    });
  }
};
#if defined(__x86_64__)
template <bool kIndices>
struct Avx2Rows {
  static void run(const Pool2dParams& p, const at::Tensor& x, at::Tensor& v, at::Tensor* i) {
    forward_rows<float, int32_t, kIndices>(p, x, v, i, UpdateMaxFloatAvx2<kIndices>{});
  }
};
template <bool kIndices>
struct Avx2ChannelsLast {
  static void run(const Pool2dParams& p, const at::Tensor& x, at::Tensor& v, at::Tensor* i) {
    forward_channels_last<float, int32_t, kIndices>(p, x, v, i, UpdateMaxFloatAvx2<kIndices>{});
  }
};
template <bool kIndices>
struct Avx512Rows {
  static void run(const Pool2dParams& p, const at::Tensor& x, at::Tensor& v, at::Tensor* i) {
    avx512::forward_rows<kIndices>(p, x, v, i);
  }
};
template <bool kIndices>
struct Avx512ChannelsLast {
  static void run(const Pool2dParams& p, const at::Tensor& x, at::Tensor& v, at::Tensor* i) {
    avx512::forward_channels_last<kIndices>(p, x, v, i);
  }
};

bool avx512_rows_fit(const PoolProblem& q) {
  const Strides4 xs = q.indices ? strides4(*q.indices) : Strides4{};
  return float_int32(q) && !forward_channels_innermost(q) &&
         avx512::rows_supported(*q.p, strides4(*q.x), strides4(*q.out), q.indices ? &xs : nullptr);
}
// Except with indices over more than 128 channels, where the AVX2 kernel measured faster (8x192
// and 8x256 channels at 56x56: R 0.93 / 0.88 against 0.72 / 0.71).
bool avx512_channels_last_preferred(const PoolProblem& q) {
  return !q.indices || q.p->channels <= avx512::kLanes * avx512::kMaxPixelBlocks;
}
#endif
#define CONVPOOL_POOL_FORWARD(NAME, ISA, PRIORITY, APPLICABLE, PREFERRED, KERNEL)         \
  {NAME, Op::pool_forward, ISA, PRIORITY, APPLICABLE, PREFERRED, forward_entry<KERNEL>}, \
  {NAME, Op::pool_values, ISA, PRIORITY, APPLICABLE, PREFERRED, forward_entry<KERNEL>}

// Heuristic order: the widest vectors the CPU has, along channels where they are innermost.
const PoolAlgorithm kPoolAlgorithms[] = {
#if defined(__x86_64__)
    CONVPOOL_POOL_FORWARD("pool_avx512_channels_last", Isa::avx512, 0,
                          [](const PoolProblem& q) { return float_int32(q) && forward_channels_innermost(q); },
                          avx512_channels_last_preferred, Avx512ChannelsLast),
    CONVPOOL_POOL_FORWARD("pool_avx512_rows", Isa::avx512, 1, avx512_rows_fit, nullptr, Avx512Rows),
    CONVPOOL_POOL_FORWARD("pool_avx2_channels_last", Isa::avx2, 2,
                          [](const PoolProblem& q) { return float_int32(q) && forward_channels_innermost(q); },
                          nullptr, Avx2ChannelsLast),
    CONVPOOL_POOL_FORWARD("pool_avx2_rows", Isa::avx2, 3, float_int32, nullptr, Avx2Rows),
#endif
    CONVPOOL_POOL_FORWARD("pool_channels_last", Isa::generic, 4, forward_channels_innermost, nullptr,
                          PortableChannelsLast),
    CONVPOOL_POOL_FORWARD("pool_rows", Isa::generic, 5, any_pool, nullptr, PortableRows),
    {"pool_backward_channels_last", Op::pool_backward, Isa::generic, 0,
     [](const PoolProblem& q) { return q.p->channels > 1 && q.out->stride(1) == 1; }, nullptr,
     [](const PoolProblem& q) {
       AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.x->scalar_type(),
                                       "max_pool2d_backward", [&] {
         backward_channels_last<scalar_t>(*q.p, *q.x, *q.saved, *q.out);
       });
     }},
    {"pool_backward_planes", Op::pool_backward, Isa::generic, 1, any_pool, nullptr,
     [](const PoolProblem& q) {
       AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.x->scalar_type(),
                                       "max_pool2d_backward", [&] {
         backward_planes<scalar_t>(*q.p, *q.x, *q.saved, *q.out);
       });
     }},
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
