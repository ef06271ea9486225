// Convolution on AMX tiles (amx.h): a direct convolution whose reduction steps are 32 bf16
// values, the channels of one tap (or, folded, of consecutive taps of a kernel row: fold_runs),
// multiplied on AMX's TDPBF16PS (kernels.h, avx512_amx.cpp).
//
// The operand is a zero-padded channels-last bf16 copy of the input, split by stride phase (a
// space-to-depth copy): phase (r_h, r_w) holds the padded pixels (i * s_h + r_h, j * s_w + r_w)
// as an image of H_c x W_c pixels. Tap (kh, kw) of output pixel (oh, ow) reads phase
// ((kh d_h) mod s_h, (kw d_w) mod s_w) at pixel (oh + kh d_h / s_h, ow + kw d_w / s_w), so with
// the output numbered over W_c columns ("virtual" pixels j = oh * W_c + ow, the columns ow >= W_out
// computed and discarded) every tap reads 16 consecutive output pixels as one strided tile load,
// whatever the stride and dilation. Each group's channels are padded with zeros to a multiple of
// 32 (one reduction step; to 2 when folded); the weight is packed per call into VNNI pairs, [group][32-channel
// block][tap][step][16 rows x 16 channels x 2], output channels past the group's zero.
//
// fprop: one task is kTaskBlocks blocks of 32 virtual pixels of one image and group, for a run of
// 32-channel blocks whose packed weight stays in L2 (kWeightBytes). Each output element is
// computed by one block in a fixed order (taps, then steps; AMX sums each pair and accumulates in
// float), so results do not depend on the thread count. Workspace: the packed weight and the
// copy, for chunks of images of about kChunkElements each (one image when it is larger).
// dgrad (stride 1) is this fprop with the weight read through a flipped view; wgrad, the same
// copy re-paired by pixels, at its definition below.
#include "amx.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
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

// One reduction run of the kernel ("tap" in its comments): n taps of one kernel row kh, columns
// kw0, kw0 + s_w, ..., which lie side by side in one phase image (a folded run) or one tap (n = 1).
struct Entry {
  int64_t kh, kw0, n;
};

struct Plan {
  int64_t cg, cog, steps, cp, cx;  // per group: channels in, out; steps of 32; copy channels per group, per pixel
  bool fold;                       // entries are folded runs of taps (fold_runs)
  int64_t hc, wc;                  // a phase image
  int64_t phase, image;            // elements of a phase image, of an image's phases
  int64_t pixels, blocks;          // virtual pixels per image (H_out x W_c), their 32-blocks
  int64_t cblocks;                 // 32-channel blocks of output per group
  std::vector<Entry> entries;
  std::vector<int64_t> off;        // per entry: offset in the copy
};

// Few input channels padded to 32 would waste most of each step: fold instead. One group, an
// undilated row, so the taps of a kernel row that share a stride phase are consecutive pixels of
// that phase image; a step then holds (a pixel's channels padded to 2) x (consecutive taps), the
// pixels past the run multiplied by zero weights (which is why the copy must hold no inf or NaN:
// fprop falls back to the unfolded plan where it does).
bool fold_runs(const Conv2dParams& p) {
  return p.groups == 1 && p.dilation_w == 1 && p.kernel_w > 1 && p.in_channels_per_group() <= 16;
}

Plan make_plan(const Conv2dParams& p, bool fold = false) {
  Plan pl;
  pl.cg = p.in_channels_per_group();
  pl.cog = p.out_channels_per_group();
  pl.fold = fold;
  if (fold) {
    pl.cp = pl.cx = (pl.cg + 1) / 2 * 2;
    int64_t longest = 0;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh)
      for (int64_t rw = 0; rw < std::min(p.stride_w, p.kernel_w); ++rw) {
        pl.entries.push_back({kh, rw, (p.kernel_w - 1 - rw) / p.stride_w + 1});
        longest = std::max(longest, pl.entries.back().n * pl.cx);
      }
    pl.steps = (longest + kStep - 1) / kStep;
  } else {
    pl.steps = (pl.cg + kStep - 1) / kStep;
    pl.cp = pl.steps * kStep;
    pl.cx = p.groups * pl.cp;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh)
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) pl.entries.push_back({kh, kw, 1});
  }
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
  for (const Entry& e : pl.entries) {
    const int64_t dh = e.kh * p.dilation_h, dw = e.kw0 * p.dilation_w;
    pl.off.push_back(((dh % p.stride_h) * p.stride_w + dw % p.stride_w) * pl.phase +
                     ((dh / p.stride_h) * pl.wc + dw / p.stride_w) * pl.cx);
  }
  return pl;
}

