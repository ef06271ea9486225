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

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "../../shape.h"
#include "../conv_gemm.h"
#include "../depthwise/depthwise.h"
#include "../helpers.h"
#include "../isa.h"
#include "kernels.h"

namespace convpool::cpu::amx {
namespace {

bool detect() {
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
  if (!use_avx512()) return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
  if (!amx_bf16 || !amx_tile) return false;
  // Linux 5.16+: a process must ask before it may use the tile data state (else SIGILL).
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  unsigned long granted = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) != 0) return false;
  return (granted >> kXfeatureXtiledata) & 1;
#else
  return false;
#endif
}

// Copy elements per chunk of images (16 MiB of bf16), and the packed weight one task walks.
constexpr int64_t kChunkElements = int64_t(1) << 23;
constexpr int64_t kWeightBytes = int64_t(1) << 20;

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

// The weight in VNNI pairs: [group][channel block][tap][step][half][16 rows][16 channels][2],
// from `w_hwc`, the weight laid out [C_out][kh][kw][C_in/groups] (contiguous): for each output
// channel, tap and step, 16 pairs of consecutive channels go to 16 rows of one column.
void pack_weight(const Conv2dParams& p, const Plan& pl, const at::Tensor& w_hwc, uint16_t* dst) {
  const uint16_t* w = reinterpret_cast<const uint16_t*>(w_hwc.const_data_ptr<c10::BFloat16>());
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t per_block = taps * pl.steps * kStep * kBlockCols;
  at::parallel_for(0, p.groups * pl.cblocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t gb = b0; gb < b1; ++gb) {
      const int64_t g = gb / pl.cblocks, cb = gb % pl.cblocks;
      uint32_t* out = reinterpret_cast<uint32_t*>(dst + gb * per_block);  // pairs
      std::memset(out, 0, sizeof(uint16_t) * per_block);
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t st = 0; st < pl.steps; ++st, out += kStep * kBlockCols / 2) {
          const int64_t c0 = st * kStep, cn = std::min<int64_t>(kStep, pl.cg - c0);
          for (int64_t j = 0; j < std::min<int64_t>(kBlockCols, pl.cog - cb * kBlockCols); ++j) {
            const int64_t o = g * pl.cog + cb * kBlockCols + j;
            const uint16_t* src = w + (o * taps + t) * pl.cg + c0;
            uint32_t* col = out + (j / 16) * 256 + j % 16;  // half j / 16, column j % 16
            int64_t c = 0;
            for (; c + 2 <= cn; c += 2) {
              uint32_t pair;
              std::memcpy(&pair, src + c, sizeof(pair));
              col[(c / 2) * 16] = pair;
            }
            if (c < cn) col[(c / 2) * 16] = src[c];  // an odd channel count: its partner is zero
          }
        }
    }
  });
}

}  // namespace

bool usable() {
  static const bool value = detect();
  return value;
}

bool fprop_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  // The kernel's counts are ints; a 2^31-tap kernel is far past any memory anyway.
  return dtype == at::kBFloat16 && p.kernel_h * p.kernel_w < (int64_t(1) << 24) &&
         p.in_channels_per_group() < (int64_t(1) << 30) && usable();
}

bool fprop_preferred(const Conv2dParams& p) { return !is_depthwise(p); }

void fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output) {
  const Plan pl = make_plan(p);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t per_block = taps * pl.steps * kStep * kBlockCols;
  at::Tensor packed = at::empty({p.groups * pl.cblocks * per_block}, weight.options().dtype(at::kBFloat16));
  uint16_t* wpk = reinterpret_cast<uint16_t*>(packed.mutable_data_ptr<c10::BFloat16>());
  pack_weight(p, pl, weight.permute({0, 2, 3, 1}).contiguous(), wpk);
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
  const int64_t run = std::clamp<int64_t>(kWeightBytes / (2 * per_block), 1, pl.cblocks);
  const int64_t runs = (pl.cblocks + run - 1) / run;
  uint16_t* y = reinterpret_cast<uint16_t*>(output.mutable_data_ptr<c10::BFloat16>());
  const Strides4 ys = strides4(output);
  const int64_t work = pl.blocks == 0 ? 1 : run * kBlockRows * kBlockCols * taps * pl.cp;
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, p.batch - n0);
    copy_images(p, pl, input, n0, count, total, x);
    // Tasks: (group, run of channel blocks, image, pixel block), pixel blocks innermost so a
    // thread's consecutive tasks share the run's weight.
    const int64_t tasks = p.groups * runs * count * pl.blocks;
    at::parallel_for(0, tasks, grain_for(work, int64_t(1) << 22), [&](int64_t t0, int64_t t1) {
      avx512_amx::configure();
      alignas(64) float c[kBlockRows * kBlockCols];
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t pb = t % pl.blocks, n = t / pl.blocks % count;
        const int64_t rr = t / (pl.blocks * count) % runs, g = t / (pl.blocks * count * runs);
        const uint16_t* a = x + n * pl.image + pb * kBlockRows * pl.cx + g * pl.cp;
        for (int64_t cb = rr * run; cb < std::min(pl.cblocks, (rr + 1) * run); ++cb) {
          avx512_amx::block_32x32(a, pl.cx, pl.off.data(), static_cast<int>(taps),
                                  static_cast<int>(pl.steps), wpk + (g * pl.cblocks + cb) * per_block, c);
          const int64_t o0 = g * pl.cog + cb * kBlockCols;
          const int cols = static_cast<int>(std::min<int64_t>(kBlockCols, pl.cog - cb * kBlockCols));
          const float* bb = b.empty() ? nullptr : b.data() + o0;
          for (int64_t i = 0; i < kBlockRows; ++i) {
            const int64_t j = pb * kBlockRows + i;
            if (j >= pl.pixels) break;
            const int64_t oh = j / pl.wc, ow = j % pl.wc;
            if (ow >= p.out_width) continue;
            uint16_t* out = y + (n0 + n) * ys.n + oh * ys.h + ow * ys.w + o0 * ys.c;
            if (ys.c == 1) {
              avx512_amx::round_row(c + i * kBlockCols, bb, cols, out);
            } else {
              for (int col = 0; col < cols; ++col) {
                const c10::BFloat16 v(c[i * kBlockCols + col] + (bb ? bb[col] : 0.0f));
                out[col * ys.c] = v.x;
              }
            }
          }
        }
      }
      avx512_amx::release();
    });
  }
}

bool dgrad_applies(const Conv2dParams& p, c10::ScalarType dtype) {
  return conv_gemm::dgrad_as_fprop(p) && fprop_applies(conv_gemm::dgrad_as_fprop_params(p), dtype);
}

bool dgrad_preferred(const Conv2dParams& p) { return !is_depthwise(p); }

void dgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input) {
  fprop(conv_gemm::dgrad_as_fprop_params(p), grad_output, conv_gemm::dgrad_as_fprop_weight(p, weight),
        nullptr, grad_input);
}

}  // namespace convpool::cpu::amx
