// dgrad (conv_transpose2d's forward) by output phase: one GEMM per stride phase, no col2im
// (dgrad_phases.cpp). The conv registry's "dgrad_phases" entry calls these.
#pragma once

#include <ATen/core/Tensor.h>

#include "../params.h"

namespace convpool::cpu {

// Undilated, any stride (up to 16), groups, dtype and layout.
bool dgrad_phases_applies(const Conv2dParams& p);
// Where the heuristic wants it (measured: docs/registry.md).
bool dgrad_phases_preferred(const Conv2dParams& p, const at::Tensor& grad_input);
void dgrad_phases(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                  at::Tensor& grad_input);

}  // namespace convpool::cpu
