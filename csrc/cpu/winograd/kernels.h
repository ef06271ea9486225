// What Winograd's dispatcher (dispatch.cpp) and its transforms compiled once per ISA
// (kernels_impl.h, built by generic.cpp, avx2.cpp and avx512.cpp) share: the tile constants, a
// problem's geometry, a block's operands as raw pointers and strides, and the table of transform
// functions each ISA fills. Plain C++ (no torch, data only), so the per-ISA files include nothing
// of torch's.
#pragma once

#include <cstdint>

#include "../../params.h"

namespace convpool::cpu::winograd {

constexpr int kTile = 4;     // output tile side
constexpr int kPatch = 6;    // input patch side: kTile + 3 - 1
constexpr int kPoints = 36;  // transform points, kPatch^2
constexpr int kGroup = 16;   // channels transformed together: one AVX-512 vector, two AVX2
constexpr int kMaxMr = 16;   // largest GEMM register-tile height the packing supports
constexpr int kPatchBuffer = kPoints + 2;  // a gathered patch, plus room for 8-wide row copies

struct Geometry {
  int64_t in_channels, out_channels, in_height, in_width, pad_h, pad_w, out_height, out_width;
  int64_t tiles_h, tiles_w, tiles_per_image;
  int64_t k_stride;  // channels per packed-A panel row block: in_channels rounded up to 8
};

// The element types a call's input and output hold: float, or half / bfloat16 (read and written
// as their 16 bits, converted to and from float by the kernels).
enum class Elem : int { f32 = 0, f16 = 1, bf16 = 2 };
constexpr int kElems = 3;

// The input transform of a block: tiles [tile0, tile0 + tiles) of x (strides s, Elem elements)
// into v_packed, packed-A panels of mr tiles.
struct InputBlock {
  const Geometry* geo;
  const void* x;
  Strides4 s;
  int64_t tile0, tiles;
  int mr;
  float* v_packed;
};

// The output transform of a block: the products m_rows (point stride tiles_cap * out_channels)
// plus bias (or null) into y (strides s, Elem elements).
struct OutputBlock {
  const Geometry* geo;
  const float* m_rows;
  int64_t tiles_cap;
  const float* bias;
  int64_t tile0;
  void* y;
  Strides4 s;
};

// One ISA's transforms, each computing the work items [item0, item1) of a phase (see
// kernels_impl.h), indexed by Elem; output_block returns whether every value was finite.
// weight_transform[0] packs for NR = 16, [1] for NR = 32.
struct Kernels {
  void (*input_block[kElems])(const InputBlock&, int64_t item0, int64_t item1);
  bool (*output_block[kElems])(const OutputBlock&, int64_t item0, int64_t item1);
  void (*weight_transform[2])(const Geometry&, const float* w, Strides4 ws, float* u_packed,
                              int64_t q0, int64_t q1);
};

// The transforms of each ISA (kernels_impl.h), defined by generic.cpp, avx2.cpp and avx512.cpp
// (the last two on x86-64 only).
namespace generic {
extern const Kernels kKernels;
}
namespace avx2 {
extern const Kernels kKernels;
}
namespace avx512 {
extern const Kernels kKernels;
}

}  // namespace convpool::cpu::winograd
