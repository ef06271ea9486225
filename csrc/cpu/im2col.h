// The im2col / col2im packers of the GEMM-based conv algorithms (conv_gemm.cpp). "Implicit
// im2col": the column matrix col[k][j] (k = reduction index (c, kh, kw), j = output pixel of a
// tile of output rows, row = n * out_height + oh) is never built; these packers read it straight
// from the input, through its strides, into our GEMM's packing panels (gemm.h), in the operand
// shapes fprop and wgrad need. col2im_add is the adjoint (dgrad at any stride); gather_rows /
// scatter_rows move a tile of (channels x pixels) between a tensor and a dense buffer.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../params.h"
#include "gemm/gemm.h"
#include "helpers.h"

namespace convpool::cpu::im2col {

// Implicit im2col: reads col[k][j] of a tile straight from the input (no column buffer) into a
// GEMM packing panel. Pixels j of a panel are grouped into runs that share (n, oh) - or, for a
// 1x1 stride-1 pad-0 conv on a plane-contiguous input, a whole image - so that with unit input
// stride a run is one contiguous copy (the fast path for NCHW).
template <typename scalar_t, typename acc>
struct ColPacker {
  const Conv2dParams* p;
  const scalar_t* input;
  Strides4 s;
  int64_t group, row_begin;  // the tile's first output row (n * out_height + oh)
  bool plane_runs;           // 1x1 s1 p0 with s.h == W * s.w: runs may span output rows

  // What one reduction index k = (c, kh, kw) needs, computed once per packing call (kc <= KC).
  struct Tap {
    int64_t offset;  // c * s.c
    int64_t dh, dw;  // kh * dilation_h - pad_h, kw * dilation_w - pad_w
  };
  struct Run {
    int64_t dst, len, n, oh, ow;  // dst: offset of the run's first element in the panels
  };

  void taps(int64_t k0, int64_t kc, Tap* out) const {
    const Conv2dParams& q = *p;
    const int64_t taps = q.kernel_h * q.kernel_w;
    for (int64_t kk = 0; kk < kc; ++kk) {
      const int64_t k = k0 + kk;
      const int64_t c = group * q.in_channels_per_group() + k / taps;
      out[kk] = {c * s.c, ((k % taps) / q.kernel_w) * q.dilation_h - q.pad_h,
                 (k % q.kernel_w) * q.dilation_w - q.pad_w};
    }
  }

