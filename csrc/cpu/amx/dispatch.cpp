// Convolution on AMX tiles (amx.h): a direct convolution whose reduction steps are 32 bf16
// channels of one tap, multiplied on AMX's TDPBF16PS (kernels.h, avx512_amx.cpp).
//
// The operand is a zero-padded channels-last bf16 copy of the input, split by stride phase (a
// space-to-depth copy): phase (r_h, r_w) holds the padded pixels (i * s_h + r_h, j * s_w + r_w)
// as an image of H_c x W_c pixels. Tap (kh, kw) of output pixel (oh, ow) reads phase
// ((kh d_h) mod s_h, (kw d_w) mod s_w) at pixel (oh + kh d_h / s_h, ow + kw d_w / s_w), so with
// the output numbered over W_c columns ("virtual" pixels j = oh * W_c + ow, the columns ow >= W_out
// computed and discarded) every tap reads 16 consecutive output pixels as one strided tile load,
// whatever the stride and dilation. Each group's channels are padded with zeros to a multiple of
// 32 (one reduction step); the weight is packed per call into VNNI pairs, [group][32-channel
// block][tap][step][16 rows x 16 channels x 2], output channels past the group's zero.
//
// One task is a block of 32 virtual pixels of one image and group, for a run of 32-channel
// blocks whose packed weight stays in L2 (kWeightBytes). Each output element is computed by one
// block in a fixed order (taps, then steps; AMX sums each pair and accumulates in float), so
// results do not depend on the thread count. Workspace: the packed weight and the copy, for
// chunks of images of about kChunkElements each (one image when it is larger).
#include "amx.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../../shape.h"
#include "../conv_gemm.h"
#include "../depthwise/depthwise.h"
#include "../helpers.h"
#include "../isa.h"
#include "kernels.h"

namespace convpool::cpu::amx {
namespace {

// Copy elements per chunk of images (16 MiB of bf16), and the packed weight one task walks.
constexpr int64_t kChunkElements = int64_t(1) << 23;
constexpr int64_t kWeightBytes = int64_t(1) << 20;
// A task's pixel blocks (their float sums live in the task's buffer between runs of taps), and
// the packed weight of one run of taps, read once per block from L1.
constexpr int64_t kTaskBlocks = 8;
constexpr int64_t kL1WeightBytes = int64_t(32) << 10;

struct Plan {
  int64_t cg, cog, steps, cp, cx;  // per group: channels in, out; steps of 32; padded; copy's channels
  int64_t hc, wc;                  // a phase image
  int64_t phase, image;            // elements of a phase image, of an image's phases
  int64_t pixels, blocks;          // virtual pixels per image (H_out x W_c), their 32-blocks
  int64_t cblocks;                 // 32-channel blocks of output per group
  std::vector<int64_t> off;        // per tap: offset in the copy
};

Plan make_plan(const Conv2dParams& p) {
  Plan pl;
  pl.cg = p.in_channels_per_group();
  pl.cog = p.out_channels_per_group();
  pl.steps = (pl.cg + kStep - 1) / kStep;
  pl.cp = pl.steps * kStep;
  pl.cx = p.groups * pl.cp;
  // Padded rows / columns any output reads, then per phase.
  const int64_t h_need = (p.out_height - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
  const int64_t w_need = (p.out_width - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  pl.hc = (h_need + p.stride_h - 1) / p.stride_h;
  pl.wc = (w_need + p.stride_w - 1) / p.stride_w;
  pl.phase = pl.hc * pl.wc * pl.cx;
  pl.image = p.stride_h * p.stride_w * pl.phase;
  pl.pixels = p.out_height * pl.wc;
  pl.blocks = (pl.pixels + kBlockRows - 1) / kBlockRows;
  pl.cblocks = (pl.cog + kBlockCols - 1) / kBlockCols;
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t dh = kh * p.dilation_h, dw = kw * p.dilation_w;
      pl.off.push_back(((dh % p.stride_h) * p.stride_w + dw % p.stride_w) * pl.phase +
                       ((dh / p.stride_h) * pl.wc + dw / p.stride_w) * pl.cx);
    }
  return pl;
}

// The phase copy of images [n0, n0 + count) of `src` (zeros around and past each group's
// channels), then zeros to `total` elements (what the last blocks read past the images).
void copy_images(const Conv2dParams& p, const Plan& pl, const at::Tensor& src, int64_t n0,
                 int64_t count, int64_t total, uint16_t* dst) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src.const_data_ptr<c10::BFloat16>());
  const Strides4 ss = strides4(src);
  const int64_t sh = p.stride_h, sw = p.stride_w;
  const int64_t rows = pl.hc * sh;  // padded rows of an image, over its phases
  at::parallel_for(0, count * rows, grain_for(pl.wc * sw * pl.cx), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / rows, ip = r % rows, ih = ip - p.pad_h;
      uint16_t* image = dst + n * pl.image + (ip % sh) * sw * pl.phase + (ip / sh) * pl.wc * pl.cx;
      const bool row_inside = ih >= 0 && ih < p.in_height;
      const uint16_t* row = s + (n0 + n) * ss.n + ih * ss.h;
      for (int64_t jp = 0; jp < pl.wc * sw; ++jp) {
        uint16_t* px = image + (jp % sw) * pl.phase + (jp / sw) * pl.cx;
        const int64_t iw = jp - p.pad_w;
        if (!row_inside || iw < 0 || iw >= p.in_width) {
          std::memset(px, 0, sizeof(uint16_t) * pl.cx);
          continue;
        }
        const uint16_t* in = row + iw * ss.w;
        for (int64_t g = 0; g < p.groups; ++g) {
          uint16_t* out = px + g * pl.cp;
          const uint16_t* from = in + g * pl.cg * ss.c;
          if (ss.c == 1) {
            std::memcpy(out, from, sizeof(uint16_t) * pl.cg);
          } else {
            for (int64_t c = 0; c < pl.cg; ++c) out[c] = from[c * ss.c];
          }
          std::memset(out + pl.cg, 0, sizeof(uint16_t) * (pl.cp - pl.cg));
        }
      }
    }
  });
  std::memset(dst + count * pl.image, 0, sizeof(uint16_t) * (total - count * pl.image));
}

