// CPU conv2d: fprop, dgrad, wgrad and grad_bias as GEMMs of our own (gemm.h).
//
// Output rows are numbered globally, row = n * out_height + oh, and processed in tiles of rows, so
// a small feature map batches several images into one GEMM and a large one is split; every
// workspace is bounded (tiles, packing panels), never proportional to the batch. Tensors are read
// and written through their strides, so NCHW, channels_last and arbitrary views need no copy.
// Half and bfloat16 are converted to float on the way into the panels (float accumulation).
//
//   fprop  tile = W * col (NCHW output) or col^T * W^T (channels_last output, stored unit-stride);
//          col is never built: packers read it from the input (implicit im2col). 3x3 stride-1
//          convolutions may run as Winograd F(4x4, 3x3) instead (winograd.h).
//   dgrad  stride 1: a convolution of grad_output with the flipped weight (the fprop path, so
//          Winograd too); any stride: col = W^T * grad_output per tile, then col2im.
//
// Which of these (or the depthwise kernels) runs is the registry's choice: the table at the
// bottom of this file (registry.h).
//   wgrad  sum += grad_output * col^T over tiles, in tile order (deterministic).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../shape.h"
#include "backends.h"
#include "depthwise_conv2d.h"
#include "memory.h"
#include "gemm.h"
#include "registry.h"
#include "winograd.h"

namespace convpool::cpu {
namespace {

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

constexpr int64_t kWorkspaceElements = int64_t(1) << 21;

// Output rows per tile so that `elements_per_row` workspace elements per row stay in budget.
int64_t rows_per_tile(int64_t elements_per_row) {
  return std::max<int64_t>(1, kWorkspaceElements / std::max<int64_t>(1, elements_per_row));
}

// Parallel grain (in rows of length `row_length`) that gives each task a useful amount of work.
int64_t grain_for(int64_t row_length) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_length));
}

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

