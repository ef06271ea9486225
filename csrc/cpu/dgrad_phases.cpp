// dgrad (the forward of conv_transpose2d) by output phase, for undilated convolutions of any
// stride: no col2im, no accumulation in memory.
//
// With stride s, grad_input pixel ih receives from the taps kh = r + t * s (t = 0, 1, ...) where
// r = (ih + pad) mod s, and tap r + t * s reads grad_output row q - t with q = (ih + pad - r) / s.
// So the grad_input pixels of one phase (r_h, r_w) are a stride-1 correlation of grad_output with
// the sub-kernel of those taps: a GEMM
//   out[pixel][c] = sum over (t_h, t_w, co) of go[q_h - t_h][q_w - t_w][co] * W[co][c][r_h + t_h s_h][r_w + t_w s_w]
// with the reduction ordered (t_h, t_w, co) so channels_last grad_output is packed from channel
// runs. stride == kernel (U-Net's and Mask R-CNN's 2x2 s2) is one tap per phase: s_h * s_w 1x1
// GEMMs and a pixel shuffle; DCGAN's 4x4 s2 is four taps per phase.
//
// The driver is the GEMM's BLIS loops (gemm.h) with the weight packed once per call: every
// phase's B panels (the whole weight, zero-padded to NR columns) are packed in parallel first;
// then tasks of (group, phase, MC output pixels) pack their A block from grad_output, run the
// micro-kernels into a per-thread C block [pixels x channels] (L2-sized) and store it through
// grad_input's strides, converting to its dtype. Each grad_input element is written once by one
// task, its sum in a fixed order (K blocks ascending, k ascending inside the kernel): the result
// does not depend on the thread count. Workspace: the packed weight and, per thread, one A block,
// one C block and a pixel table; nothing grows with the batch.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "dgrad_phases.h"

#include "../shape.h"
#include "depthwise/depthwise.h"
#include "gemm/gemm.h"
#include "helpers.h"