  // Writes col[k0 + kk][j0 + j] for kk < kc, j < nj to dst[(j / panel) * panel_stride +
  // (j % panel) * djs + kk * dks]. The reduction index is the outer loop, so each input channel
  // plane is read in long sequential runs (few pages, prefetch-friendly).
  void operator()(const Tap* tap, int64_t kc, int64_t j0, int64_t nj, acc* dst, int64_t dks,
                  int64_t djs, int64_t panel, int64_t panel_stride) const {
    const Conv2dParams& q = *p;
    const int64_t wo = q.out_width;
    Run* runs = static_cast<Run*>(gemm::thread_buffer(3, sizeof(Run) * nj));
    int64_t nruns = 0;
    for (int64_t j = 0; j < nj;) {
      const int64_t row = row_begin + (j0 + j) / wo, ow = (j0 + j) % wo;
      const int64_t n = row / q.out_height, oh = row % q.out_height;
      int64_t len = plane_runs ? (q.out_height - oh) * wo - ow : wo - ow;
      len = std::min({len, nj - j, panel - j % panel});
      runs[nruns++] = {(j / panel) * panel_stride + (j % panel) * djs, len, n, oh, ow};
      j += len;
    }
    const bool unit = q.stride_w == 1 && s.w == 1;
    for (int64_t kk = 0; kk < kc; ++kk) {
      acc* out = dst + kk * dks;
      const int64_t offset = tap[kk].offset;
      for (int64_t r = 0; r < nruns; ++r) {
        const Run& run = runs[r];
        const int64_t len = run.len;
        const scalar_t* image = input + run.n * s.n + offset;
        acc* o = out + run.dst;
        if (plane_runs) {  // 1x1 s1 p0: (ih, iw) = (oh, ow) and the run is contiguous in memory
          const scalar_t* from = image + run.oh * s.h + run.ow * s.w;
          if (unit && djs == 1) {
            for (int64_t t = 0; t < len; ++t) o[t] = static_cast<acc>(from[t]);
          } else {
            for (int64_t t = 0; t < len; ++t) o[t * djs] = static_cast<acc>(from[t * s.w]);
          }
          continue;
        }
        const int64_t ih = run.oh * q.stride_h + tap[kk].dh;
        if (ih < 0 || ih >= q.in_height) {
          for (int64_t t = 0; t < len; ++t) o[t * djs] = acc(0);
          continue;
        }
        const scalar_t* src = image + ih * s.h;
        const int64_t iw = run.ow * q.stride_w + tap[kk].dw;
        if (unit) {  // input columns iw + t: zeros, one contiguous read, zeros; no per-element test
          const int64_t lo = std::clamp<int64_t>(-iw, 0, len);
          const int64_t hi = std::clamp<int64_t>(q.in_width - iw, lo, len);
          if (djs == 1) {
            for (int64_t t = 0; t < lo; ++t) o[t] = acc(0);
            for (int64_t t = lo; t < hi; ++t) o[t] = static_cast<acc>(src[iw + t]);
            for (int64_t t = hi; t < len; ++t) o[t] = acc(0);
          } else {
            for (int64_t t = 0; t < lo; ++t) o[t * djs] = acc(0);
            for (int64_t t = lo; t < hi; ++t) o[t * djs] = static_cast<acc>(src[iw + t]);
            for (int64_t t = hi; t < len; ++t) o[t * djs] = acc(0);
          }
          continue;
        }
        // Any stride: the in-bounds columns are one range of t as well.
        const int64_t sw = q.stride_w;
        const int64_t lo = std::min(len, iw >= 0 ? 0 : (-iw + sw - 1) / sw);
        const int64_t hi =
            std::clamp<int64_t>(q.in_width - iw <= 0 ? 0 : (q.in_width - iw + sw - 1) / sw, lo, len);
        for (int64_t t = 0; t < lo; ++t) o[t * djs] = acc(0);
        for (int64_t t = lo; t < hi; ++t) o[t * djs] = static_cast<acc>(src[(iw + t * sw) * s.w]);
        for (int64_t t = hi; t < len; ++t) o[t * djs] = acc(0);
      }
    }
  }