// The weight in VNNI pairs: [group][channel block][tap][step][half][16 rows][16 channels][2].
// Per block, its 32 output channels are first laid out [channel][tap][C_in padded] (through the
// weight's strides, zeros past the group's channels), then each step of each tap is two 16 x 16
// transposes of 32-bit pairs (pack_step).
void pack_weight(const Conv2dParams& p, const Plan& pl, const at::Tensor& weight, uint16_t* dst) {
  const uint16_t* w = reinterpret_cast<const uint16_t*>(weight.const_data_ptr<c10::BFloat16>());
  const Strides4 ws = strides4(weight);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t per_block = taps * pl.steps * kStep * kBlockCols;
  at::parallel_for(0, p.groups * pl.cblocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint16_t> rows(kBlockCols * taps * pl.cp, 0);
    for (int64_t gb = b0; gb < b1; ++gb) {
      const int64_t g = gb / pl.cblocks, cb = gb % pl.cblocks;
      const int64_t cols = std::min<int64_t>(kBlockCols, pl.cog - cb * kBlockCols);
      for (int64_t j = 0; j < kBlockCols; ++j)
        for (int64_t t = 0; t < taps; ++t) {
          uint16_t* row = rows.data() + (j * taps + t) * pl.cp;
          if (j >= cols) {
            std::memset(row, 0, sizeof(uint16_t) * pl.cp);
            continue;
          }
          const uint16_t* from = w + (g * pl.cog + cb * kBlockCols + j) * ws.n +
                                 (t / p.kernel_w) * ws.h + (t % p.kernel_w) * ws.w;
          for (int64_t c = 0; c < pl.cg; ++c) row[c] = from[c * ws.c];
        }
      uint16_t* out = dst + gb * per_block;
      const uint16_t* step_rows[kBlockCols];
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t st = 0; st < pl.steps; ++st, out += kStep * kBlockCols) {
          for (int64_t j = 0; j < kBlockCols; ++j) step_rows[j] = rows.data() + (j * taps + t) * pl.cp + st * kStep;
          avx512_amx::pack_step(step_rows, out);
        }
    }
  });
}

