// Direct convolution (no im2col, no GEMM packing of the input) vectorized over output channels:
// the "direct_hwc" entries of the conv registry, for the problems whose reduction is too short
// for the GEMM's packing to pay (a first layer's 1-3 input channels, a decoder's 21-channel
// transposed convolution). Float32. fprop and dgrad below; wgrad, the same tile with weight
// entries as its rows, at its definition.
//
// Both passes are a correlation over a zero-padded channels-last copy of what they read (the
// "padded copy": [image][row][column][channel], built here per chunk of images, so every tap
// read is inside it and the tile has no edge cases):
//   fprop  output[oh][ow][co] = bias[co] + sum over (kh, kw, ci) of
//          padded[oh * s_h + kh * d_h][ow * s_w + kw * d_w][ci] * W[co][ci][kh][kw]
//   dgrad  by stride phase (the geometry of dgrad_phases.h): the grad_input pixels of phase
//          (r_h, r_w) are a stride-1 correlation of grad_output with the sub-kernel of that
//          phase's taps, read at grad_output row q - t_h, column q - t_w.
// One "variant" per phase (fprop has one): its output pixels are rows x columns; one task is an
// output row of one image, group, variant and block of NR output channels, walked in tiles of
// MR pixels (direct/kernels_impl.h: 2 * MR accumulators, M broadcasts of the padded copy and 2
// weight vectors per step). The weight is packed once per call, [group][variant][channel
// block][tap][reduction channel][NR], zero past the group's channels.
//
// Each output element is written once by one task, its sum in a fixed order (taps, then
// channels), so results do not depend on the thread count. Workspace: the packed weight (wgrad:
// the packed grad_output) and the padded copy, for chunks of images of at most kChunkFloats
// floats each (one image when it is larger).
#include "direct.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../../shape.h"
#include "../depthwise/depthwise.h"
#include "../dgrad_phases.h"
#include "../helpers.h"
#include "../isa.h"
#include "kernels.h"

namespace convpool::cpu::direct {
namespace {

// The kernels of the widest ISA the CPU has (isa.h).
const Kernels& kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (use_avx512()) return avx512::kKernels;
  if (use_avx2()) return avx2::kKernels;
#endif
  return generic::kKernels;
}

// Images per padded copy: about 8 MiB of them.
constexpr int64_t kChunkFloats = int64_t(1) << 21;

// One variant's output pixels (rows x cols per image) and where they read and write. Offsets
// are in floats: into one image of the padded copy (x_*) or the output tensor (y_*, without
// the image's and the channel's part).
struct Variant {
  int64_t rows = 0, cols = 0;
  int64_t x_base = 0, x_row = 0, x_col = 0;
  int64_t y_base = 0, y_row = 0, y_col = 0;
  std::vector<int64_t> off;                 // per tap: offset in the padded copy
  // The tile's reduction: runs of run_cin contiguous floats of the padded copy at run_off (by
  // default one run per tap, of the group's channels).
  std::vector<int64_t> run_off;
  int64_t run_cin = 0;
  std::vector<std::pair<int64_t, int64_t>> taps;  // per tap: the weight's (kh, kw)
};

struct Plan {
  int64_t src_h, src_w;          // what is read: input (fprop) or grad_output (dgrad)
  int64_t hp, wp, top, left;     // the padded copy: source row h is padded row h + top
  int64_t cx;                    // its channels (all groups): the pixel stride
  int64_t groups, cin, cout;     // per group: reduction channels, output channels
  bool transposed;               // weight [reduction][output] (dgrad) or [output][reduction]
  std::vector<Variant> variants;
};

// The padded copy of images [n0, n0 + count) of `src`: zeros around, channels innermost.
void pad_images(const Plan& pl, const at::Tensor& src, int64_t n0, int64_t count, float* dst) {
  const float* s = src.const_data_ptr<float>();
  const Strides4 ss = strides4(src);
  const int64_t row_floats = pl.wp * pl.cx;
  at::parallel_for(0, count * pl.hp, grain_for(row_floats), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / pl.hp, h = r % pl.hp - pl.top;
      float* d = dst + r * row_floats;
      if (h < 0 || h >= pl.src_h) {
        std::fill(d, d + row_floats, 0.0f);
        continue;
      }
      const int64_t w_end = std::min(pl.src_w, pl.wp - pl.left);  // source columns that fit
      std::fill(d, d + pl.left * pl.cx, 0.0f);
      std::fill(d + (pl.left + w_end) * pl.cx, d + row_floats, 0.0f);
      const float* row = s + (n0 + n) * ss.n + h * ss.h;
      float* out = d + pl.left * pl.cx;
      if (ss.c == 1 && ss.w == pl.cx) {
        std::memcpy(out, row, sizeof(float) * w_end * pl.cx);
      } else if (ss.c == 1) {
        for (int64_t w = 0; w < w_end; ++w)
          std::memcpy(out + w * pl.cx, row + w * ss.w, sizeof(float) * pl.cx);
      } else {
        for (int64_t c = 0; c < pl.cx; ++c)
          for (int64_t w = 0; w < w_end; ++w) out[w * pl.cx + c] = row[c * ss.c + w * ss.w];
      }
    }
  });
}