// The phase copy of images [n0, n0 + count) of `src` (zeros around and past each group's
// channels), then zeros to `total` elements (what the last blocks read past the images). Returns
// false if a value copied is inf or NaN (all exponent bits set).
bool copy_images(const Conv2dParams& p, const Plan& pl, const at::Tensor& src, int64_t n0,
                 int64_t count, int64_t total, uint16_t* dst) {
  std::atomic<bool> finite{true};
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src.const_data_ptr<c10::BFloat16>());
  const Strides4 ss = strides4(src);
  const int64_t sh = p.stride_h, sw = p.stride_w;
  const int64_t rows = pl.hc * sh;  // padded rows of an image, over its phases
  at::parallel_for(0, count * rows, grain_for(pl.wc * sw * pl.cx), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / rows, ip = r % rows, ih = ip - p.pad_h;
      uint16_t* image = dst + n * pl.image + (ip % sh) * sw * pl.phase + (ip / sh) * pl.wc * pl.cx;
      const bool row_inside = ih >= 0 && ih < p.in_height;
      const uint16_t* row = row_inside ? s + (n0 + n) * ss.n + ih * ss.h : nullptr;
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
          bool special = false;  // every exponent bit set: inf or NaN
          for (int64_t c = 0; c < pl.cg; ++c) special |= (out[c] & 0x7F80) == 0x7F80;
          if (special) finite.store(false, std::memory_order_relaxed);
        }
      }
    }
  });
  std::memset(dst + count * pl.image, 0, sizeof(uint16_t) * (total - count * pl.image));
  return finite.load();
}

// Where the fprop weight's element (output channel o of group g, input channel c, tap kh, kw)
// lies: w + g * group + o * out + c * in + kh * h + kw * w (signed: dgrad reads the conv weight
// with its channels swapped and its taps flipped, in place).
struct WeightView {
  const uint16_t* base;
  int64_t group, out, in, h, w;
};

WeightView fprop_view(const Conv2dParams& p, const at::Tensor& weight) {
  const Strides4 s = strides4(weight);
  return {reinterpret_cast<const uint16_t*>(weight.const_data_ptr<c10::BFloat16>()),
          p.out_channels_per_group() * s.n, s.n, s.c, s.h, s.w};
}

// dgrad of `p` as the fprop dgrad_as_fprop_params(p): its output channel o of group g is input
// channel o of the conv, its input channel c the conv's output channel g * C_out/groups + c,
// its tap (kh, kw) the conv's (kH - 1 - kh, kW - 1 - kw).
WeightView dgrad_view(const Conv2dParams& p, const at::Tensor& weight) {
  const Strides4 s = strides4(weight);
  return {reinterpret_cast<const uint16_t*>(weight.const_data_ptr<c10::BFloat16>()) +
              (p.kernel_h - 1) * s.h + (p.kernel_w - 1) * s.w,
          p.out_channels_per_group() * s.n, s.c, s.n, -s.h, -s.w};
}