namespace convpool::cpu {
namespace {

constexpr int64_t kMaxMr = 32;  // the largest micro-kernel row count (gemm/kernels_impl.h)

template <typename scalar_t>
void dgrad_phases_impl(const Conv2dParams& p, const at::Tensor& grad_output,
                       const at::Tensor& weight, at::Tensor& grad_input) {
  using acc = acc_t<scalar_t>;
  const gemm::KernelInfo<acc>& ki = gemm::kernel_info<acc>();
  const int64_t mr = ki.mr, nr = ki.nr, kc_max = ki.kc, mc = ki.mc;
  TORCH_INTERNAL_ASSERT(mr <= kMaxMr);
  const int64_t sh = p.stride_h, sw = p.stride_w;
  const int64_t cog = p.out_channels_per_group();  // grad_output channels per group (reduction)
  const int64_t cig = p.in_channels_per_group();   // grad_input channels per group (GEMM columns)
  const int64_t npad = gemm::round_up(cig, nr);
  const int64_t phases = sh * sw;
  std::vector<PhaseDim> dh(sh), dw(sw);
  for (int64_t r = 0; r < sh; ++r) dh[r] = phase_dim(r, sh, p.pad_h, p.kernel_h, p.in_height);
  for (int64_t r = 0; r < sw; ++r) dw[r] = phase_dim(r, sw, p.pad_w, p.kernel_w, p.in_width);
  auto reduction = [&](int64_t ph) { return dh[ph / sw].taps * dw[ph % sw].taps * cog; };

  // ---- the weight as packed B panels, per (group, phase): [K block][NR panel][kk][j] ----------
  std::vector<int64_t> b_offset(p.groups * phases + 1, 0);
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t ph = 0; ph < phases; ++ph)
      b_offset[g * phases + ph + 1] = b_offset[g * phases + ph] + reduction(ph) * npad;
  const auto acc_options = grad_output.options().dtype(c10::CppTypeToScalarType<acc>::value);
  at::Tensor packed = at::empty({std::max<int64_t>(1, b_offset.back())}, acc_options);
  acc* b_ptr = packed.mutable_data_ptr<acc>();
  const scalar_t* w_ptr = weight.const_data_ptr<scalar_t>();
  const Strides4 ws = strides4(weight);
  // Each output channel's weight block [cig][kh][kw] is read once, in order, and its values sent
  // to every phase's panels (reading one phase at a time would gather at stride kh * kw, and
  // read the whole weight once per phase).
  at::parallel_for(0, p.groups * cog, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const int64_t g = o / cog, co = o % cog;
      for (int64_t kh = 0; kh < p.kernel_h; ++kh)
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const int64_t ph = (kh % sh) * sw + kw % sw;
          const int64_t k = ((kh / sh) * dw[kw % sw].taps + kw / sw) * cog + co;
          const int64_t k0 = k / kc_max * kc_max, kcb = std::min(kc_max, reduction(ph) - k0);
          acc* dst = b_ptr + b_offset[g * phases + ph] + k0 * npad + (k - k0) * nr;
          const scalar_t* src = w_ptr + o * ws.n + kh * ws.h + kw * ws.w;
          for (int64_t c = 0; c < cig; ++c)
            dst[(c / nr) * nr * kcb + c % nr] = static_cast<acc>(src[c * ws.c]);
          for (int64_t c = cig; c < npad; ++c) dst[(c / nr) * nr * kcb + c % nr] = acc(0);
        }
    }
  });

  // ---- tasks: (group, phase, block of MC phase pixels), pixels numbered (n, u, v) -------------
  struct Task {
    int64_t g, ph, j0, m;
  };
  std::vector<Task> tasks;
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t ph = 0; ph < phases; ++ph) {
      const int64_t pixels = p.batch * dh[ph / sw].count * dw[ph % sw].count;
      for (int64_t j0 = 0; j0 < pixels; j0 += mc) tasks.push_back({g, ph, j0, std::min(mc, pixels - j0)});
    }
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
  const Strides4 gs = strides4(grad_output), is = strides4(grad_input);
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    acc* a_buf = static_cast<acc*>(gemm::thread_buffer(0, sizeof(acc) * gemm::round_up(mc, mr) * kc_max));
    acc* c_buf = static_cast<acc*>(gemm::thread_buffer(1, sizeof(acc) * mc * cig));
    // Per pixel of the task: its grad_output base (image, group), q_h, q_w, grad_input offset.
    int64_t* table = static_cast<int64_t*>(gemm::thread_buffer(3, sizeof(int64_t) * 4 * gemm::round_up(mc, mr)));
    for (int64_t ti = t0; ti < t1; ++ti) {
      const auto [g, ph, j0, m] = tasks[ti];
      const PhaseDim& ph_h = dh[ph / sw];
      const PhaseDim& ph_w = dw[ph % sw];
      for (int64_t i = 0; i < m; ++i) {
        const int64_t j = j0 + i, v = j % ph_w.count, nu = j / ph_w.count;
        const int64_t u = nu % ph_h.count, n = nu / ph_h.count;
        int64_t* e = table + 4 * i;
        e[0] = n * gs.n + g * cog * gs.c;
        e[1] = ph_h.q0 + u;
        e[2] = ph_w.q0 + v;
        e[3] = n * is.n + g * cig * is.c + (ph_h.i0 + u * sh) * is.h + (ph_w.i0 + v * sw) * is.w;
      }
      const int64_t k = ph_h.taps * ph_w.taps * cog;
      if (k == 0) {  // kernel smaller than the stride: no tap reaches this phase
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < cig; ++c) gi[table[4 * i + 3] + c * is.c] = scalar_t(0);
        continue;
      }
      const acc* b_phase = b_ptr + b_offset[g * phases + ph];
      for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
        const int64_t kcb = std::min(kc_max, k - k0);
        // A block: panels of MR pixels, a[panel][kk][i]; rows past m and taps outside
        // grad_output are zeros.
        for (int64_t ip = 0; ip < m; ip += mr) {
          acc* dst = a_buf + ip * kcb;
          const int64_t rows = std::min(mr, m - ip);
          for (int64_t kk = 0; kk < kcb;) {
            const int64_t kx = k0 + kk, t = kx / cog, co = kx % cog;
            const int64_t th = t / ph_w.taps, tw = t % ph_w.taps;
            const int64_t cnt = std::min(kcb - kk, cog - co);  // this tap's channels in the block
            const scalar_t* src[kMaxMr];
            for (int64_t i = 0; i < mr; ++i) {
              const int64_t* e = table + 4 * (ip + i);
              const int64_t oh = i < rows ? e[1] - th : -1, ow = i < rows ? e[2] - tw : -1;
              const bool inside = oh >= 0 && oh < p.out_height && ow >= 0 && ow < p.out_width;
              src[i] = inside ? go + e[0] + oh * gs.h + ow * gs.w + co * gs.c : nullptr;
            }
            acc* d = dst + kk * mr;
            if (gs.c == 1) {  // channels_last: one contiguous run of channels per pixel
              for (int64_t i = 0; i < mr; ++i) {
                if (src[i] == nullptr) {
                  for (int64_t c = 0; c < cnt; ++c) d[c * mr + i] = acc(0);
                } else {
                  for (int64_t c = 0; c < cnt; ++c) d[c * mr + i] = static_cast<acc>(src[i][c]);
                }
              }
            } else {  // channel planes: neighbouring pixels are neighbours in memory
              for (int64_t c = 0; c < cnt; ++c)
                for (int64_t i = 0; i < mr; ++i)
                  d[c * mr + i] = src[i] ? static_cast<acc>(src[i][c * gs.c]) : acc(0);
            }
            kk += cnt;
          }
        }
        // B panel outer (L1), A block inner (L2), as gemm_block's jr / ir loops.
        const acc* b_block = b_phase + k0 * npad;
        for (int64_t jp = 0; jp < cig; jp += nr) {
          const int n = static_cast<int>(std::min(nr, cig - jp));
          for (int64_t ip = 0; ip < m; ip += mr)
            ki.kernel(kcb, a_buf + ip * kcb, b_block + jp * kcb, c_buf + ip * cig + jp, cig,
                      static_cast<int>(std::min(mr, m - ip)), n, k0 > 0);
        }
      }
      if (is.c == 1) {  // channels_last: each pixel's channels in one run
        for (int64_t i = 0; i < m; ++i) {
          const acc* src = c_buf + i * cig;
          scalar_t* dst = gi + table[4 * i + 3];
          for (int64_t c = 0; c < cig; ++c) dst[c] = static_cast<scalar_t>(src[c]);
        }
      } else {  // planes: a channel at a time, along the phase's pixels
        for (int64_t c = 0; c < cig; ++c)
          for (int64_t i = 0; i < m; ++i)
            gi[table[4 * i + 3] + c * is.c] = static_cast<scalar_t>(c_buf[i * cig + c]);
      }
    }
  });
}

}  // namespace

