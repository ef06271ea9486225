// Index helpers shared by the kernels.
#pragma once

#include <cstdint>

#include "launch.cuh"

namespace convpool::CONVPOOL_KERNEL_NS {

struct Coord {
  int64_t n, c, h, w;
};

// Element e of an (N, C, H, W) tensor in its memory order: channel fastest when channels_last
// (so consecutive threads touch consecutive addresses), width fastest otherwise.
__host__ __device__ inline Coord coord(int64_t e, int64_t C, int64_t H, int64_t W,
                                       bool channels_fastest) {
  if (channels_fastest) return {e / (C * H * W), e % C, (e / (C * W)) % H, (e / C) % W};
  return {e / (C * H * W), (e / (H * W)) % C, (e / W) % H, e % W};
}

}  // namespace convpool::CONVPOOL_KERNEL_NS