// The weight in VNNI pairs: [group][channel block][tap][step][half][16 rows][16 channels][2].
// Per block, its 32 output channels are first laid out [channel][entry][steps x 32] (through the
// view, zeros past the group's channels and a folded run's taps), then each step of each entry is
// two 16 x 16 transposes of 32-bit pairs (pack_step).
void pack_weight(const Conv2dParams& p, const Plan& pl, const WeightView& wv, uint16_t* dst) {
  const int64_t taps = static_cast<int64_t>(pl.entries.size());
  const int64_t kdim = pl.steps * kStep;  // reduction elements of an entry
  const int64_t per_block = taps * kdim * kBlockCols;
  at::parallel_for(0, p.groups * pl.cblocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint16_t> rows(kBlockCols * taps * kdim, 0);
    for (int64_t gb = b0; gb < b1; ++gb) {
      const int64_t g = gb / pl.cblocks, cb = gb % pl.cblocks;
      const int64_t cols = std::min<int64_t>(kBlockCols, pl.cog - cb * kBlockCols);
      // rows[j][t][k]; the innermost loop runs along the smaller stride of the view (input
      // channels for a conv weight, output channels for dgrad's swapped view). A folded entry's
      // k = q * cx + c is channel c of its q-th tap.
      const uint16_t* block = wv.base + g * wv.group + cb * kBlockCols * wv.out;
      auto tap_at = [&](int64_t kh, int64_t kw) { return kh * wv.h + kw * wv.w; };
      std::fill(rows.begin(), rows.end(), uint16_t(0));
      if (pl.fold) {
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t t = 0; t < taps; ++t) {
            const Entry& e = pl.entries[t];
            uint16_t* row = rows.data() + (j * taps + t) * kdim;
            for (int64_t q = 0; q < e.n; ++q) {
              const uint16_t* from = block + j * wv.out + tap_at(e.kh, e.kw0 + q * p.stride_w);
              for (int64_t c = 0; c < pl.cg; ++c) row[q * pl.cx + c] = from[c * wv.in];
            }
          }
      } else if (std::abs(wv.in) <= std::abs(wv.out)) {
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t t = 0; t < taps; ++t) {
            uint16_t* row = rows.data() + (j * taps + t) * kdim;
            const uint16_t* from = block + j * wv.out + tap_at(pl.entries[t].kh, pl.entries[t].kw0);
            for (int64_t c = 0; c < pl.cg; ++c) row[c] = from[c * wv.in];
          }
      } else {
        for (int64_t t = 0; t < taps; ++t)
          for (int64_t c = 0; c < pl.cg; ++c) {
            const uint16_t* from = block + c * wv.in + tap_at(pl.entries[t].kh, pl.entries[t].kw0);
            uint16_t* to = rows.data() + t * kdim + c;
            for (int64_t j = 0; j < cols; ++j) to[j * taps * kdim] = from[j * wv.out];
          }
      }
      uint16_t* out = dst + gb * per_block;
      const uint16_t* step_rows[kBlockCols];
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t st = 0; st < pl.steps; ++st, out += kStep * kBlockCols) {
          for (int64_t j = 0; j < kBlockCols; ++j) step_rows[j] = rows.data() + (j * taps + t) * kdim + st * kStep;
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
         pl.blocks * kBlockRows * pl.cx + *std::max_element(pl.off.begin(), pl.off.end()) + kStep <=
             2 * pl.image;
}

}  // namespace


// Multiply-adds the kernel computes per output element over the ones the convolution has: the
// zeros of the channel padding (and, folded, of the runs' last steps). make_plan's arithmetic,
// without its allocations (this runs on every call's selection).
double padding_waste(const Conv2dParams& p, bool fold) {
  const int64_t cg = p.in_channels_per_group();
  double computed;
  if (fold) {
    const int64_t run = ((p.kernel_w - 1) / p.stride_w + 1) * ((cg + 1) / 2 * 2);
    computed = static_cast<double>(p.kernel_h * std::min(p.stride_w, p.kernel_w)) *
               ((run + kStep - 1) / kStep * kStep);
  } else {
    computed = static_cast<double>(p.kernel_h * p.kernel_w) * ((cg + kStep - 1) / kStep * kStep);
  }
  return computed / static_cast<double>(cg * p.kernel_h * p.kernel_w);
}