// Strides up to 16 per dimension: the per-phase tables and task lists grow with stride_h *
// stride_w (a huge stride, legal for conv2d, would make them huge or overflow).
bool dgrad_phases_applies(const Conv2dParams& p) {
  return p.dilation_h == 1 && p.dilation_w == 1 && p.stride_h <= 16 && p.stride_w <= 16;
}

// Measured on an AMD EPYC (Zen 3, AVX2), decoders suite, 1 thread (docs/performance.md): faster
// than gemm_col2im for channels_last grad_input (U-Net 2x2 s2 at 52 -> 104: 0.65-0.83 of torch's
// speed against 0.46-0.67; FCN-8s 4x4 s2 at 34 -> 70: 0.62-0.73 against 0.40-0.45) but not where
// a phase has few pixels and the weight is large (DCGAN 512 -> 256 4x4 s2 at 8 -> 16, 64 and 128
// pixels per phase: 0.77-0.83 against 0.89-1.10): packing the whole weight up front only pays
// when several tasks use it. NCHW: no clear difference (U-Net 1.15-1.58 either way), so the
// col2im path stays.
bool dgrad_phases_preferred(const Conv2dParams& p, const at::Tensor& grad_input) {
  const int64_t pixels_per_phase = p.batch * p.in_height * p.in_width / (p.stride_h * p.stride_w);
  // At least 16 grad_input channels per group (the GEMM's rows): the first-layer backward of a
  // strided conv (AlexNet conv1 3 channels, DeepBench speech1 1 channel, channels_last) ran at
  // R 0.17-0.25 here against gemm_col2im's 1.0-2.4 (quick report, AMD EPYC Zen 3, 2026-12-02).
  return !is_depthwise(p) && (p.stride_h > 1 || p.stride_w > 1) && is_channels_last(grad_input) &&
         pixels_per_phase >= 256 && p.in_channels_per_group() >= 16;
}

void dgrad_phases(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "conv2d_grad_input", [&] {
                                    dgrad_phases_impl<scalar_t>(p, grad_output, weight, grad_input);
                                  });
}

}  // namespace convpool::cpu
