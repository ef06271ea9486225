// Winograd's transforms (see dispatch.cpp for the algorithm), written once over the vector
// vocabulary of simd/<isa>.h (V, kLanes, set1, load, store, add, sub, mul; V8, load8, store8,
// transpose8): generic.cpp, avx2.cpp and avx512.cpp each compile this file once, for their ISA,
// into namespace winograd::<isa>, and export its Kernels table (kernels.h). The including file
// defines CONVPOOL_WINOGRAD_ISA (generic, avx2, avx512), sets the ISA's `#pragma GCC target`
// first (not for generic) and includes simd/<isa>.h. Every function here computes work items of
// one phase of a block: the dispatcher splits them over the threads.
#pragma once

#ifndef CONVPOOL_WINOGRAD_ISA
#error "kernels_impl.h is compiled by winograd/generic.cpp, avx2.cpp and avx512.cpp only"
#endif

#include "kernels.h"

namespace convpool::cpu::winograd::CONVPOOL_WINOGRAD_ISA {
namespace {

using namespace convpool::cpu::simd::CONVPOOL_WINOGRAD_ISA;
static_assert(kGroup % kLanes == 0, "a channel group is whole vectors");

// ---- elements: float, half and bfloat16 by their bits ------------------------------------------

struct F16 {
  uint16_t bits;
};
struct BF16 {
  uint16_t bits;
};

inline float float_of_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t bits_of_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float to_float(float v) { return v; }
inline float to_float(BF16 v) { return float_of_bits(uint32_t(v.bits) << 16); }
// Exact: every half is a float.
inline float to_float(F16 v) {
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16, em = v.bits & 0x7fffu;
  if (em >= 0x7c00u) return float_of_bits(sign | 0x7f800000u | (em & 0x3ffu) << 13);  // inf, NaN
  if (em >= 0x0400u) return float_of_bits(sign | ((em << 13) + (uint32_t(127 - 15) << 23)));
  const float magnitude = static_cast<float>(em) * 0x1p-24f;  // subnormal (or zero): exact
  return sign ? -magnitude : magnitude;
}

// Rounded to nearest, ties to even, as torch converts (inf beyond the half range).
template <typename E>
inline E from_float(float f);
template <>
inline float from_float<float>(float f) {
  return f;
}
template <>
inline BF16 from_float<BF16>(float f) {
  if (f != f) return {0x7fc0u};
  const uint32_t u = bits_of_float(f);
  return {static_cast<uint16_t>((u + 0x7fffu + (u >> 16 & 1u)) >> 16)};
}
template <>
inline F16 from_float<F16>(float f) {
  const uint32_t u = bits_of_float(f), a = u & 0x7fffffffu;
  const uint16_t sign = static_cast<uint16_t>(u >> 16 & 0x8000u);
  if (a > 0x7f800000u) return {static_cast<uint16_t>(sign | 0x7e00u)};  // NaN
  if (a >= 0x47800000u) return {static_cast<uint16_t>(sign | 0x7c00u)};  // >= 2^16, inf
  if (a < 0x38800000u) {  // below 2^-14: a half subnormal (or zero); adding 0.5 rounds at 2^-24
    const float t = float_of_bits(a) + 0.5f;
    return {static_cast<uint16_t>(sign | (bits_of_float(t) - 0x3f000000u))};
  }
  // Normal: rebias the exponent and round the 13 dropped bits (a carry may reach inf, as it should).
  const uint32_t r = a + (uint32_t(15 - 127) << 23) + 0xfffu + (a >> 13 & 1u);
  return {static_cast<uint16_t>(sign | r >> 13)};
}

// dst[j * ld + i] = rows[i][j] for i, j < 8: an 8 x 8 register transpose.
inline void transpose8x8(const float* const* rows, float* dst, int64_t ld) {
  V8 r[8];
  for (int i = 0; i < 8; ++i) r[i] = load8(rows[i]);
  transpose8(r);
  for (int i = 0; i < 8; ++i) store8(dst + i * ld, r[i]);
}

struct Tile {
  int64_t n, oh, ow;  // image and the tile's first output row / column
};
inline Tile tile_of(const Geometry& geo, int64_t index) {
  const int64_t rem = index % geo.tiles_per_image;
  return {index / geo.tiles_per_image, rem / geo.tiles_w * kTile, rem % geo.tiles_w * kTile};
}

// ---- one-dimensional transforms over kGroup channels, kGroup / kLanes vectors ------------------

// out[i] = (B^T in)[i], i < 6: rows of kGroup channels, `is` / `os` floats apart.
inline void input_1d(const float* in, int64_t is, float* out, int64_t os) {
  const V two = set1(2.0f), four = set1(4.0f), five = set1(5.0f);
  for (int e = 0; e < kGroup; e += kLanes) {
    const V d0 = load(in + e), d1 = load(in + is + e), d2 = load(in + 2 * is + e);
    const V d3 = load(in + 3 * is + e), d4 = load(in + 4 * is + e), d5 = load(in + 5 * is + e);
    const V d4_d2 = sub(d4, d2), d4_4d2 = sub(d4, mul(four, d2));
    const V d3_4d1 = sub(d3, mul(four, d1)), d3_d1_2 = mul(two, sub(d3, d1));
    store(out + e, add(sub(mul(four, d0), mul(five, d2)), d4));
    store(out + os + e, add(d4_4d2, d3_4d1));
    store(out + 2 * os + e, sub(d4_4d2, d3_4d1));
    store(out + 3 * os + e, add(d4_d2, d3_d1_2));
    store(out + 4 * os + e, sub(d4_d2, d3_d1_2));
    store(out + 5 * os + e, add(sub(mul(four, d1), mul(five, d3)), d5));
  }
}

// out[i] = (A^T in)[i], i < 4.
inline void output_1d(const float* in, int64_t is, float* out, int64_t os) {
  const V two = set1(2.0f), four = set1(4.0f), eight = set1(8.0f);
  for (int e = 0; e < kGroup; e += kLanes) {
    const V m0 = load(in + e), m1 = load(in + is + e), m2 = load(in + 2 * is + e);
    const V m3 = load(in + 3 * is + e), m4 = load(in + 4 * is + e), m5 = load(in + 5 * is + e);
    const V s12 = add(m1, m2), d12 = sub(m1, m2), s34 = add(m3, m4), d34 = sub(m3, m4);
    store(out + e, add(add(m0, s12), s34));
    store(out + os + e, add(d12, mul(two, d34)));
    store(out + 2 * os + e, add(s12, mul(four, s34)));
    store(out + 3 * os + e, add(add(d12, mul(eight, d34)), m5));
  }
}

// v[t] = (B^T d B)[t] for a 6x6 patch d[r * 6 + c] of kGroup channels each.
inline void input_2d(const float* d, float* v) {
  alignas(64) float rows[kPoints * kGroup];
  for (int c = 0; c < kPatch; ++c)
    input_1d(d + c * kGroup, kPatch * kGroup, rows + c * kGroup, kPatch * kGroup);
  for (int r = 0; r < kPatch; ++r)
    input_1d(rows + r * kPatch * kGroup, kGroup, v + r * kPatch * kGroup, kGroup);
}

// y[i * 4 + j] = (A^T m A)[i][j] for the 36 products m[t * ps] of one tile, kGroup channels each.
inline void output_2d(const float* m, int64_t ps, float* y) {
  alignas(64) float rows[kTile * kPatch * kGroup];
  for (int c = 0; c < kPatch; ++c)
    output_1d(m + c * ps, kPatch * ps, rows + c * kGroup, kPatch * kGroup);
  for (int i = 0; i < kTile; ++i)
    output_1d(rows + i * kPatch * kGroup, kGroup, y + i * kTile * kGroup, kGroup);
}

// ---- weight transform --------------------------------------------------------------------------

// u[t * nr + j] = (G g_j G^T)[t] for the nr filters g_j (3x3, in double, j < nr): the rows of
// the point-t packed-B panel for one input channel.
template <int NR>
inline void weight_points(const double* g, float* u) {
  constexpr double q = 1.0 / 4, s = 1.0 / 6, e = 1.0 / 12, f = 1.0 / 24;
  alignas(64) double gg[kPatch * 3][NR];  // G g: 6 x 3
  for (int c = 0; c < 3; ++c)
    for (int j = 0; j < NR; ++j) {
      const double g0 = g[(0 * 3 + c) * NR + j], g1 = g[(1 * 3 + c) * NR + j], g2 = g[(2 * 3 + c) * NR + j];
      gg[0 * 3 + c][j] = q * g0;
      gg[1 * 3 + c][j] = -s * (g0 + g1 + g2);
      gg[2 * 3 + c][j] = -s * (g0 - g1 + g2);
      gg[3 * 3 + c][j] = f * g0 + e * g1 + s * g2;
      gg[4 * 3 + c][j] = f * g0 - e * g1 + s * g2;
      gg[5 * 3 + c][j] = g2;
    }
  for (int r = 0; r < kPatch; ++r)
    for (int j = 0; j < NR; ++j) {
      const double g0 = gg[r * 3 + 0][j], g1 = gg[r * 3 + 1][j], g2 = gg[r * 3 + 2][j];
      float* row = u + r * kPatch * NR + j;
      row[0 * NR] = static_cast<float>(q * g0);
      row[1 * NR] = static_cast<float>(-s * (g0 + g1 + g2));
      row[2 * NR] = static_cast<float>(-s * (g0 - g1 + g2));
      row[3 * NR] = static_cast<float>(f * g0 + e * g1 + s * g2);
      row[4 * NR] = static_cast<float>(f * g0 - e * g1 + s * g2);
      row[5 * NR] = static_cast<float>(g2);
    }
}

// U[t][panel][k][j] = (G g G^T)[t] of the filter (out channel panel * NR + j, in channel k);
// zero for out channels past the end. Computes items [q0, q1), q = panel * C_in + k.
template <int NR>
void weight_transform(const Geometry& geo, const float* w, Strides4 ws, float* u_packed, int64_t q0,
                      int64_t q1) {
  const int64_t k_total = geo.in_channels, n_total = geo.out_channels;
  const int64_t panels = (n_total + NR - 1) / NR;
  alignas(64) double g[9 * NR];
  alignas(64) float u[kPoints * NR];
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t panel = q / k_total, k = q % k_total;
    for (int j = 0; j < NR; ++j) {
      const int64_t o = panel * NR + j;
      for (int tap = 0; tap < 9; ++tap)
        g[tap * NR + j] = o < n_total ? w[o * ws.n + k * ws.c + (tap / 3) * ws.h + (tap % 3) * ws.w] : 0.0;
    }
    weight_points<NR>(g, u);
    for (int t = 0; t < kPoints; ++t)
      std::memcpy(u_packed + ((t * panels + panel) * k_total + k) * NR, u + t * NR, sizeof(float) * NR);
  }
}

// ---- input transform ---------------------------------------------------------------------------

// d[(r * 6 + c) * kGroup + e] = x[n][c0 + e][oh - pad_h + r][ow - pad_w + c], zero outside the
// input or for e >= lanes. d has kPatchBuffer points.
template <typename E>
inline void gather_patch(const Geometry& geo, const E* x, Strides4 s, Tile tile, int64_t c0,
                         int lanes, float* d) {
  const int64_t ih0 = tile.oh - geo.pad_h, iw0 = tile.ow - geo.pad_w;
  const E* base = x + tile.n * s.n + c0 * s.c;
  bool row_ok[kPatch], col_ok[kPatch];
  for (int i = 0; i < kPatch; ++i) {
    row_ok[i] = ih0 + i >= 0 && ih0 + i < geo.in_height;
    col_ok[i] = iw0 + i >= 0 && iw0 + i < geo.in_width;
  }
  if constexpr (std::is_same_v<E, float>) {
    // NCHW interior patch: each row of 8 channels x 8 columns (6 used) is one register transpose
    // (the two extra columns land in the next row's slots, or in d's tail, and are overwritten).
    if (s.w == 1 && lanes == kGroup && iw0 >= 0 && iw0 + 8 <= geo.in_width && row_ok[0] &&
        row_ok[kPatch - 1]) {
      for (int r = 0; r < kPatch; ++r)
        for (int e8 = 0; e8 < kGroup; e8 += 8) {
          const float* rows[8];
          for (int i = 0; i < 8; ++i) rows[i] = base + (e8 + i) * s.c + (ih0 + r) * s.h + iw0;
          transpose8x8(rows, d + r * kPatch * kGroup + e8, kGroup);
        }
      return;
    }
  }
  if (s.c == 1 && lanes == kGroup) {  // channels_last: each point's channels are one vector load
    for (int r = 0; r < kPatch; ++r)
      for (int c = 0; c < kPatch; ++c) {
        float* out = d + (r * kPatch + c) * kGroup;
        if (row_ok[r] && col_ok[c]) {
          const E* src = base + (ih0 + r) * s.h + (iw0 + c) * s.w;
          if constexpr (std::is_same_v<E, float>) {
            std::memcpy(out, src, sizeof(float) * kGroup);  // one vector move (a loop stays scalar)
          } else {
            for (int e = 0; e < kGroup; ++e) out[e] = to_float(src[e]);
          }
        } else {
          for (int e = 0; e < kGroup; ++e) out[e] = 0.0f;
        }
      }
    return;
  }
  for (int e = 0; e < kGroup; ++e) {
    const E* plane = base + e * s.c;
    for (int r = 0; r < kPatch; ++r)
      for (int c = 0; c < kPatch; ++c)
        d[(r * kPatch + c) * kGroup + e] =
            (e < lanes && row_ok[r] && col_ok[c]) ? to_float(plane[(ih0 + r) * s.h + (iw0 + c) * s.w])
                                                  : 0.0f;
  }
}

// V[t][panel][k][i] (panel stride k_stride * mr) = (B^T d B)[t] of tile tile0 + panel * mr + i
// and input channel k, for the `tiles` tiles of a block; rows of a partial last panel are zero.
// Computes work items [item0, item1), item = panel * channel_chunks + chunk of kGroup channels.
template <typename E>
void input_block(const InputBlock& b, int64_t item0, int64_t item1) {
  const Geometry& geo = *b.geo;
  const E* x = static_cast<const E*>(b.x);
  const int mr = b.mr;
  const int64_t panels = (b.tiles + mr - 1) / mr;
  const int64_t chunks = (geo.in_channels + kGroup - 1) / kGroup;
  const int64_t ks = geo.k_stride;
  alignas(64) float d[kPatchBuffer * kGroup];
  alignas(64) float v[kMaxMr][kPoints * kGroup];
  for (int64_t item = item0; item < item1; ++item) {
    const int64_t panel = item / chunks, c0 = item % chunks * kGroup;
    const int lanes = static_cast<int>(std::min<int64_t>(kGroup, geo.in_channels - c0));
    for (int i = 0; i < mr; ++i) {
      const int64_t index = panel * mr + i;
      if (index >= b.tiles) {
        std::fill(v[i], v[i] + kPoints * kGroup, 0.0f);
        continue;
      }
      gather_patch(geo, x, b.s, tile_of(geo, b.tile0 + index), c0, lanes, d);
      input_2d(d, v[i]);
    }
    for (int t = 0; t < kPoints; ++t) {
      float* dst = b.v_packed + ((t * panels + panel) * ks + c0) * mr;
      if (mr == 8) {  // 8 tiles x 8 channels: register transposes (channels past the end land in
                      // the k_stride padding, never read)
        for (int e8 = 0; e8 < lanes; e8 += 8) {
          const float* rows[8];
          for (int i = 0; i < 8; ++i) rows[i] = v[i] + t * kGroup + e8;
          transpose8x8(rows, dst + e8 * 8, 8);
        }
      } else {
        for (int e = 0; e < lanes; ++e)
          for (int i = 0; i < mr; ++i) dst[e * mr + i] = v[i][t * kGroup + e];
      }
    }
  }
}

// ---- output transform --------------------------------------------------------------------------

// y[n][o][oh + i][ow + j] = (A^T m A)[i][j] + bias[o] for the block's tiles, from the products
// m[t][tile][o] (row stride out_channels, point stride tiles_cap * out_channels). Computes work
// items [item0, item1), item = tile * channel_chunks + chunk of kGroup output channels. Returns
// whether every value was finite.
template <typename E>
bool output_block(const OutputBlock& b, int64_t item0, int64_t item1) {
  const Geometry& geo = *b.geo;
  const Strides4 s = b.s;
  E* y = static_cast<E*>(b.y);
  const int64_t n_total = geo.out_channels;
  const int64_t chunks = (n_total + kGroup - 1) / kGroup;
  alignas(64) float m[kPoints * kGroup];
  alignas(64) float out[kTile * kTile * kGroup];
  alignas(64) float zero_if_finite[kGroup] = {};  // sums of value * 0: NaN once one is not finite
  for (int64_t item = item0; item < item1; ++item) {
    const int64_t index = item / chunks, o0 = item % chunks * kGroup;
    const Tile tile = tile_of(geo, b.tile0 + index);
    const int rows = static_cast<int>(std::min<int64_t>(kTile, geo.out_height - tile.oh));
    const int cols = static_cast<int>(std::min<int64_t>(kTile, geo.out_width - tile.ow));
    const int lanes = static_cast<int>(std::min<int64_t>(kGroup, n_total - o0));
    const float* src = b.m_rows + index * n_total + o0;
    const int64_t point_stride = b.tiles_cap * n_total;
    if (lanes == kGroup) {  // read in place
      output_2d(src, point_stride, out);
    } else {  // channels past the end as zeros
      for (int t = 0; t < kPoints; ++t)
        for (int e = 0; e < kGroup; ++e) m[t * kGroup + e] = e < lanes ? src[t * point_stride + e] : 0.0f;
      output_2d(m, kGroup, out);
    }
    for (int q = 0; q < kTile * kTile; ++q)
      for (int e = 0; e < kGroup; ++e) zero_if_finite[e] += out[q * kGroup + e] * 0.0f;
    if (b.bias) {
      float bias[kGroup];
      for (int e = 0; e < kGroup; ++e) bias[e] = e < lanes ? b.bias[o0 + e] : 0.0f;
      for (int q = 0; q < kTile * kTile; ++q)
        for (int e = 0; e < kGroup; ++e) out[q * kGroup + e] += bias[e];
    }
    E* base = y + tile.n * s.n + o0 * s.c + tile.oh * s.h + tile.ow * s.w;
    if constexpr (std::is_same_v<E, float>) {
      // NCHW full tile: transpose to [channel][pixel] in registers, then store runs of 4 pixels.
      if (s.w == 1 && s.c != 1 && rows == kTile && cols == kTile && lanes == kGroup) {
        alignas(64) float by_channel[kGroup * kTile * kTile];
        for (int half = 0; half < 2; ++half)
          for (int e8 = 0; e8 < kGroup; e8 += 8) {
            const float* px[8];
            for (int q = 0; q < 8; ++q) px[q] = out + (half * 8 + q) * kGroup + e8;
            transpose8x8(px, by_channel + e8 * kTile * kTile + half * 8, kTile * kTile);
          }
        for (int e = 0; e < kGroup; ++e)
          for (int i = 0; i < kTile; ++i)
            std::memcpy(base + e * s.c + i * s.h, by_channel + (e * kTile + i) * kTile,
                        sizeof(float) * kTile);
        continue;
      }
    }
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) {
        const float* px = out + (i * kTile + j) * kGroup;
        E* dst = base + i * s.h + j * s.w;
        if (s.c == 1) {
          for (int e = 0; e < lanes; ++e) dst[e] = from_float<E>(px[e]);
        } else {
          for (int e = 0; e < lanes; ++e) dst[e * s.c] = from_float<E>(px[e]);
        }
      }
  }
  float check = 0.0f;
  for (int e = 0; e < kGroup; ++e) check += zero_if_finite[e];
  return check == 0.0f;
}

}  // namespace

// Declared extern in kernels.h, so defined here with external linkage.
const Kernels kKernels = {
    {&input_block<float>, &input_block<F16>, &input_block<BF16>},
    {&output_block<float>, &output_block<F16>, &output_block<BF16>},
    {&weight_transform<16>, &weight_transform<32>},
};

}  // namespace convpool::cpu::winograd::CONVPOOL_WINOGRAD_ISA