// The input already is its own phase copy: one group of a multiple of 32 channels, no padding,
// stride 1, dense channels_last images one after the other. A block then reads at most 32
// pixels plus the largest tap's offset from its start, which stays inside the next image.
bool reads_in_place(const Conv2dParams& p, const Plan& pl, const at::Tensor& input) {
  const Strides4 s = strides4(input);
  return p.groups == 1 && pl.cg == pl.cp && p.pad_h == 0 && p.pad_w == 0 && p.stride_h == 1 &&
         p.stride_w == 1 && pl.hc == p.in_height && pl.wc == p.in_width && s.c == 1 &&
         s.w == pl.cx && s.h == p.in_width * s.w && s.n == p.in_height * s.h &&
         pl.blocks * kBlockRows * pl.cx + pl.off.back() + kStep <= 2 * pl.image;
}

}  // namespace

bool fprop_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  // The kernel's counts are ints; a 2^31-tap kernel is far past any memory anyway.
  return dtype == at::kBFloat16 && p.kernel_h * p.kernel_w < (int64_t(1) << 24) &&
         p.in_channels_per_group() < (int64_t(1) << 30);
}

// Measured on the Intel Xeon with AMX (family 6 model 167 as the VM reports it), 2 threads,
// 2026-12-08 (run.py --quick --dtype bfloat16 --algorithms): against gemm_im2col (bf16 widened to
// float) it won every dense row of C_in >= 3 (AlexNet conv1, 3 channels padded to 32: 0.72 ms
// against 1.02 channels_last, 1.29 against 2.30 at batch 2; ResNet-50 1x1 64 -> 256: 0.18
// against 0.56) and lost with 1 channel padded to 32 (DeepBench speech1: 1.93 against 1.48). So:
// at most 16x the reduction in zero padding, and never depthwise (1 channel a group).
bool fprop_preferred(const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group();
  return !is_depthwise(p) && 16 * cg >= (cg + kStep - 1) / kStep * kStep;
}