// grad_input_block[n - n_begin][c][ih][iw] += col[k][j]: the adjoint of im2col. Each task owns
// whole channels, so no two tasks write the same element and the sum order is fixed.
template <typename acc>
void col2im_add(const Conv2dParams& p, const acc* col, int64_t group, int64_t row_begin,
                int64_t row_end, int64_t n_begin, acc* grad_input_block) {
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
        const acc* src = col + (c_local * taps + tap) * cols;
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
  at::parallel_for(0, channels, grain_for(cols), [&](int64_t c0, int64_t c1) {
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
  at::parallel_for(0, channels, grain_for(cols), [&](int64_t c0, int64_t c1) {
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
  at::parallel_for(row_begin, row_end, grain_for(wo * channels), [&](int64_t r0, int64_t r1) {
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

// The weight as a float/double [groups, out_channels_per_group, gemm_k] matrix stack.
template <typename scalar_t>
at::Tensor weight_matrices(const Conv2dParams& p, const at::Tensor& weight) {
  const auto acc_dtype = c10::CppTypeToScalarType<acc_t<scalar_t>>::value;
  return weight.to(acc_dtype).contiguous().view({p.groups, p.out_channels_per_group(), p.gemm_k()});
}

template <typename scalar_t>
void fprop_impl(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                const at::Tensor* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  const auto acc_options = input.options().dtype(c10::CppTypeToScalarType<acc>::value);
  const at::Tensor w = weight_matrices<scalar_t>(p, weight);
  const at::Tensor b = bias ? bias->to(acc_options.dtype()).contiguous() : at::Tensor();
  const int64_t k = p.gemm_k();
  const int64_t cog = p.out_channels_per_group();
  const int64_t rows_total = p.batch * p.out_height;
  // Only the output tile is a workspace: the GEMM packs its col operand from the input.
  // A tile of about 2 MiB: its GEMM output is still in cache when scattered.
  const int64_t tile_rows =
      std::min(rows_total, std::max<int64_t>(1, (int64_t(1) << 19) / std::max<int64_t>(1, cog * p.out_width)));
  at::Tensor out_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
  scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
  // channels_last output: compute the tile pixel-major ([pixels x C_out]) so that it is stored
  // in unit-stride runs; otherwise channel-major ([C_out x pixels]), rows of an NCHW plane.
  const bool pixel_major = is_channels_last(output);
  const acc* w_ptr = w.const_data_ptr<acc>();
  acc* tile_ptr = out_tile.mutable_data_ptr<acc>();
  // float channels_last input (unit channel stride): the register-transpose packer.
  const bool cl_float = pixel_major && std::is_same_v<scalar_t, float> && input.stride(1) == 1 &&
                        p.in_channels_per_group() >= 8;
  const at::Tensor w_cl = cl_float ? w.view(weight.sizes()).permute({0, 2, 3, 1}).contiguous()
                                   : at::Tensor();
  for (int64_t r0 = 0; r0 < rows_total; r0 += tile_rows) {
    const int64_t r1 = std::min(rows_total, r0 + tile_rows);
    const int64_t cols = (r1 - r0) * p.out_width;
    for (int64_t g = 0; g < p.groups; ++g) {
      const acc* w_g = w_ptr + g * cog * k;
      const acc* b_g = b.defined() ? b.const_data_ptr<acc>() + g * cog : nullptr;
      const auto col = col_packer<scalar_t, acc>(p, in_ptr, strides4(input), g, r0);
      if (cl_float) {
        // As below with k = (kh, kw, c): w_cl is the weight as [C_out][kh][kw][C_in/groups].
        if constexpr (std::is_same_v<scalar_t, float>)
          gemm::gemm<float>(cols, cog, k, ChannelsLastColTAsA{&p, in_ptr, strides4(input), g, r0},
                            gemm::StridedB<float>{w_cl.const_data_ptr<float>() + g * cog * k, 1, k},
                            tile_ptr, cog, false);
        scatter_rows_pixel_major(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      } else if (pixel_major) {
        // tile [cols x cog] = col^T [cols x k] * W_g^T [k x cog]
        gemm::gemm<acc>(cols, cog, k, ColTAsA<scalar_t, acc>{col},
                        gemm::StridedB<acc>{w_g, 1, k}, tile_ptr, cog, false);
        scatter_rows_pixel_major(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      } else {
        // tile [cog x cols] = W_g [cog x k] * col [k x cols]
        gemm::gemm<acc>(cog, cols, k, gemm::StridedA<acc>{w_g, k, 1}, ColAsB<scalar_t, acc>{col},
                        tile_ptr, cols, false);
        scatter_rows(p, tile_ptr, b_g, g * cog, cog, r0, r1, out_ptr, strides4(output));
      }
    }
  }
}

// For stride 1, dgrad is itself a convolution: grad_output (*) the weight with in/out channels
// swapped and taps flipped, padded by dilation * (kernel - 1) - pad (when that is >= 0). Same
// products, summed in another order; it reuses the fprop path (implicit im2col, no col2im).
bool dgrad_as_fprop(const Conv2dParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.pad_h <= p.dilation_h * (p.kernel_h - 1) &&
         p.pad_w <= p.dilation_w * (p.kernel_w - 1);
}

// The convolution dgrad_by_fprop computes.
Conv2dParams dgrad_as_fprop_params(const Conv2dParams& p) {
  Conv2dParams q = p;
  q.in_channels = p.out_channels;
  q.in_height = p.out_height;
  q.in_width = p.out_width;
  q.out_channels = p.in_channels;
  q.pad_h = p.dilation_h * (p.kernel_h - 1) - p.pad_h;
  q.pad_w = p.dilation_w * (p.kernel_w - 1) - p.pad_w;
  q.out_height = p.in_height;
  q.out_width = p.in_width;
  return q;
}

// Winograd where every value comes out finite; else (inf/NaN spread over whole tiles) the GEMM
// recomputes the output, which then matches PyTorch's non-finite results.
template <typename scalar_t>
void winograd_fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor* bias, at::Tensor& output) {
  if (!winograd::fprop(p, input, weight, bias, output))
    fprop_impl<scalar_t>(p, input, weight, bias, output);
}

template <typename scalar_t>
void dgrad_by_fprop(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    at::Tensor& grad_input, bool winograd) {
  const Conv2dParams q = dgrad_as_fprop_params(p);
  // [groups, cog, cig, kh, kw] -> [groups * cig, cog, kh, kw], taps reversed.
  const at::Tensor w = weight
                           .reshape({p.groups, p.out_channels_per_group(), p.in_channels_per_group(),
                                     p.kernel_h, p.kernel_w})
                           .transpose(1, 2)
                           .flip({3, 4})
                           .reshape({p.in_channels, p.out_channels_per_group(), p.kernel_h, p.kernel_w});
  if (winograd) {
    winograd_fprop<scalar_t>(q, grad_output, w, nullptr, grad_input);
  } else {
    fprop_impl<scalar_t>(q, grad_output, w, nullptr, grad_input);
  }
}

// col = W^T * grad_output per tile, then col2im (any stride).
template <typename scalar_t>
void dgrad_impl(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  const auto acc_options = grad_output.options().dtype(c10::CppTypeToScalarType<acc>::value);
  const at::Tensor w = weight_matrices<scalar_t>(p, weight);
  const int64_t k = p.gemm_k();
  const int64_t cog = p.out_channels_per_group();
  const int64_t image = p.in_channels * p.in_height * p.in_width;
  // Gradients of a block of whole images accumulate in float/double, then are stored once.
  const int64_t block_images = std::min(p.batch, std::max<int64_t>(1, kWorkspaceElements / std::max<int64_t>(1, image)));
  const int64_t tile_rows =
      std::min(block_images * p.out_height, rows_per_tile((k + cog) * p.out_width));
  at::Tensor block = at::empty({block_images * image}, acc_options);
  at::Tensor col = at::empty({k * tile_rows * p.out_width}, acc_options);
  at::Tensor go_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
  scalar_t* gi_ptr = grad_input.mutable_data_ptr<scalar_t>();
  const acc* w_ptr = w.const_data_ptr<acc>();
  acc* col_ptr = col.mutable_data_ptr<acc>();
  acc* go_buf = go_tile.mutable_data_ptr<acc>();
  const Strides4 gi_s = strides4(grad_input);
  for (int64_t n0 = 0; n0 < p.batch; n0 += block_images) {
    const int64_t n1 = std::min(p.batch, n0 + block_images);
    acc* block_ptr = block.mutable_data_ptr<acc>();
    std::fill(block_ptr, block_ptr + (n1 - n0) * image, acc(0));
    for (int64_t r0 = n0 * p.out_height; r0 < n1 * p.out_height; r0 += tile_rows) {
      const int64_t r1 = std::min(n1 * p.out_height, r0 + tile_rows);
      const int64_t cols = (r1 - r0) * p.out_width;
      for (int64_t g = 0; g < p.groups; ++g) {
        gather_rows(p, go_ptr, strides4(grad_output), g * cog, cog, r0, r1, go_buf);
        // col [k x cols] = W_g^T [k x cog] * go [cog x cols]
        gemm::gemm_strided<acc>(k, cols, cog, w_ptr + g * cog * k, 1, k, go_buf, cols, 1, col_ptr,
                                cols, false);
        col2im_add(p, col_ptr, g, r0, r1, n0, block_ptr);
      }
    }
    // Store the block through grad_input's strides (any layout).
    const int64_t planes = (n1 - n0) * p.in_channels;
    at::parallel_for(0, planes, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t n = n0 + q / p.in_channels;
        const int64_t c = q % p.in_channels;
        const acc* src = block_ptr + q * p.in_height * p.in_width;
        for (int64_t ih = 0; ih < p.in_height; ++ih) {
          scalar_t* dst = gi_ptr + n * gi_s.n + c * gi_s.c + ih * gi_s.h;
          for (int64_t iw = 0; iw < p.in_width; ++iw) dst[iw * gi_s.w] = static_cast<scalar_t>(*src++);
        }
      }
    });
  }
}

template <typename scalar_t>
void wgrad_impl(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                at::Tensor& grad_weight) {
  using acc = acc_t<scalar_t>;
  const auto acc_options = input.options().dtype(c10::CppTypeToScalarType<acc>::value);
  const int64_t k = p.gemm_k();
  const int64_t cog = p.out_channels_per_group();
  const int64_t rows_total = p.batch * p.out_height;
  const int64_t tile_rows = std::min(rows_total, rows_per_tile(cog * p.out_width));
  at::Tensor sum = at::zeros({p.groups, cog, k}, acc_options);
  at::Tensor go_tile = at::empty({cog * tile_rows * p.out_width}, acc_options);
  const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
  const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
  acc* go_buf = go_tile.mutable_data_ptr<acc>();
  acc* sum_ptr = sum.mutable_data_ptr<acc>();
  // float channels_last input: k ordered (kh, kw, c) so packing copies channel runs; the sum is
  // permuted back to the weight's layout at the end. A dense channels_last grad_output is read in
  // place as the [cog x pixels] operand (uniform pixel stride), without a gather.
  const Strides4 gs = strides4(grad_output);
  const bool cl_float = std::is_same_v<scalar_t, float> && is_channels_last(input) &&
                        input.stride(1) == 1 && p.in_channels_per_group() >= 8;
  const bool go_direct = cl_float && gs.c == 1 && gs.w == p.out_channels &&
                         gs.h == p.out_width * gs.w && gs.n == p.out_height * gs.h;
  for (int64_t r0 = 0; r0 < rows_total; r0 += tile_rows) {
    const int64_t r1 = std::min(rows_total, r0 + tile_rows);
    const int64_t cols = (r1 - r0) * p.out_width;
    for (int64_t g = 0; g < p.groups; ++g) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (cl_float) {
          const ChannelsLastColTAsB col{&p, in_ptr, strides4(input), g, r0};
          if (go_direct) {
            const float* go_g = go_ptr + r0 * p.out_width * gs.w + g * cog;
            gemm::gemm<float>(cog, k, cols, gemm::StridedA<float>{go_g, 1, gs.w}, col,
                              sum_ptr + g * cog * k, k, true);
          } else {
            gather_rows(p, go_ptr, gs, g * cog, cog, r0, r1, go_buf);
            gemm::gemm<float>(cog, k, cols, gemm::StridedA<float>{go_buf, cols, 1}, col,
                              sum_ptr + g * cog * k, k, true);
          }
          continue;
        }
      }
      gather_rows(p, go_ptr, strides4(grad_output), g * cog, cog, r0, r1, go_buf);
      // sum_g [cog x k] += go [cog x cols] * col^T [cols x k]; tiles in order: deterministic.
      const auto col = col_packer<scalar_t, acc>(p, in_ptr, strides4(input), g, r0);
      gemm::gemm<acc>(cog, k, cols, gemm::StridedA<acc>{go_buf, cols, 1}, ColTAsB<scalar_t, acc>{col},
                      sum_ptr + g * cog * k, k, true);
    }
  }
  if (cl_float) {
    grad_weight.copy_(
        sum.view({p.out_channels, p.kernel_h, p.kernel_w, p.in_channels_per_group()}).permute({0, 3, 1, 2}));
  } else {
    grad_weight.copy_(sum.view(grad_weight.sizes()));
  }
}

// grad_bias's operands: grad_output's strides, channels, height, width, rows (N * H) and data.
template <typename scalar_t>
struct BiasOperands {
  Strides4 s;
  int64_t channels, h_size, w_size, rows;
  const scalar_t* go;
  scalar_t* out;
};
template <typename scalar_t>
BiasOperands<scalar_t> bias_operands(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  return {strides4(grad_output), grad_output.size(1), grad_output.size(2), grad_output.size(3),
          grad_output.size(0) * grad_output.size(2), grad_output.const_data_ptr<scalar_t>(),
          grad_bias.mutable_data_ptr<scalar_t>()};
}

// grad_bias: double accumulation (a long sum in float or bf16 loses the small terms). The order
// of every sum is fixed by the shape alone, never by the thread count.
//
// channels_last (unit channel stride): a channel's values are a pixel apart, so sum whole pixels
// (one independent sum per channel, which vectorizes) over a fixed number of row blocks, then
// add the blocks.
template <typename scalar_t>
void grad_bias_channels_last(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  const auto [s, channels, h_size, w_size, rows, go, out] =
      bias_operands<scalar_t>(grad_output, grad_bias);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(rows, 16));
  std::vector<double> part(blocks * channels, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double* acc = part.data() + b * channels;
      for (int64_t r = rows * b / blocks; r < rows * (b + 1) / blocks; ++r) {
        const scalar_t* row = go + (r / h_size) * s.n + (r % h_size) * s.h;
        for (int64_t w = 0; w < w_size; ++w)
          for (int64_t c = 0; c < channels; ++c) acc[c] += static_cast<double>(row[w * s.w + c]);
      }
    }
  });
  for (int64_t c = 0; c < channels; ++c) {
    double total = 0;
    for (int64_t b = 0; b < blocks; ++b) total += part[b * channels + c];
    out[c] = static_cast<scalar_t>(total);
  }
}

// Any layout: one channel per task, rows of the plane in order.
template <typename scalar_t>
void grad_bias_planes(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  const auto [s, channels, h_size, w_size, rows, go, out] =
      bias_operands<scalar_t>(grad_output, grad_bias);
  at::parallel_for(0, channels, 1, [&](int64_t c0, int64_t c1) {
    constexpr int kChains = 8;  // independent partial sums: one chain would wait on every add
    for (int64_t c = c0; c < c1; ++c) {
      double part[kChains] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* row = go + (r / h_size) * s.n + c * s.c + (r % h_size) * s.h;
        int64_t w = 0;
        for (; w + kChains <= w_size; w += kChains)
          for (int l = 0; l < kChains; ++l) part[l] += static_cast<double>(row[(w + l) * s.w]);
        for (; w < w_size; ++w) part[w % kChains] += static_cast<double>(row[w * s.w]);
      }
      double total = 0;
      for (int l = 0; l < kChains; ++l) total += part[l];
      out[c] = static_cast<scalar_t>(total);
    }
  });
}

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
std::string key(const ConvProblem& q) {
  std::ostringstream ss;
  ss << q.x->scalar_type() << "|x" << q.x->sizes() << q.x->strides();
  if (q.w) ss << "|w" << q.w->sizes() << q.w->strides();
  ss << "|o" << q.out->sizes() << q.out->strides() << "|b" << (q.bias != nullptr);
  if (q.p != nullptr) {
    const Conv2dParams& p = *q.p;
    ss << "|s" << p.stride_h << "," << p.stride_w << "|p" << p.pad_h << "," << p.pad_w << "|d"
       << p.dilation_h << "," << p.dilation_w << "|g" << p.groups;
  }
  ss << "|t" << at::get_num_threads();
  return ss.str();
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
  return dgrad_as_fprop(*q.p) && winograd::applies(dgrad_as_fprop_params(*q.p), q.x->scalar_type());
}

}  // namespace

