// dgrad (conv_transpose2d's forward) by output phase: one GEMM per stride phase, no col2im
// (dgrad_phases.cpp). The conv registry's "dgrad_phases" entry calls these; the phase geometry
// is shared with direct/dispatch.cpp's phases.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace convpool::cpu {

// One dimension of one phase r: the grad_input positions i0, i0 + s, ... (count of them), the
// grad_output position q0 of the first, and the taps r, r + s, ... (taps of them).
struct PhaseDim {
  int64_t i0, count, q0, taps;
};
inline PhaseDim phase_dim(int64_t r, int64_t stride, int64_t pad, int64_t kernel, int64_t in_size) {
  PhaseDim d;
  d.i0 = ((r - pad) % stride + stride) % stride;
  d.count = d.i0 < in_size ? (in_size - d.i0 + stride - 1) / stride : 0;
  d.q0 = (d.i0 + pad - r) / stride;  // exact: i0 + pad == r (mod stride), and >= 0
  d.taps = r < kernel ? (kernel - r + stride - 1) / stride : 0;
  return d;
}

// Undilated, any stride (up to 16), groups, dtype and layout.
bool dgrad_phases_applies(const Conv2dParams& p);
// Where the heuristic wants it (measured: docs/registry.md).
bool dgrad_phases_preferred(const Conv2dParams& p, const at::Tensor& grad_input);
void dgrad_phases(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input);

}  // namespace convpool::cpu