void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output) {
  const Plan pl = make_plan(p);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t per_block = taps * pl.steps * kStep * kBlockCols;
  at::Tensor packed = at::empty({p.groups * pl.cblocks * per_block}, weight.options().dtype(at::kBFloat16));
  uint16_t* wpk = reinterpret_cast<uint16_t*>(packed.mutable_data_ptr<c10::BFloat16>());
  pack_weight(p, pl, weight, wpk);
  std::vector<float> b;
  if (bias) {
    const at::Tensor bf = bias->to(at::kFloat).contiguous();
    b.assign(bf.const_data_ptr<float>(), bf.const_data_ptr<float>() + p.out_channels);
  }
  const int64_t max_off = *std::max_element(pl.off.begin(), pl.off.end());
  const int64_t chunk = std::clamp<int64_t>(kChunkElements / std::max<int64_t>(1, pl.image), 1, p.batch);
  // The last block of the chunk reads 32 pixels from its start, at every tap.
  const int64_t total = std::max(chunk * pl.image,
                                 (chunk - 1) * pl.image + pl.blocks * kBlockRows * pl.cx + max_off) + kStep;
  at::Tensor copy = at::empty({total}, weight.options().dtype(at::kBFloat16));
  uint16_t* x = reinterpret_cast<uint16_t*>(copy.mutable_data_ptr<c10::BFloat16>());
  // Channel blocks per task run: their packed weight within kWeightBytes.
  // Runs of equal length: threads take contiguous ranges of tasks, so an odd short run would
  // leave one thread most of the work.
  const int64_t run_max = std::clamp<int64_t>(kWeightBytes / (2 * per_block), 1, pl.cblocks);
  const int64_t runs = (pl.cblocks + run_max - 1) / run_max;
  const int64_t run = (pl.cblocks + runs - 1) / runs;
  uint16_t* y = reinterpret_cast<uint16_t*>(output.mutable_data_ptr<c10::BFloat16>());
  const Strides4 ys = strides4(output);
  const int64_t work = run * kTaskBlocks * kBlockRows * kBlockCols * taps * pl.cp;
  const int64_t tap_run = std::clamp<int64_t>(kL1WeightBytes / (2 * pl.steps * kStep * kBlockCols), 1, taps);
  // Images [n0, n0 + count) of the operand `x` (the copy, or the input itself).
  auto compute = [&](const uint16_t* x, int64_t n0, int64_t count) {
    // Tasks: (group, run of channel blocks, image, kTaskBlocks pixel blocks), pixel blocks
    // innermost so a thread's consecutive tasks share the run's weight. Within a task, the
    // taps go in runs whose packed weight fits L1 (kL1WeightBytes), each run over all of the
    // task's pixel blocks, the sums kept in `c` between runs.
    const int64_t groups_of_blocks = (pl.blocks + kTaskBlocks - 1) / kTaskBlocks;
    const int64_t tasks = p.groups * runs * count * groups_of_blocks;
    at::parallel_for(0, tasks, grain_for(work, int64_t(1) << 22), [&](int64_t t0, int64_t t1) {
      avx512_amx::configure();
      alignas(64) float c[kTaskBlocks * kBlockRows * kBlockCols];
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t pg = t % groups_of_blocks, n = t / groups_of_blocks % count;
        const int64_t rr = t / (groups_of_blocks * count) % runs;
        const int64_t g = t / (groups_of_blocks * count * runs);
        const int64_t pb0 = pg * kTaskBlocks, pb1 = std::min(pl.blocks, pb0 + kTaskBlocks);
        const uint16_t* a = x + n * pl.image + g * pl.cp;
        for (int64_t cb = rr * run; cb < std::min(pl.cblocks, (rr + 1) * run); ++cb) {
          const uint16_t* wb = wpk + (g * pl.cblocks + cb) * per_block;
          for (int64_t tap0 = 0; tap0 < taps; tap0 += tap_run) {
            const int tn = static_cast<int>(std::min(tap_run, taps - tap0));
            for (int64_t pb = pb0; pb < pb1; ++pb)
              avx512_amx::block_32x32(a + pb * kBlockRows * pl.cx, pl.cx, pl.off.data() + tap0, tn,
                                      static_cast<int>(pl.steps), wb + tap0 * pl.steps * kStep * kBlockCols,
                                      c + (pb - pb0) * kBlockRows * kBlockCols, tap0 > 0);
          }
          const int64_t o0 = g * pl.cog + cb * kBlockCols;
          const int cols = static_cast<int>(std::min<int64_t>(kBlockCols, pl.cog - cb * kBlockCols));
          const float* bb = b.empty() ? nullptr : b.data() + o0;
          for (int64_t j = pb0 * kBlockRows; j < std::min(pl.pixels, pb1 * kBlockRows); ++j) {
            const int64_t oh = j / pl.wc, ow = j % pl.wc;
            if (ow >= p.out_width) continue;
            const float* row = c + (j - pb0 * kBlockRows) * kBlockCols;
            uint16_t* out = y + (n0 + n) * ys.n + oh * ys.h + ow * ys.w + o0 * ys.c;
            if (ys.c == 1) {
              avx512_amx::round_row(row, bb, cols, out);
            } else {
              for (int col = 0; col < cols; ++col) out[col * ys.c] = c10::BFloat16(row[col] + (bb ? bb[col] : 0.0f)).x;
            }
          }
        }
      }
      avx512_amx::release();
    });
  };
  int64_t n_begin = 0;
  if (reads_in_place(p, pl, input)) {
    // Every image but the last straight from the input: its blocks' reads past its end land in
    // the next image (and only feed discarded pixels). The last one goes through the copy.
    n_begin = p.batch - 1;
    compute(reinterpret_cast<const uint16_t*>(input.const_data_ptr<c10::BFloat16>()), 0, n_begin);
  }
  for (int64_t n0 = n_begin; n0 < p.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, p.batch - n0);
    copy_images(p, pl, input, n0, count, total, x);
    compute(x, n0, count);
  }
}

bool dgrad_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  return conv_gemm::dgrad_as_fprop(p) && fprop_applies(conv_gemm::dgrad_as_fprop_params(p), dtype);
}

bool dgrad_preferred(const Conv2dParams& p) {
  return fprop_preferred(conv_gemm::dgrad_as_fprop_params(p));
}

void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input) {
  fprop(conv_gemm::dgrad_as_fprop_params(p), grad_output, conv_gemm::dgrad_as_fprop_weight(p, weight),
        nullptr, grad_input);
}

}  // namespace convpool::cpu::amx