// Measured on the Intel Xeon with AMX (family 6 model 167 as the VM reports it), 2 threads,
// 2026-12-08 (run.py --quick --dtype bfloat16 --algorithms): against gemm_im2col (bf16 widened to
// float) it won every dense row with little padding (ResNet-50 1x1 64 -> 256: 0.18 ms against
// 0.56) and, unfolded, lost with 1 channel padded to 32 (DeepBench speech1: 1.93 against 1.48).
// Folded (fold_runs), it won every first layer measured, batch 2 unless said, channels_last /
// NCHW: AlexNet conv1 0.76 / 0.82 ms against 2.28 / 1.90, ResNet stem 1.04 / 1.15 against
// 4.00 / 3.34, DeepBench speech1 2.18 / 2.22 against 3.23 / 3.17, 3 -> 64 3x3 at 32x32 batch 8
// 0.16 / 0.19 against 0.34 / 0.36 (waste 3.6-3.9x). So: at most 16x the multiply-adds in zero
// padding, and never depthwise.
// The kernel's counts are ints (the bounds keep taps and steps far below 2^31); and the copy and
// the packed weight grow with the padding, so no depthwise conv and at most 32x waste (autotuning
// runs every applicable entry on the call's own tensors).
constexpr double kMaxApplicableWaste = 32.0;
bool applies(const Conv2dParams& p, c10::ScalarType dtype, bool fold) {
  return dtype == at::kBFloat16 && p.kernel_h * p.kernel_w < (int64_t(1) << 24) &&
         p.in_channels_per_group() < (int64_t(1) << 30) && !is_depthwise(p) &&
         padding_waste(p, fold) <= kMaxApplicableWaste;
}

bool fprop_applies(const Conv2dParams& p, c10::ScalarType dtype) { return applies(p, dtype, fold_runs(p)); }

constexpr double kMaxWaste = 16.0;
bool fprop_preferred(const Conv2dParams& p) {
  return !is_depthwise(p) && padding_waste(p, fold_runs(p)) <= kMaxWaste;
}