// dgrad_phases.cpp: dgrad by output phase (undilated, any stride), and where it is preferred.
bool dgrad_phases_applies(const Conv2dParams& p);
bool dgrad_phases_preferred(const Conv2dParams& p, const at::Tensor& grad_input);
void dgrad_phases(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input);

namespace {

// The heuristic order is `preferred` first, then `priority`: for a depthwise conv the depthwise
// walks (vector ones first), for any other the Winograd thresholds, then the implicit GEMM, then
// (dgrad only) the GEMM per output phase where preferred (dgrad_phases.cpp) and the explicit
// col2im GEMM. Every entry is tested on its own (tests/test_registry.py).
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
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d", [&] {
         depthwise::fprop_channels_last<scalar_t>(*q.p, *q.x, *q.w, q.bias, *q.out);
       });
     }},
    {"depthwise_channels_last", Op::dgrad, Isa::generic, 4,
     [](const ConvProblem& q) {
       return is_depthwise(*q.p) && depthwise::channels_innermost(*q.p, *q.x, *q.out);
     },
     nullptr,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_input", [&] {
         depthwise::dgrad_channels_last<scalar_t>(*q.p, *q.x, *q.w, *q.out);
       });
     }},
    {"depthwise_channels_last", Op::wgrad, Isa::generic, 4,
     [](const ConvProblem& q) {
       return is_depthwise(*q.p) && depthwise::channels_innermost(*q.p, *q.x, *q.w);
     },
     nullptr,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_weight", [&] {
         depthwise::wgrad_channels_last<scalar_t>(*q.p, *q.x, *q.w, *q.out);
       });
     }},
    {"depthwise_rows", Op::fprop, Isa::generic, 5, depthwise_problem, nullptr,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d", [&] {
         depthwise::fprop<scalar_t>(*q.p, *q.x, *q.w, q.bias, *q.out);
       });
     }},
    {"depthwise_rows", Op::dgrad, Isa::generic, 5, depthwise_problem, nullptr,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_input", [&] {
         depthwise::dgrad<scalar_t>(*q.p, *q.x, *q.w, *q.out);
       });
     }},
    {"depthwise_rows", Op::wgrad, Isa::generic, 5, depthwise_problem, nullptr,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_weight", [&] {
         depthwise::wgrad<scalar_t>(*q.p, *q.x, *q.w, *q.out);
       });
     }},
    {"winograd_f4x4", Op::fprop, Isa::generic, 6,
     [](const ConvProblem& q) { return winograd::applies(*q.p, q.x->scalar_type()); },
     [](const ConvProblem& q) { return winograd::preferred(*q.p); },
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d", [&] {
         winograd_fprop<scalar_t>(*q.p, *q.x, *q.w, q.bias, *q.out);
       });
     }},
    {"winograd_f4x4", Op::dgrad, Isa::generic, 6, dgrad_as_winograd,
     [](const ConvProblem& q) { return winograd::preferred(dgrad_as_fprop_params(*q.p)); },
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_input", [&] {
         dgrad_by_fprop<scalar_t>(*q.p, *q.x, *q.w, *q.out, true);
       });
     }},
    {"gemm_im2col", Op::fprop, Isa::generic, 7, any_problem, not_depthwise,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d", [&] {
         fprop_impl<scalar_t>(*q.p, *q.x, *q.w, q.bias, *q.out);
       });
     }},
    {"gemm_im2col", Op::dgrad, Isa::generic, 7,
     [](const ConvProblem& q) { return dgrad_as_fprop(*q.p); }, not_depthwise,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_input", [&] {
         dgrad_by_fprop<scalar_t>(*q.p, *q.x, *q.w, *q.out, false);
       });
     }},
    {"gemm_im2col", Op::wgrad, Isa::generic, 7, any_problem, not_depthwise,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_weight", [&] {
         wgrad_impl<scalar_t>(*q.p, *q.x, *q.w, *q.out);
       });
     }},
    {"dgrad_phases", Op::dgrad, Isa::generic, 7,
     [](const ConvProblem& q) { return dgrad_phases_applies(*q.p); },
     [](const ConvProblem& q) { return dgrad_phases_preferred(*q.p, *q.out); },
     [](const ConvProblem& q) { dgrad_phases(*q.p, *q.x, *q.w, *q.out); }},
    {"gemm_col2im", Op::dgrad, Isa::generic, 8, any_problem, not_depthwise,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_input", [&] {
         dgrad_impl<scalar_t>(*q.p, *q.x, *q.w, *q.out);
       });
     }},
    {"bias_channels_last", Op::grad_bias, Isa::generic, 0,
     [](const ConvProblem& q) { return q.x->stride(1) == 1 && q.x->size(1) > 1; }, nullptr,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_bias", [&] {
         grad_bias_channels_last<scalar_t>(*q.x, *q.out);
       });
     }},
    {"bias_planes", Op::grad_bias, Isa::generic, 1, any_problem, nullptr,
     [](const ConvProblem& q) {
       CONVPOOL_DISPATCH_CONV_TYPES(q.x->scalar_type(), "conv2d_grad_bias", [&] {
         grad_bias_planes<scalar_t>(*q.x, *q.out);
       });
     }},
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