// output (+ bias) from `src` by the plan: the padded copy chunk by chunk, the tiles in parallel.
void run(const Plan& pl, const at::Tensor& src, const at::Tensor& weight, const at::Tensor* bias,
         at::Tensor& out) {
  const Kernels& k = kernels();
  const int64_t nr = k.nr, mr = k.mr;
  const int64_t blocks = (pl.cout + nr - 1) / nr;
  const int64_t nv = static_cast<int64_t>(pl.variants.size());

  // ---- the packed weight: [group][variant][block][tap][reduction channel][nr] ----------------
  std::vector<int64_t> w_offset(pl.groups * nv * blocks + 1, 0);
  for (int64_t g = 0; g < pl.groups; ++g)
    for (int64_t v = 0; v < nv; ++v)
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t i = (g * nv + v) * blocks + b;
        w_offset[i + 1] = w_offset[i] + static_cast<int64_t>(pl.variants[v].taps.size()) * pl.cin * nr;
      }
  at::Tensor packed = at::empty({std::max<int64_t>(1, w_offset.back())}, weight.options().dtype(at::kFloat));
  float* wp = packed.mutable_data_ptr<float>();
  const float* w = weight.const_data_ptr<float>();
  const Strides4 ws = strides4(weight);
  at::parallel_for(0, pl.groups * nv * blocks, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t g = i / (nv * blocks), v = i / blocks % nv, b = i % blocks;
      float* dst = wp + w_offset[i];
      const auto& taps = pl.variants[v].taps;
      for (size_t t = 0; t < taps.size(); ++t)
        for (int64_t c = 0; c < pl.cin; ++c, dst += nr)
          for (int64_t j = 0; j < nr; ++j) {
            const int64_t o = b * nr + j;
            if (o >= pl.cout) {
              dst[j] = 0.0f;
              continue;
            }
            // fprop: W[g * cout + o][c]; dgrad: W[g * cin + c][o] (the conv's weight).
            const int64_t wn = pl.transposed ? g * pl.cin + c : g * pl.cout + o;
            const int64_t wc = pl.transposed ? o : c;
            dst[j] = w[wn * ws.n + wc * ws.c + taps[t].first * ws.h + taps[t].second * ws.w];
          }
    }
  });

  const float* bias_ptr = bias ? bias->const_data_ptr<float>() : nullptr;
  float* y = out.mutable_data_ptr<float>();
  const Strides4 ys = strides4(out);
  const bool channels_inner = ys.c == 1;
  const int64_t batch = src.size(0);
  const int64_t image_floats = pl.hp * pl.wp * pl.cx;
  const int64_t chunk = std::clamp<int64_t>(kChunkFloats / std::max<int64_t>(1, image_floats), 1, batch);
  at::Tensor padded = at::empty({chunk * image_floats}, src.options().dtype(at::kFloat));
  float* xp = padded.mutable_data_ptr<float>();

  // Tasks: (image, group, variant, output row, channel block), variants' rows one after another.
  std::vector<int64_t> row_start(nv + 1, 0);
  for (int64_t v = 0; v < nv; ++v) row_start[v + 1] = row_start[v] + pl.variants[v].rows;
  const int64_t rows = row_start[nv];
  int64_t max_work = 1;
  for (const Variant& var : pl.variants)
    max_work = std::max<int64_t>(max_work, var.cols * std::max<size_t>(1, var.taps.size()) * pl.cin * nr);

  for (int64_t n0 = 0; n0 < batch; n0 += chunk) {
    const int64_t count = std::min(chunk, batch - n0);
    pad_images(pl, src, n0, count, xp);
    const int64_t tasks = count * pl.groups * rows * blocks;
    at::parallel_for(0, tasks, grain_for(max_work), [&](int64_t t0, int64_t t1) {
      alignas(64) float buf[kMaxRows * 64];  // one tile, for an output whose channels are strided
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t % blocks, rg = t / blocks;
        const int64_t row = rg % rows, ng = rg / rows;
        const int64_t g = ng % pl.groups, n = ng / pl.groups;
        const int64_t v = std::upper_bound(row_start.begin(), row_start.end(), row) - row_start.begin() - 1;
        const Variant& var = pl.variants[v];
        const int64_t r = row - row_start[v];
        const int64_t taps = static_cast<int64_t>(var.taps.size());
        const int64_t runs = static_cast<int64_t>(var.run_off.size());
        const int64_t c0 = g * pl.cout + b * nr;  // first output channel of the block
        const int nvalid = static_cast<int>(std::min(nr, pl.cout - b * nr));
        const float* wb = wp + w_offset[(g * nv + v) * blocks + b];
        const float* init = bias_ptr ? bias_ptr + c0 : nullptr;
        const float* xrow = xp + n * image_floats + g * pl.cin;
        if (taps > 0) xrow += var.x_base + r * var.x_row;
        float* yrow = y + (n0 + n) * ys.n + var.y_base + r * var.y_row;
        for (int64_t col = 0; col < var.cols; col += mr) {
          const int m = static_cast<int>(std::min(mr, var.cols - col));
          const float* x = taps > 0 ? xrow + col * var.x_col : xrow;
          float* dst = yrow + col * var.y_col;
          if (channels_inner) {
            k.tile[m - 1](x, var.x_col, var.run_off.data(), runs, var.run_cin, 1, wb, var.run_cin * nr, init,
                          dst + c0, var.y_col, nvalid);
          } else {
            k.tile[m - 1](x, var.x_col, var.run_off.data(), runs, var.run_cin, 1, wb, var.run_cin * nr, init,
                          buf, nr, nvalid);
            for (int j = 0; j < nvalid; ++j)
              for (int i = 0; i < m; ++i) dst[(c0 + j) * ys.c + i * var.y_col] = buf[i * nr + j];
          }
        }
      }
    });
  }
}