namespace {

// fprop of `p` with the weight `wv` (fprop, or dgrad as an fprop). A folded plan gives up (false,
// the output partly written) where the input holds inf or NaN.
bool convolve(const Conv2dParams& p, const at::Tensor& input, const WeightView& wv,
              const at::Tensor* bias, at::Tensor& output, bool fold) {
  const Plan pl = make_plan(p, fold);
  const int64_t taps = static_cast<int64_t>(pl.entries.size());
  const int64_t per_block = taps * pl.steps * kStep * kBlockCols;
  at::Tensor packed = at::empty({p.groups * pl.cblocks * per_block}, input.options().dtype(at::kBFloat16));
  uint16_t* wpk = reinterpret_cast<uint16_t*>(packed.mutable_data_ptr<c10::BFloat16>());
  pack_weight(p, pl, wv, wpk);
  std::vector<float> b;
  if (bias) {
    const at::Tensor bf = bias->to(at::kFloat).contiguous();
    b.assign(bf.const_data_ptr<float>(), bf.const_data_ptr<float>() + p.out_channels);
  }
  const int64_t max_off = *std::max_element(pl.off.begin(), pl.off.end());
  const int64_t chunk = std::clamp<int64_t>(kChunkElements / std::max<int64_t>(1, pl.image), 1, p.batch);
  // The last block of the chunk reads 32 pixels from its start, at every tap.
  const int64_t total = std::max(chunk * pl.image, (chunk - 1) * pl.image + pl.blocks * kBlockRows * pl.cx +
                                                     max_off + pl.steps * kStep);
  at::Tensor copy = at::empty({total}, input.options().dtype(at::kBFloat16));
  uint16_t* x = reinterpret_cast<uint16_t*>(copy.mutable_data_ptr<c10::BFloat16>());
  // Channel blocks per task run: their packed weight within kWeightBytes.
  // Runs of equal length: threads take contiguous ranges of tasks, so an odd short run would
  // leave one thread most of the work.
  const int64_t run_max = std::clamp<int64_t>(kWeightBytes / (2 * per_block), 1, pl.cblocks);
  const int64_t runs = (pl.cblocks + run_max - 1) / run_max;
  const int64_t run = (pl.cblocks + runs - 1) / runs;
  uint16_t* y = reinterpret_cast<uint16_t*>(output.mutable_data_ptr<c10::BFloat16>());
  const Strides4 ys = strides4(output);
  const int64_t work = run * kTaskBlocks * kBlockRows * kBlockCols * taps * pl.steps * kStep;
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
          const int64_t j_end = std::min(pl.pixels, pb1 * kBlockRows);
          if (ys.c == 1) {  // channels innermost: a pixel's channels are one run
            for (int64_t j = pb0 * kBlockRows; j < j_end; ++j) {
              const int64_t oh = j / pl.wc, ow = j % pl.wc;
              if (ow >= p.out_width) continue;
              avx512_amx::round_row(c + (j - pb0 * kBlockRows) * kBlockCols, bb, cols,
                                    y + (n0 + n) * ys.n + oh * ys.h + ow * ys.w + o0);
            }
          } else {  // runs of up to 32 pixels of one output row, a channel at a time
            for (int64_t j = pb0 * kBlockRows; j < j_end;) {
              const int64_t oh = j / pl.wc, ow = j % pl.wc;
              if (ow >= p.out_width) {
                j += pl.wc - ow;
                continue;
              }
              const int len = static_cast<int>(std::min({int64_t(32), p.out_width - ow, j_end - j}));
              const float* first = c + (j - pb0 * kBlockRows) * kBlockCols;
              uint16_t* out = y + (n0 + n) * ys.n + oh * ys.h + ow * ys.w + o0 * ys.c;
              for (int col = 0; col < cols; ++col) {
                const float bias_c = bb ? bb[col] : 0.0f;
                if (ys.w == 1) {
                  avx512_amx::round_column(first + col, kBlockCols, bias_c, len, out + col * ys.c);
                } else {
                  for (int i = 0; i < len; ++i)
                    out[col * ys.c + i * ys.w] = c10::BFloat16(first[i * kBlockCols + col] + bias_c).x;
                }
              }
              j += len;
            }
          }
        }
      }
      avx512_amx::release();
    });
  };
  int64_t n_begin = 0;
  if (!fold && reads_in_place(p, pl, input)) {
    // Every image but the last straight from the input: its blocks' reads past its end land in
    // the next image (and only feed discarded pixels). The last one goes through the copy.
    n_begin = p.batch - 1;
    compute(reinterpret_cast<const uint16_t*>(input.const_data_ptr<c10::BFloat16>()), 0, n_begin);
  }
  for (int64_t n0 = n_begin; n0 < p.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, p.batch - n0);
    if (!copy_images(p, pl, input, n0, count, total, x) && fold) return false;
    compute(x, n0, count);
  }
  return true;
}

}  // namespace

void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output) {
  const WeightView wv = fprop_view(p, weight);
  if (fold_runs(p) && convolve(p, input, wv, bias, output, true)) return;
  convolve(p, input, wv, bias, output, false);
}