  // wgrad on a float input with unit stride along W (stride_w 1): dst[j * ld + kk] =
  // col[kk][j0 + j] for kk < ks, j < nj, ld a multiple of 8 >= round_up(ks, 8) (lanes from ks to
  // the next multiple of 8 are written as zeros). Blocks of 8 k x 8 pixels are transposed in
  // registers; pixel blocks that straddle the padding are done element by element.
  void transposed(const Tap* tap, int64_t ks, int64_t j0, int64_t nj, float* dst, int64_t ld) const {
    static_assert(std::is_same_v<scalar_t, float>);
    const Conv2dParams& q = *p;
    const int64_t wo = q.out_width;
    Run* runs = static_cast<Run*>(gemm::thread_buffer(3, sizeof(Run) * nj));
    int64_t nruns = 0;
    for (int64_t j = 0; j < nj;) {  // runs of one output row each
      const int64_t row = row_begin + (j0 + j) / wo, ow = (j0 + j) % wo;
      const int64_t len = std::min(wo - ow, nj - j);
      runs[nruns++] = {j, len, row / q.out_height, row % q.out_height, ow};
      j += len;
    }
    for (int64_t k8 = 0; k8 < ks; k8 += 8) {
      for (int64_t r = 0; r < nruns; ++r) {
        const Run& run = runs[r];
        const float* base[8];  // row i's element for pixel x: base[i][shift[i] + x], lo_i <= x < hi_i
        int64_t shift[8], lo_i[8], hi_i[8];
        int64_t lo = 0, hi = run.len;  // pixels valid for every non-null row
        for (int i = 0; i < 8; ++i) {
          base[i] = nullptr;
          shift[i] = lo_i[i] = hi_i[i] = 0;
          if (k8 + i >= ks) continue;
          const Tap& t = tap[k8 + i];
          const int64_t ih = run.oh * q.stride_h + t.dh;
          if (ih < 0 || ih >= q.in_height) continue;
          const int64_t iw = run.ow + t.dw;
          lo_i[i] = std::clamp<int64_t>(-iw, 0, run.len);
          hi_i[i] = std::clamp<int64_t>(q.in_width - iw, lo_i[i], run.len);
          if (lo_i[i] >= hi_i[i]) continue;
          base[i] = input + run.n * s.n + t.offset + ih * s.h;
          shift[i] = iw;
          lo = std::max(lo, lo_i[i]);
          hi = std::min(hi, hi_i[i]);
        }
        float* out = dst + run.dst * ld + k8;
        int64_t x = 0;
        if (lo < hi) {
          for (; x < lo; ++x)
            for (int i = 0; i < 8; ++i)
              out[x * ld + i] =
                  (base[i] && x >= lo_i[i] && x < hi_i[i]) ? base[i][shift[i] + x] : 0.0f;
          for (; x + 8 <= hi; x += 8) {
            const float* rows[8];
            for (int i = 0; i < 8; ++i) rows[i] = base[i] ? base[i] + (shift[i] + x) : nullptr;
            gemm::transpose8x8(rows, out + x * ld, ld);
          }
        }
        for (; x < run.len; ++x)
          for (int i = 0; i < 8; ++i)
            out[x * ld + i] =
                  (base[i] && x >= lo_i[i] && x < hi_i[i]) ? base[i][shift[i] + x] : 0.0f;
      }
    }
  }
};

template <typename scalar_t, typename acc>
ColPacker<scalar_t, acc> col_packer(const Conv2dParams& p, const scalar_t* input, Strides4 s,
                                    int64_t group, int64_t row_begin) {
  const bool plane_runs = p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 &&
                          p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0 &&
                          s.h == p.in_width * s.w;
  return {&p, input, s, group, row_begin, plane_runs};
}

// Per-thread table of taps for one packing call (KC entries at most).
template <typename scalar_t, typename acc>
typename ColPacker<scalar_t, acc>::Tap* tap_table(const ColPacker<scalar_t, acc>& col, int64_t k0,
                                                  int64_t kc) {
  using Tap = typename ColPacker<scalar_t, acc>::Tap;
  Tap* table = static_cast<Tap*>(gemm::thread_buffer(2, sizeof(Tap) * kc));
  col.taps(k0, kc, table);
  return table;
}

// Zero the padding lanes [used, width) of the last panel (kc rows of `width`).
template <typename acc>
void zero_tail(acc* panel, int64_t kc, int64_t width, int64_t used) {
  if (used < width)
    for (int64_t k = 0; k < kc; ++k) std::fill(panel + k * width + used, panel + (k + 1) * width, acc(0));
}

// GEMM operand B = col (k x pixels): NR-pixel panels, dst[panel][k][j].
template <typename scalar_t, typename acc>
struct ColAsB {
  ColPacker<scalar_t, acc> col;
  void operator()(const gemm::KernelInfo<acc>& ki, int64_t k0, int64_t kc, int64_t j0, int64_t n,
                  acc* dst) const {
    const int64_t nr = ki.nr;
    col(tap_table(col, k0, kc), kc, j0, n, dst, nr, 1, nr, kc * nr);
    zero_tail(dst + (n - 1) / nr * kc * nr, kc, nr, n - (n - 1) / nr * nr);
  }
};

// GEMM operand A = col^T (pixels x k): MR-pixel panels, dst[panel][k][i].
template <typename scalar_t, typename acc>
struct ColTAsA {
  ColPacker<scalar_t, acc> col;
  void operator()(const gemm::KernelInfo<acc>& ki, int64_t i0, int64_t m, int64_t k0, int64_t kc,
                  acc* dst) const {
    const int64_t mr = ki.mr;
    col(tap_table(col, k0, kc), kc, i0, m, dst, mr, 1, mr, kc * mr);
    zero_tail(dst + (m - 1) / mr * kc * mr, kc, mr, m - (m - 1) / mr * mr);
  }
};

// GEMM operand A = col^T (pixels x k) for a channels_last float input, with the reduction index
// ordered k = (kh, kw, c) so that channels are contiguous: blocks of 8 pixels x 8 channels are
// transposed in registers instead of gathered element by element at stride C.
struct ChannelsLastColTAsA {
  const Conv2dParams* p;
  const float* input;
  Strides4 s;  // s.c == 1
  int64_t group, row_begin;