// The padded copy and channel counts of fprop (and wgrad, which reads the same input).
Plan geometry_of_fprop(const Conv2dParams& p) {
  Plan pl;
  pl.src_h = p.in_height;
  pl.src_w = p.in_width;
  pl.top = p.pad_h;
  pl.left = p.pad_w;
  // The rows and columns the taps reach, and every source row and column (copied whole).
  pl.hp = std::max(p.pad_h + p.in_height, (p.out_height - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1);
  pl.wp = std::max(p.pad_w + p.in_width, (p.out_width - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1);
  pl.cx = p.in_channels;
  pl.groups = p.groups;
  pl.cin = p.in_channels_per_group();
  pl.cout = p.out_channels_per_group();
  pl.transposed = false;
  return pl;
}

}  // namespace

bool fprop_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  (void)p;
  return dtype == at::kFloat;
}

// Measured on an AMD EPYC Zen 4 (AVX-512, 2 threads, 2026-12-02; docs/performance.md): the
// reduction C_in * kH * kW up to 640 with at most 128 input channels per group is faster than
// the implicit GEMM in both layouts: AlexNet conv1 3->64 11x11 s4 1.3-1.7x, DeepBench 1->32 5x20
// s2 1.4-1.6x, ResNet stems 3->64 7x7 s2 1.3-3x, ResNet-50 64->256 1x1 1.0-1.35x, 64->128 3x3 s2
// 1.1x, 24->24 5x5 1.0-1.3x; the GEMM wins from 256 input channels (1x1 256->64 NCHW 1.55x,
// 512->128 1.1-2x, 1024->256 1.4-2x) and ties at 128 (128->512 1x1 0.9-1.1x). At least 16
// output channels per group: the tile's 32 channel lanes are otherwise mostly idle. Winograd,
// where preferred, comes first (it is 1.2-2.8x faster on 3x3 stride-1 layers). Not a 1x1 layer
// with an NCHW output: there the GEMM packs whole plane runs and stores rows of planes, and the
// two were within noise of each other (64->64, 64->256: 0.8-1.25x either way; 32->64 and 128->512
// at N=1 1.14-1.33x for the GEMM).
bool fprop_preferred(const Conv2dParams& p, const at::Tensor& output) {
  const bool pointwise = p.kernel_h == 1 && p.kernel_w == 1;
  return !is_depthwise(p) && p.out_channels_per_group() >= 16 && p.in_channels_per_group() <= 128 &&
         p.gemm_k() <= 640 && (!pointwise || is_channels_last(output));
}