// wgrad: per tap, grad_weight[o][c] = sum over pixels of grad_output[pixel][o] * x[pixel at the
// tap][c], the pixels the reduction: rows o (A: grad_output packed [image][group][o][virtual
// pixel], zeros in the virtual columns and from the image's last pixel to the end of its last
// block), columns c (B: the phase
// copy re-paired into VNNI pairs of consecutive pixels per 32-channel block, once starting at even
// pixels and once at odd ones, so a tap at any pixel offset reads one of them as a tile). Tasks are (group,
// tap, 32 output channels, 32 input channels); each sums its block image by image, pixels in
// order, in float (kept in `acc` across chunks of images): the same order for any thread count.
// The virtual pixels multiply real input values by zero, so an input holding inf or NaN runs
// gemm_im2col instead (0 * inf would be NaN where PyTorch's sum has no such term).
void wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
           at::Tensor& grad_weight) {
  const Plan pl = make_plan(p);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t ppad = pl.blocks * kBlockRows;           // virtual pixels of an image, padded
  const int64_t image_px = pl.image / pl.cx;            // pixels of an image's phase copy
  int64_t max_px = 0;
  for (int64_t o : pl.off) max_px = std::max(max_px, o / pl.cx);
  const int64_t pairs = (ppad + max_px) / 2 + 1;         // pairs a tap of an image can reach
  const int64_t cogp = pl.cblocks * kBlockCols;
  // Per image: its copy and its pairs at both parities.
  const int64_t chunk = std::clamp<int64_t>(kChunkElements / std::max<int64_t>(1, pl.image + pairs * 4 * pl.cx), 1, p.batch);
  const int64_t total = std::max(chunk * pl.image, ((chunk - 1) * image_px + 2 * pairs + 2) * pl.cx) + kStep;
  const auto bf16 = input.options().dtype(at::kBFloat16);
  at::Tensor copy = at::empty({total}, bf16);
  at::Tensor paired = at::empty({2 * chunk * pairs * pl.cx * 2}, bf16);  // even, odd: [cb][n][m][32][2]
  at::Tensor go = at::empty({p.groups * cogp * chunk * ppad}, bf16);
  at::Tensor acc = at::empty({p.groups * taps * cogp * pl.cp}, input.options().dtype(at::kFloat));
  uint16_t* x = reinterpret_cast<uint16_t*>(copy.mutable_data_ptr<c10::BFloat16>());
  uint16_t* pr = reinterpret_cast<uint16_t*>(paired.mutable_data_ptr<c10::BFloat16>());
  uint16_t* gp = reinterpret_cast<uint16_t*>(go.mutable_data_ptr<c10::BFloat16>());
  float* sums = acc.mutable_data_ptr<float>();
  const uint16_t* gsrc = reinterpret_cast<const uint16_t*>(grad_output.const_data_ptr<c10::BFloat16>());
  const Strides4 gs = strides4(grad_output);
  const int64_t cib = pl.cp / kBlockCols;
  bool parity_read[2] = {false, false};
  for (int64_t o : pl.off) parity_read[(o / pl.cx) & 1] = true;
  const int64_t blocks_x = pl.cx / kBlockCols;  // 32-channel blocks of the copy (all groups)
  const int64_t pair_row = 2 * kBlockCols;       // elements from one pair of pixels to the next
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, p.batch - n0);
    if (!copy_images(p, pl, input, n0, count, total, x)) {
      conv_gemm::wgrad(p, grad_output, input, grad_weight);  // see above: inf or NaN in the input
      return;
    }
    // VNNI pairs: even[cb][n][m][c] = (x[n][2m][32 cb + c], x[n][2m + 1][32 cb + c]), odd: pixels
    // 2m + 1, 2m + 2; only the parities some tap reads. A 32-channel block's pairs are contiguous,
    // so a task streams its own block.
    at::parallel_for(0, 2 * count * pairs, grain_for(2 * pl.cx, 16384), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t parity = r / (count * pairs), n = r / pairs % count, m = r % pairs;
        if (!parity_read[parity]) continue;
        const uint16_t* a0 = x + (n * image_px + 2 * m + parity) * pl.cx;
        for (int64_t cb = 0; cb < blocks_x; ++cb)
          avx512_amx::interleave(a0 + cb * kBlockCols, a0 + pl.cx + cb * kBlockCols, kBlockCols,
                                 pr + (((parity * blocks_x + cb) * count + n) * pairs + m) * pair_row);
      }
    });
    // grad_output as [image][group][o][virtual pixel]: zeros, then per output row blocks of 32
    // pixels, each channel's 32 values written as one run (reads stay within the block).
    std::memset(gp, 0, sizeof(uint16_t) * p.groups * cogp * count * ppad);
    const int64_t ow_blocks = (p.out_width + 31) / 32;
    at::parallel_for(0, count * p.groups * p.out_height * ow_blocks, grain_for(32 * pl.cog, 16384),
                     [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t wb = r % ow_blocks, oh = r / ow_blocks % p.out_height;
        const int64_t g = r / (ow_blocks * p.out_height) % p.groups, n = r / (ow_blocks * p.out_height * p.groups);
        const int64_t ow0 = wb * 32, ow1 = std::min(p.out_width, ow0 + 32);
        const uint16_t* src = gsrc + (n0 + n) * gs.n + g * pl.cog * gs.c + oh * gs.h;
        uint16_t* out = gp + (n * p.groups + g) * cogp * ppad + oh * pl.wc;
        for (int64_t o = 0; o < pl.cog; ++o)
          for (int64_t ow = ow0; ow < ow1; ++ow) out[o * ppad + ow] = src[ow * gs.w + o * gs.c];
      }
    });
    // One image at a time over every task: its packed grad_output and pairs (about a MiB for a
    // 56 x 56 x 64 layer) stay in L2 while all taps and channel blocks read them.
    const int64_t tasks = p.groups * taps * pl.cblocks * cib;
    const int64_t work = ppad * kBlockRows * kBlockCols;
    for (int64_t n = 0; n < count; ++n) {
      const bool accumulate = n0 > 0 || n > 0;
      at::parallel_for(0, tasks, grain_for(work, int64_t(1) << 22), [&](int64_t t0, int64_t t1) {
        avx512_amx::configure();
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t ci = t % cib, ob = t / cib % pl.cblocks, tap = t / (cib * pl.cblocks) % taps;
          const int64_t g = t / (cib * pl.cblocks * taps);
          const int64_t px = pl.off[tap] / pl.cx, parity = px & 1;
          float* c = sums + ((g * taps + tap) * cogp + ob * kBlockCols) * pl.cp + ci * kBlockCols;
          const uint16_t* a = gp + ((n * p.groups + g) * cogp + ob * kBlockCols) * ppad;
          const uint16_t* b =
              pr + (((parity * blocks_x + g * cib + ci) * count + n) * pairs + (px - parity) / 2) * pair_row;
          avx512_amx::wgrad_block_32x32(a, ppad, b, pair_row, pl.blocks, c, pl.cp, accumulate);
        }
        avx512_amx::release();
      });
    }
  }
  // grad_weight[g * cog + o][c][kh][kw] = the tap's sum, rounded once.
  uint16_t* gw = reinterpret_cast<uint16_t*>(grad_weight.mutable_data_ptr<c10::BFloat16>());
  const Strides4 ws = strides4(grad_weight);
  at::parallel_for(0, p.groups * pl.cog, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t g = r / pl.cog, o = r % pl.cog;
      for (int64_t tap = 0; tap < taps; ++tap) {
        const float* s = sums + ((g * taps + tap) * cogp + o) * pl.cp;
        uint16_t* w = gw + r * ws.n + (tap / p.kernel_w) * ws.h + (tap % p.kernel_w) * ws.w;
        for (int64_t c = 0; c < pl.cg; ++c) w[c * ws.c] = c10::BFloat16(s[c]).x;
      }
    }
  });
}

bool wgrad_applies(const Conv2dParams& p, c10::ScalarType dtype) { return applies(p, dtype, false); }

// Same data (2026-12-08): AlexNet conv1's 3 input channels ran 1.56 ms against gemm_im2col's 1.17
// (channels padded 3 -> 32 cost the pairing and the products 10x); ResNet and VGG layers of
// 64-512 channels ran faster on AMX. So at most 8x the reduction in padding.
bool wgrad_preferred(const Conv2dParams& p) {
  const int64_t cg = p.in_channels_per_group();
  return !is_depthwise(p) && 8 * cg >= (cg + kStep - 1) / kStep * kStep;
}

bool dgrad_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  return conv_gemm::dgrad_as_fprop(p) && applies(conv_gemm::dgrad_as_fprop_params(p), dtype, false);
}

bool dgrad_preferred(const Conv2dParams& p) {  // never folded
  const Conv2dParams q = conv_gemm::dgrad_as_fprop_params(p);
  return !is_depthwise(q) && padding_waste(q, false) <= kMaxWaste;
}

void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input) {
  convolve(conv_gemm::dgrad_as_fprop_params(p), grad_output, dgrad_view(p, weight), nullptr, grad_input,
           false);
}

}  // namespace convpool::cpu::amx