  void operator()(const gemm::KernelInfo<float>& ki, int64_t i0, int64_t m, int64_t k0, int64_t kc,
                  float* dst) const {
    const Conv2dParams& q = *p;
    const int mr = ki.mr;
    TORCH_INTERNAL_ASSERT(mr <= 16);
    const int64_t cig = q.in_channels_per_group();
    for (int64_t ip = 0; ip < m; ip += mr, dst += kc * mr) {
      const int rows = static_cast<int>(std::min<int64_t>(mr, m - ip));
      int64_t base[16], oh[16], ow[16];
      for (int i = 0; i < rows; ++i) {
        const int64_t j = i0 + ip + i;
        const int64_t row = row_begin + j / q.out_width;
        ow[i] = j % q.out_width;
        oh[i] = row % q.out_height;
        base[i] = (row / q.out_height) * s.n + group * cig * s.c;
      }
      for (int64_t kk = 0; kk < kc;) {
        const int64_t k = k0 + kk, tap = k / cig, c = k % cig;
        const int64_t kh = tap / q.kernel_w, kw = tap % q.kernel_w;
        const float* src[16];
        for (int i = 0; i < mr; ++i) {
          src[i] = nullptr;
          if (i >= rows) continue;
          const int64_t ih = oh[i] * q.stride_h - q.pad_h + kh * q.dilation_h;
          const int64_t iw = ow[i] * q.stride_w - q.pad_w + kw * q.dilation_w;
          if (ih >= 0 && ih < q.in_height && iw >= 0 && iw < q.in_width)
            src[i] = input + base[i] + ih * s.h + iw * s.w + c;
        }
        const int64_t end = std::min(kc, kk + (cig - c));  // this tap's channels in the block
        for (; kk + 8 <= end; kk += 8) {
          gemm::pack_transpose8(src, mr, dst + kk * mr);
          for (int i = 0; i < mr; ++i)
            if (src[i]) src[i] += 8;
        }
        for (; kk < end; ++kk)
          for (int i = 0; i < mr; ++i) dst[kk * mr + i] = src[i] ? *src[i]++ : 0.0f;
      }
    }
  }
};

// wgrad's B = col^T (pixels x k) for a channels_last float input, k = (kh, kw, c): for each pixel
// the panel's k values are runs of contiguous channels, so packing is a few copies per pixel.
struct ChannelsLastColTAsB {
  const Conv2dParams* p;
  const float* input;
  Strides4 s;  // s.c == 1
  int64_t group, row_begin;