void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output) {
  Plan pl = geometry_of_fprop(p);
  const Strides4 ys = strides4(output);
  Variant var;
  var.rows = p.out_height;
  var.cols = p.out_width;
  var.x_row = p.stride_h * pl.wp * pl.cx;
  var.x_col = p.stride_w * pl.cx;
  var.y_row = ys.h;
  var.y_col = ys.w;
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      var.off.push_back((kh * p.dilation_h * pl.wp + kw * p.dilation_w) * pl.cx);
      var.taps.emplace_back(kh, kw);
    }
  if (p.groups == 1 && p.dilation_w == 1) {
    // A kernel row's (kw, c) are one contiguous run of the padded copy, and of the packed
    // weight ([kh][kw][c][NR]): one long reduction loop per kernel row instead of one short one
    // per tap (a first layer has 1-3 channels per tap).
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) var.run_off.push_back(var.off[kh * p.kernel_w]);
    var.run_cin = p.kernel_w * pl.cin;
  } else {
    var.run_off = var.off;
    var.run_cin = pl.cin;
  }
  pl.variants.push_back(std::move(var));
  run(pl, input, weight, bias, output);
}

bool wgrad_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  (void)p;
  return dtype == at::kFloat;
}

// Measured on the AMD EPYC Zen 4 (AVX-512, 2 threads) against gemm_im2col: faster for kernels
// larger than 1x1 with few input channels (AlexNet conv1 3->64 11x11 s4 1.45-2.0x, DeepBench
// speech1 1.5-2.7x, ResNet stem 3->64 7x7 s2 1.55-2.1x, FCN-8s's backward 21->21 4x4 s2
// 1.0-1.25x) and for ResNet-18's 64->64 3x3 (1.04-1.27x); slower for 1x1 layers (0.6-1.04x),
// 64->128 3x3 s2 channels_last (0.84-0.88x) and from 128 input channels (0.4-0.95x).
bool wgrad_preferred(const Conv2dParams& p) {
  const int64_t cin = p.in_channels_per_group();
  const bool stride1 = p.stride_h == 1 && p.stride_w == 1;
  return !is_depthwise(p) && p.out_channels_per_group() >= 16 && p.kernel_h * p.kernel_w > 1 &&
         (cin <= 32 || (cin <= 64 && stride1));
}

