// conv2d_grad_bias on the CPU (grad_bias.cpp): the sum of grad_output over N, H and W per
// channel, in double, in an order fixed by the shape alone (never by the thread count). Registry
// entries (conv2d.cpp): bias_channels_last and bias_planes. Any floating dtype.
#pragma once

#include <ATen/core/Tensor.h>

namespace convpool::cpu {

// channels_last (unit channel stride): whole pixels per row block, one sum per channel.
void grad_bias_channels_last(const at::Tensor& grad_output, at::Tensor& grad_bias);
// Any layout: one channel per task, rows of the plane in order.
void grad_bias_planes(const at::Tensor& grad_output, at::Tensor& grad_bias);

}  // namespace convpool::cpu
