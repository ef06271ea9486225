// What the AMX driver (dispatch.cpp) and its kernels (avx512_amx.cpp, compiled for AVX-512 + AMX)
// share: raw pointers and sizes only, no torch, so the AMX file includes nothing of torch's.
#pragma once

#include <cstdint>

namespace convpool::cpu::amx {

// The register block of the bf16 tile kernel: 2 x 2 accumulator tiles of 16 x 16 floats, so
// kBlockRows output pixels x kBlockCols output channels; the reduction runs in steps of kStep
// bf16 values (one 64-byte tile row).
constexpr int kBlockRows = 32;
constexpr int kBlockCols = 32;
constexpr int kStep = 32;

namespace avx512_amx {

// Loads this thread's tile configuration (AMX state is per thread); release() frees it, so an
// idle thread carries no tile data through context switches.
void configure();
void release();

// c[i * 32 + j] (+)= sum over taps t < taps, steps s < steps, e < 32 of
//     a[i * a_stride + off[t] + s * 32 + e] * W[t][s][j][e]
// for the block's 32 rows i (output pixels) and 32 columns j (output channels): bf16 values
// (raw bits) multiplied and summed in float by TDPBF16PS. `a` is a zero-padded channels-last
// copy (elements a_stride apart from one pixel to the next); `b` the packed weight of one
// 32-channel block, [t][s][half][16 rows][16 columns][2] (VNNI pairs: row r holds reduction
// elements 2r and 2r + 1). Rows i past the output are computed from whatever the copy holds
// there (the driver allocates it) and discarded: a row of c depends on row i of a alone.
// With `accumulate`, the sums continue those already in c (a run of taps at a time: the same
// float additions in the same order as one call over every tap).
void block_32x32(const uint16_t* a, int64_t a_stride, const int64_t* off, int taps, int steps,
                 const uint16_t* b, float* c, bool accumulate);

// wgrad's block: c[i * ldc + j] (+)= sum over k < 32 * steps of a[i * a_stride + k] * B[k][j]
// for i, j < 32: rows i are output channels (a: grad_output, pixels contiguous), columns j input
// channels, the reduction k output pixels; b holds B in VNNI pairs of pixels, row r (pixels 2r,
// 2r + 1 of the block) at b + r * b_stride, 32 channels x 2 values each. `c` is float, ldc floats
// from one row to the next. Without `accumulate` the sums start at zero.
void wgrad_block_32x32(const uint16_t* a, int64_t a_stride, const uint16_t* b, int64_t b_stride,
                       int64_t steps, float* c, int64_t ldc, bool accumulate);

// out[2i] = a[i], out[2i + 1] = b[i] for i < n: two pixels' channels as VNNI pairs.
void interleave(const uint16_t* a, const uint16_t* b, int64_t n, uint16_t* out);

// dst[i] = bf16(src[i * stride] + bias) for i < n (n <= 32), rounded as round_row: one output
// channel's run of pixels from a block of sums (for an output whose channels are not innermost).
void round_column(const float* src, int64_t stride, float bias, int n, uint16_t* dst);

// One step of one tap of a 32-channel weight block in VNNI pairs: dst[(h * 16 + r) * 16 + j] =
// pair r of rows[h * 16 + j] (32-bit: reduction elements 2r and 2r + 1), for h < 2, r, j < 16:
// 16 x 16 transposes of 32-bit pairs. rows[i] points at 32 consecutive bf16 values.
void pack_step(const uint16_t* const* rows, uint16_t* dst);

// dst[j] = bf16(src[j] + bias[j]) for j < n (n <= 32; bias may be null), rounded to nearest
// even, NaN as 0x7FC0: c10::BFloat16's conversion.
void round_row(const float* src, const float* bias, int n, uint16_t* dst);

}  // namespace avx512_amx
}  // namespace convpool::cpu::amx