void Conv2dBackend::fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                          const at::Tensor* bias, at::Tensor& output) {
  advise_huge_pages(output);
  dispatch(kConvAlgorithms, Op::fprop, ConvProblem{"input", &p, &input, &weight, bias, &output},
           describe, key);
}

void Conv2dBackend::dgrad(const Conv2dParams& p, const at::Tensor& grad_output,
                          const at::Tensor& weight, at::Tensor& grad_input) {
  advise_huge_pages(grad_input);
  dispatch(kConvAlgorithms, Op::dgrad,
           ConvProblem{"grad_output", &p, &grad_output, &weight, nullptr, &grad_input}, describe,
           key);
}

void Conv2dBackend::wgrad(const Conv2dParams& p, const at::Tensor& grad_output,
                          const at::Tensor& input, at::Tensor& grad_weight) {
  dispatch(kConvAlgorithms, Op::wgrad,
           ConvProblem{"grad_output", &p, &grad_output, &input, nullptr, &grad_weight}, describe,
           key);
}

void Conv2dBackend::grad_bias(const at::Tensor& grad_output, at::Tensor& grad_bias) {
  dispatch(kConvAlgorithms, Op::grad_bias,
           ConvProblem{"grad_output", nullptr, &grad_output, nullptr, nullptr, &grad_bias},
           describe, key);
}

}  // namespace convpool::cpu