// grad_weight[co][c][kh][kw] = sum over (n, oh, ow) of
//   padded[n][oh * s_h + kh * d_h][ow * s_w + kw * d_w][c] * grad_output[n][co][oh][ow]:
// the tile's rows are a run of weight entries that lie one float apart in the padded copy (a
// kernel row's (kw, c) when ungrouped and undilated along W, else one tap's channels), its
// reduction the output pixels (taps = images x output rows, cin = output columns, xc = s_w
// pixels), its vectors grad_output packed [image][row][column][NR] per channel block. One task
// per (group, run tile, channel block) sums every pixel of a chunk of images in registers; the
// chunks are added in order, so the result does not depend on the thread count.
void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
           at::Tensor& grad_weight) {
  const Kernels& k = kernels();
  const int64_t nr = k.nr, mr = k.mr;
  Plan pl = geometry_of_fprop(p);
  const int64_t blocks = (pl.cout + nr - 1) / nr;
  const int64_t ho = p.out_height, wo = p.out_width, kh_n = p.kernel_h, kw_n = p.kernel_w;
  // The runs of one group: (offset in the padded copy, first kh, first kw, length).
  struct Run {
    int64_t off, kh, kw, len;
  };
  std::vector<Run> runs;
  const bool rows_run = p.groups == 1 && p.dilation_w == 1;
  for (int64_t kh = 0; kh < kh_n; ++kh)
    for (int64_t kw = 0; kw < (rows_run ? 1 : kw_n); ++kw)
      runs.push_back({(kh * p.dilation_h * pl.wp + kw * p.dilation_w) * pl.cx, kh, kw,
                      rows_run ? kw_n * pl.cin : pl.cin});
  struct Task {
    int64_t g, run, r0, b;
  };
  std::vector<Task> tasks;
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t ri = 0; ri < static_cast<int64_t>(runs.size()); ++ri)
      for (int64_t r0 = 0; r0 < runs[ri].len; r0 += mr)
        for (int64_t b = 0; b < blocks; ++b) tasks.push_back({g, ri, r0, b});

  const int64_t batch = p.batch;
  const int64_t image_floats = pl.hp * pl.wp * pl.cx;
  // Images per chunk: their padded copy and their packed grad_output both within the budget.
  const int64_t per_image = std::max(image_floats, p.groups * blocks * ho * wo * nr);
  const int64_t chunk = std::clamp<int64_t>(kChunkFloats / std::max<int64_t>(1, per_image), 1, batch);
  at::Tensor padded = at::empty({chunk * image_floats}, input.options().dtype(at::kFloat));
  float* xp = padded.mutable_data_ptr<float>();
  const int64_t go_block = chunk * ho * wo * nr;  // one (group, channel block) of packed grad_output
  at::Tensor go_packed = at::empty({std::max<int64_t>(1, p.groups * blocks * go_block)},
                                   grad_output.options().dtype(at::kFloat));
  float* gp = go_packed.mutable_data_ptr<float>();
  // The sums, [C_out][C_in / groups][kh][kw], float; stored through grad_weight's strides at the end.
  const int64_t cin = pl.cin, taps = kh_n * kw_n;
  at::Tensor sums = at::empty({p.out_channels * cin * taps}, grad_output.options().dtype(at::kFloat));
  float* acc = sums.mutable_data_ptr<float>();
  const float* go = grad_output.const_data_ptr<float>();
  const Strides4 gs = strides4(grad_output);
  std::vector<int64_t> row_off(chunk * ho);

  for (int64_t n0 = 0; n0 < batch; n0 += chunk) {
    const int64_t count = std::min(chunk, batch - n0);
    pad_images(pl, input, n0, count, xp);
    // grad_output packed per (group, block): [image][row][column][nr], zero past the channels.
    at::parallel_for(0, p.groups * blocks * count * ho, grain_for(wo * nr), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t gb = i / (count * ho), nh = i % (count * ho);
        const int64_t g = gb / blocks, b = gb % blocks, n = nh / ho, oh = nh % ho;
        float* dst = gp + gb * go_block + nh * wo * nr;
        const float* src = go + (n0 + n) * gs.n + (g * pl.cout + b * nr) * gs.c + oh * gs.h;
        const int64_t valid = std::min(nr, pl.cout - b * nr);
        for (int64_t ow = 0; ow < wo; ++ow, dst += nr) {
          for (int64_t j = 0; j < valid; ++j) dst[j] = src[ow * gs.w + j * gs.c];
          for (int64_t j = valid; j < nr; ++j) dst[j] = 0.0f;
        }
      }
    });
    for (int64_t i = 0; i < count * ho; ++i) row_off[i] = (i / ho) * image_floats + (i % ho) * p.stride_h * pl.wp * pl.cx;
    const int64_t work = count * ho * wo * mr * nr;
    at::parallel_for(0, static_cast<int64_t>(tasks.size()), grain_for(work), [&](int64_t t0, int64_t t1) {
      alignas(64) float buf[kMaxRows * 64];
      for (int64_t t = t0; t < t1; ++t) {
        const auto [g, ri, r0, b] = tasks[t];
        const Run& run = runs[ri];
        const int m = static_cast<int>(std::min(mr, run.len - r0));
        const int nvalid = static_cast<int>(std::min(nr, pl.cout - b * nr));
        k.tile[m - 1](xp + run.off + g * cin + r0, 1, row_off.data(), count * ho, wo,
                      p.stride_w * pl.cx, gp + (g * blocks + b) * go_block, wo * nr, nullptr, buf,
                      nr, nvalid);
        for (int i = 0; i < m; ++i) {
          // Row r0 + i of the run: weight entry (c, kh, kw + q) with q * cin + c = r0 + i.
          const int64_t q = (r0 + i) / cin, c = (r0 + i) % cin;
          const int64_t tap = run.kh * kw_n + run.kw + q;
          for (int j = 0; j < nvalid; ++j) {
            float& dst = acc[((g * pl.cout + b * nr + j) * cin + c) * taps + tap];
            dst = n0 == 0 ? buf[i * nr + j] : dst + buf[i * nr + j];
          }
        }
      }
    });
  }
  float* gw = grad_weight.mutable_data_ptr<float>();
  const Strides4 ws = strides4(grad_weight);
  at::parallel_for(0, p.out_channels, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t c = 0; c < cin; ++c)
        for (int64_t t = 0; t < taps; ++t)
          gw[o * ws.n + c * ws.c + (t / kw_n) * ws.h + (t % kw_n) * ws.w] = acc[(o * cin + c) * taps + t];
  });
}