  void operator()(const gemm::KernelInfo<float>& ki, int64_t p0, int64_t pc, int64_t k0, int64_t n,
                  float* dst) const {
    const Conv2dParams& q = *p;
    const int64_t nr = ki.nr;
    const int64_t cig = q.in_channels_per_group();
    for (int64_t j = 0; j < pc; ++j) {
      const int64_t px = p0 + j;
      const int64_t row = row_begin + px / q.out_width, ow = px % q.out_width;
      const int64_t oh = row % q.out_height;
      const float* image = input + (row / q.out_height) * s.n + group * cig;
      for (int64_t kp = 0; kp < n; kp += nr) {
        const int64_t ks = std::min(nr, n - kp);
        float* out = dst + (kp / nr) * pc * nr + j * nr;
        for (int64_t kk = 0; kk < ks;) {
          const int64_t k = k0 + kp + kk, tap = k / cig, c = k % cig;
          const int64_t cnt = std::min(ks - kk, cig - c);
          const int64_t ih = oh * q.stride_h - q.pad_h + (tap / q.kernel_w) * q.dilation_h;
          const int64_t iw = ow * q.stride_w - q.pad_w + (tap % q.kernel_w) * q.dilation_w;
          if (ih >= 0 && ih < q.in_height && iw >= 0 && iw < q.in_width) {
            const float* from = image + ih * s.h + iw * s.w + c;
            std::copy(from, from + cnt, out + kk);
          } else {
            std::fill(out + kk, out + kk + cnt, 0.0f);
          }
          kk += cnt;
        }
        std::fill(out + ks, out + nr, 0.0f);
      }
    }
  }
};

// GEMM operand B = col^T (pixels x k) for wgrad, where pixels are the reduction: NR-wide panels
// of k, dst[panel][j][kk].
template <typename scalar_t, typename acc>
struct ColTAsB {
  ColPacker<scalar_t, acc> col;
  void operator()(const gemm::KernelInfo<acc>& ki, int64_t p0, int64_t pc, int64_t k0, int64_t n,
                  acc* dst) const {
    const int64_t nr = ki.nr;
    const auto* taps = tap_table(col, k0, n);
    const bool transpose = std::is_same_v<scalar_t, float> && col.s.w == 1 &&
                           col.p->stride_w == 1 && nr % 8 == 0;
    for (int64_t kp = 0; kp < n; kp += nr, dst += pc * nr) {
      const int64_t ks = std::min<int64_t>(nr, n - kp);
      zero_tail(dst, pc, nr, ks);
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (transpose) {
          col.transposed(taps + kp, ks, p0, pc, dst, nr);
          continue;
        }
      }
      col(taps + kp, ks, p0, pc, dst, 1, nr, pc, 0);
    }
  }
};

// grad_input_block[n - n_begin][c][ih][iw] += col[k][j]: the adjoint of im2col, with k = (c, kh,
// kw) or, tap_major (the order of a channels_last weight), k = (kh, kw, c). Each task owns whole
// channels, so no two tasks write the same element and the sum order is fixed.
template <typename acc>
void col2im_add(const Conv2dParams& p, const acc* col, int64_t group, int64_t row_begin,
                int64_t row_end, int64_t n_begin, acc* grad_input_block, bool tap_major = false) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t wo = p.out_width;
  const int64_t cols = (row_end - row_begin) * wo;
  const int64_t plane = p.in_height * p.in_width;
  const int64_t cg = p.in_channels_per_group();
  at::parallel_for(0, cg, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c_local = c_begin; c_local < c_end; ++c_local) {
      const int64_t c = group * cg + c_local;
      for (int64_t tap = 0; tap < taps; ++tap) {
        const int64_t kh = tap / p.kernel_w;
        const int64_t kw = tap % p.kernel_w;
        const int64_t iw0 = kw * p.dilation_w - p.pad_w;
        const acc* src = col + (tap_major ? tap * cg + c_local : c_local * taps + tap) * cols;
        for (int64_t row = row_begin; row < row_end; ++row, src += wo) {
          const int64_t n = row / p.out_height;
          const int64_t ih = (row % p.out_height) * p.stride_h - p.pad_h + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_height) continue;
          acc* dst = grad_input_block + ((n - n_begin) * p.in_channels + c) * plane + ih * p.in_width;
          if (p.stride_w == 1) {  // iw = iw0 + ow: one contiguous, vectorisable add
            const int64_t lo = std::clamp<int64_t>(-iw0, 0, wo);
            const int64_t hi = std::clamp<int64_t>(p.in_width - iw0, lo, wo);
            for (int64_t ow = lo; ow < hi; ++ow) dst[iw0 + ow] += src[ow];
            continue;
          }
          for (int64_t ow = 0; ow < wo; ++ow) {
            const int64_t iw = iw0 + ow * p.stride_w;
            if (iw >= 0 && iw < p.in_width) dst[iw] += src[ow];
          }
        }
      }
    }
  });
}

// dst[c][j] = t[n][c_begin + c][oh][ow] for the rows of a tile: a (channels x pixels) matrix.
template <typename scalar_t, typename acc>
void gather_rows(const Conv2dParams& p, const scalar_t* t, Strides4 s, int64_t c_begin,
                 int64_t channels, int64_t row_begin, int64_t row_end, acc* dst) {
  const int64_t wo = p.out_width;
  const int64_t cols = (row_end - row_begin) * wo;
  at::parallel_for(0, channels, grain_for(cols, 16384), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      acc* out = dst + c * cols;
      for (int64_t row = row_begin; row < row_end; ++row, out += wo) {
        const scalar_t* src =
            t + (row / p.out_height) * s.n + (c_begin + c) * s.c + (row % p.out_height) * s.h;
        for (int64_t ow = 0; ow < wo; ++ow) out[ow] = static_cast<acc>(src[ow * s.w]);
      }
    }
  });
}

// t[n][c_begin + c][oh][ow] = src[c][j] + bias[c]: the inverse of gather_rows, fused with bias.
template <typename scalar_t, typename acc>
void scatter_rows(const Conv2dParams& p, const acc* src, const acc* bias, int64_t c_begin,
                  int64_t channels, int64_t row_begin, int64_t row_end, scalar_t* t, Strides4 s) {
  const int64_t wo = p.out_width;
  const int64_t cols = (row_end - row_begin) * wo;
  at::parallel_for(0, channels, grain_for(cols, 16384), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const acc b = bias ? bias[c] : acc(0);
      const acc* in = src + c * cols;
      for (int64_t row = row_begin; row < row_end; ++row, in += wo) {
        scalar_t* out =
            t + (row / p.out_height) * s.n + (c_begin + c) * s.c + (row % p.out_height) * s.h;
        for (int64_t ow = 0; ow < wo; ++ow) out[ow * s.w] = static_cast<scalar_t>(in[ow] + b);
      }
    }
  });
}

// Same as scatter_rows for a tile stored pixel-major, src[j][c]: each output pixel's channels
// are written in one run, unit-stride in channels_last.
template <typename scalar_t, typename acc>
void scatter_rows_pixel_major(const Conv2dParams& p, const acc* src, const acc* bias,
                              int64_t c_begin, int64_t channels, int64_t row_begin,
                              int64_t row_end, scalar_t* t, Strides4 s) {
  const int64_t wo = p.out_width;
  at::parallel_for(row_begin, row_end, grain_for(wo * channels, 16384), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const acc* in = src + (row - row_begin) * wo * channels;
      scalar_t* out = t + (row / p.out_height) * s.n + c_begin * s.c + (row % p.out_height) * s.h;
      for (int64_t ow = 0; ow < wo; ++ow, in += channels) {
        scalar_t* px = out + ow * s.w;
        if (bias) {
          for (int64_t c = 0; c < channels; ++c) px[c * s.c] = static_cast<scalar_t>(in[c] + bias[c]);
        } else {
          for (int64_t c = 0; c < channels; ++c) px[c * s.c] = static_cast<scalar_t>(in[c]);
        }
      }
    }
  });
}

}  // namespace convpool::cpu::im2col