bool dgrad_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  return dtype == at::kFloat && dgrad_phases_applies(p);
}

// The most taps of one stride phase.
int64_t phase_taps(const Conv2dParams& p) {
  return ((p.kernel_h + p.stride_h - 1) / p.stride_h) * ((p.kernel_w + p.stride_w - 1) / p.stride_w);
}

// Measured as fprop_preferred (Zen 4, AVX-512, 2 threads), against gemm_col2im, gemm_im2col and
// dgrad_phases: channels_last grad_input with a phase's reduction (taps x C_out per group) up to
// 512 is the fastest of the four (U-Net 512->256 2x2 s2 1.1x, FCN-8s 21->21 4x4 s2 1.4-3.6x,
// 1x1 layers 64..1024 channels 1.0-1.2x, 64->128 3x3 s2 1.3-1.5x, 24->24 5x5 1.3-2.8x) but not
// at 2048 (DCGAN 512->256 4x4 s2 2-2.5x slower). NCHW only where a phase has several taps
// (FCN-8s 1.3-2.8x, 24->24 5x5 1.3-1.5x, 3x3 s2 0.75-1.1x); a 1x1 or stride == kernel layer
// (one tap per phase) runs 1.1-1.8x faster as a GEMM there. At least 16 grad_input channels
// per group (AlexNet conv1's 3 ran 4-8x slower than gemm_col2im).
bool dgrad_preferred(const Conv2dParams& p, const at::Tensor& grad_input) {
  const int64_t reduction = phase_taps(p) * p.out_channels_per_group();
  if (is_depthwise(p) || p.in_channels_per_group() < 16) return false;
  return is_channels_last(grad_input) ? reduction <= 512 : phase_taps(p) >= 4 && reduction <= 640;
}

void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input) {
  const int64_t sh = p.stride_h, sw = p.stride_w;
  std::vector<PhaseDim> dh(sh), dw(sw);
  for (int64_t r = 0; r < sh; ++r) dh[r] = phase_dim(r, sh, p.pad_h, p.kernel_h, p.in_height);
  for (int64_t r = 0; r < sw; ++r) dw[r] = phase_dim(r, sw, p.pad_w, p.kernel_w, p.in_width);
  // Padding: a phase reads grad_output rows q0 - (taps - 1) .. q0 + count - 1.
  auto extent = [](const std::vector<PhaseDim>& d, int64_t size, int64_t& lo, int64_t& hi) {
    lo = 0;
    hi = size;
    for (const PhaseDim& x : d) {
      if (x.count == 0 || x.taps == 0) continue;
      lo = std::max(lo, x.taps - 1 - x.q0);
      hi = std::max(hi, x.q0 + x.count);
    }
  };
  Plan pl;
  pl.src_h = p.out_height;
  pl.src_w = p.out_width;
  int64_t hi_h, hi_w;
  extent(dh, p.out_height, pl.top, hi_h);
  extent(dw, p.out_width, pl.left, hi_w);
  pl.hp = pl.top + hi_h;
  pl.wp = pl.left + hi_w;
  pl.cx = p.out_channels;
  pl.groups = p.groups;
  pl.cin = p.out_channels_per_group();
  pl.cout = p.in_channels_per_group();
  pl.transposed = true;
  const Strides4 is = strides4(grad_input);
  for (int64_t rh = 0; rh < sh; ++rh)
    for (int64_t rw = 0; rw < sw; ++rw) {
      const PhaseDim &a = dh[rh], &c = dw[rw];
      if (a.count == 0 || c.count == 0) continue;
      Variant var;
      var.rows = a.count;
      var.cols = c.count;
      var.x_base = ((a.q0 + pl.top) * pl.wp + c.q0 + pl.left) * pl.cx;
      var.x_row = pl.wp * pl.cx;
      var.x_col = pl.cx;
      var.y_base = a.i0 * is.h + c.i0 * is.w;
      var.y_row = sh * is.h;
      var.y_col = sw * is.w;
      for (int64_t th = 0; th < a.taps; ++th)
        for (int64_t tw = 0; tw < c.taps; ++tw) {
          var.off.push_back(-(th * pl.wp + tw) * pl.cx);
          var.taps.emplace_back(rh + th * sh, rw + tw * sw);
        }
      var.run_off = var.off;
      var.run_cin = pl.cin;
      pl.variants.push_back(std::move(var));
    }
  run(pl, grad_output, weight, nullptr, grad_input);
}

}  // namespace convpool::cpu::direct
