// Winograd F(4x4, 3x3) convolution on the CPU (see winograd.h).
//
// With the 6x6 input patch d of a 4x4 output tile and the 3x3 filter g of a channel pair,
//   y = A^T [ (G g G^T) . (B^T d B) ] A,
// and the sum over input channels moves inside: for each of the 36 transform points t,
//   M_t [tiles x C_out] = V_t [tiles x C_in] * U_t [C_in x C_out],
// 36 GEMMs computed by our GEMM micro-kernel (gemm.h). The points are 0, +-1, +-2 and infinity.
//
//   weight  U = G g G^T once per call, in double, stored in the GEMM's packed-B panel format
//           (NR output channels wide), so the multiplications read it without repacking.
//   input   tiles are processed in blocks of a bounded size (block_tiles: at most 8 MiB of
//           transformed input and products, independent of the batch): each patch is gathered
//           through the input's strides (any layout, padding as zeros), transformed 16 channels
//           at a time (one vector per point) and written in the packed-A panel format (MR tiles
//           tall).
//   output  the 36 products of a tile become its 4x4 outputs, plus the bias, stored through the
//           output's strides (unit-stride channel runs in channels_last).
//
// Blocks run one after the other; each of their three phases is split over the threads by work
// item (patch panels, (point, channel panel) products, output tiles), so a block's transformed
// input and products are shared and U is read once per block whatever the thread count. Every
// output element is produced by one work item with a K loop in a fixed order, so results do not
// depend on the thread count or the block size.
#include "winograd.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "../shape.h"
#include "gemm/gemm.h"
#include "isa.h"

#if defined(__x86_64__) || defined(_M_X64)
#define CONVPOOL_WINOGRAD_X86 1
#endif

namespace convpool::cpu::winograd {
namespace {

constexpr int kTile = 4;     // output tile side
constexpr int kPatch = 6;    // input patch side: kTile + 3 - 1
constexpr int kPoints = 36;  // transform points, kPatch^2
constexpr int kLanes = 16;   // channels transformed together: one AVX-512 vector, two AVX2
constexpr int kMaxMr = 16;   // largest GEMM register-tile height the packing supports
constexpr int kPatchBuffer = kPoints + 2;  // a gathered patch, plus room for 8-wide row copies

// ---- mode ------------------------------------------------------------------------------------

enum class Mode : int { off = 0, on = 1, automatic = 2 };

Mode parse_mode(const std::string& name) {
  if (name == "0") return Mode::off;
  if (name == "1") return Mode::on;
  if (name == "auto" || name.empty()) return Mode::automatic;
  TORCH_CHECK(false, "CONVPOOL_CPU_WINOGRAD must be 0, 1 or auto, but got '", name, "'");
}

std::atomic<int>& mode_slot() {
  static std::atomic<int> slot{[] {
    const char* env = std::getenv("CONVPOOL_CPU_WINOGRAD");
    return static_cast<int>(parse_mode(env ? env : ""));
  }()};
  return slot;
}

Mode mode() { return static_cast<Mode>(mode_slot().load(std::memory_order_relaxed)); }

// ---- one-dimensional transforms over kLanes lanes ---------------------------------------------
// Written as plain loops over lanes: the ISA wrappers at the bottom compile them for AVX-512,
// AVX2 or the baseline, and the compiler vectorises them there.

#define CONVPOOL_WINO_INLINE __attribute__((always_inline)) inline

// out[i] = (B^T in)[i], i < 6: rows of kLanes lanes, `is` / `os` floats apart.
CONVPOOL_WINO_INLINE void input_1d(const float* in, int64_t is, float* out, int64_t os) {
  for (int e = 0; e < kLanes; ++e) {
    const float d0 = in[e], d1 = in[is + e], d2 = in[2 * is + e];
    const float d3 = in[3 * is + e], d4 = in[4 * is + e], d5 = in[5 * is + e];
    const float d4_d2 = d4 - d2, d4_4d2 = d4 - 4.0f * d2;
    out[e] = 4.0f * d0 - 5.0f * d2 + d4;
    out[os + e] = d4_4d2 + (d3 - 4.0f * d1);
    out[2 * os + e] = d4_4d2 - (d3 - 4.0f * d1);
    out[3 * os + e] = d4_d2 + 2.0f * (d3 - d1);
    out[4 * os + e] = d4_d2 - 2.0f * (d3 - d1);
    out[5 * os + e] = 4.0f * d1 - 5.0f * d3 + d5;
  }
}

// out[i] = (A^T in)[i], i < 4.
CONVPOOL_WINO_INLINE void output_1d(const float* in, int64_t is, float* out, int64_t os) {
  for (int e = 0; e < kLanes; ++e) {
    const float m0 = in[e], m1 = in[is + e], m2 = in[2 * is + e];
    const float m3 = in[3 * is + e], m4 = in[4 * is + e], m5 = in[5 * is + e];
    const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    out[e] = m0 + s12 + s34;
    out[os + e] = d12 + 2.0f * d34;
    out[2 * os + e] = s12 + 4.0f * s34;
    out[3 * os + e] = d12 + 8.0f * d34 + m5;
  }
}

// v[t] = (B^T d B)[t] for a 6x6 patch d[r * 6 + c] of kLanes lanes each.
CONVPOOL_WINO_INLINE void input_2d(const float* d, float* v) {
  alignas(64) float rows[kPoints * kLanes];
  for (int c = 0; c < kPatch; ++c) input_1d(d + c * kLanes, kPatch * kLanes, rows + c * kLanes, kPatch * kLanes);
  for (int r = 0; r < kPatch; ++r) input_1d(rows + r * kPatch * kLanes, kLanes, v + r * kPatch * kLanes, kLanes);
}

// y[i * 4 + j] = (A^T m A)[i][j] for the 36 products m[t * ps] of one tile, kLanes lanes each.
CONVPOOL_WINO_INLINE void output_2d(const float* m, int64_t ps, float* y) {
  alignas(64) float rows[kTile * kPatch * kLanes];
  for (int c = 0; c < kPatch; ++c) output_1d(m + c * ps, kPatch * ps, rows + c * kLanes, kPatch * kLanes);
  for (int i = 0; i < kTile; ++i) output_1d(rows + i * kPatch * kLanes, kLanes, y + i * kTile * kLanes, kLanes);
}

// ---- problem geometry --------------------------------------------------------------------------

struct Geometry {
  int64_t in_channels, out_channels, in_height, in_width, pad_h, pad_w, out_height, out_width;
  int64_t tiles_h, tiles_w, tiles_per_image;
  int64_t k_stride;  // channels per packed-A panel row block: in_channels rounded up to 8

  struct Tile {
    int64_t n, oh, ow;  // image and the tile's first output row / column
  };
  Tile tile(int64_t index) const {
    const int64_t rem = index % tiles_per_image;
    return {index / tiles_per_image, rem / tiles_w * kTile, rem % tiles_w * kTile};
  }
};

Geometry geometry(const Conv2dParams& p) {
  Geometry g{p.in_channels, p.out_channels, p.in_height, p.in_width, p.pad_h, p.pad_w,
             p.out_height, p.out_width, 0, 0, 0, 0};
  g.tiles_h = (p.out_height + kTile - 1) / kTile;
  g.tiles_w = (p.out_width + kTile - 1) / kTile;
  g.tiles_per_image = g.tiles_h * g.tiles_w;
  g.k_stride = gemm::round_up(p.in_channels, 8);
  return g;
}

// ---- weight transform --------------------------------------------------------------------------

// u[t * nr + j] = (G g_j G^T)[t] for the nr filters g_j (3x3, in double, j < nr): the rows of
// the point-t packed-B panel for one input channel.
template <int NR>
CONVPOOL_WINO_INLINE void weight_points(const double* g, float* u) {
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
CONVPOOL_WINO_INLINE void weight_transform_body(const Geometry& geo, const float* w, Strides4 ws,
                                                float* u_packed, int64_t q0, int64_t q1) {
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

// d[(r * 6 + c) * kLanes + e] = x[n][c0 + e][oh - pad_h + r][ow - pad_w + c], zero outside the
// input or for e >= lanes. d has kPatchBuffer points.
template <typename scalar_t>
CONVPOOL_WINO_INLINE void gather_patch(const Geometry& geo, const scalar_t* x, Strides4 s,
                                       Geometry::Tile tile, int64_t c0, int lanes, float* d) {
  const int64_t ih0 = tile.oh - geo.pad_h, iw0 = tile.ow - geo.pad_w;
  const scalar_t* base = x + tile.n * s.n + c0 * s.c;
  bool row_ok[kPatch], col_ok[kPatch];
  for (int i = 0; i < kPatch; ++i) {
    row_ok[i] = ih0 + i >= 0 && ih0 + i < geo.in_height;
    col_ok[i] = iw0 + i >= 0 && iw0 + i < geo.in_width;
  }
  if constexpr (std::is_same_v<scalar_t, float>) {
    // NCHW interior patch: each row of 8 channels x 8 columns (6 used) is one register transpose
    // (the two extra columns land in the next row's slots, or in d's tail, and are overwritten).
    if (s.w == 1 && lanes == kLanes && iw0 >= 0 && iw0 + 8 <= geo.in_width && row_ok[0] &&
        row_ok[kPatch - 1]) {
      for (int r = 0; r < kPatch; ++r)
        for (int e8 = 0; e8 < kLanes; e8 += 8) {
          const float* rows[8];
          for (int i = 0; i < 8; ++i) rows[i] = base + (e8 + i) * s.c + (ih0 + r) * s.h + iw0;
          gemm::transpose8x8(rows, d + r * kPatch * kLanes + e8, kLanes);
        }
      return;
    }
  }
  if (s.c == 1 && lanes == kLanes) {  // channels_last: each point's channels are one vector load
    for (int r = 0; r < kPatch; ++r)
      for (int c = 0; c < kPatch; ++c) {
        float* out = d + (r * kPatch + c) * kLanes;
        if (row_ok[r] && col_ok[c]) {
          const scalar_t* src = base + (ih0 + r) * s.h + (iw0 + c) * s.w;
          if constexpr (std::is_same_v<scalar_t, float>) {
            std::memcpy(out, src, sizeof(float) * kLanes);  // one vector move (a loop stays scalar)
          } else {
            for (int e = 0; e < kLanes; ++e) out[e] = static_cast<float>(src[e]);
          }
        } else {
          for (int e = 0; e < kLanes; ++e) out[e] = 0.0f;
        }
      }
    return;
  }
  for (int e = 0; e < kLanes; ++e) {
    const scalar_t* plane = base + e * s.c;
    for (int r = 0; r < kPatch; ++r)
      for (int c = 0; c < kPatch; ++c)
        d[(r * kPatch + c) * kLanes + e] =
            (e < lanes && row_ok[r] && col_ok[c])
                ? static_cast<float>(plane[(ih0 + r) * s.h + (iw0 + c) * s.w])
                : 0.0f;
  }
}

// V[t][panel][k][i] (panel stride k_stride * mr) = (B^T d B)[t] of tile tile0 + panel * mr + i
// and input channel k, for the `tiles` tiles of a block; rows of a partial last panel are zero.
// Computes work items [item0, item1), item = panel * channel_chunks + chunk of kLanes channels.
template <typename scalar_t>
CONVPOOL_WINO_INLINE void input_block_body(const Geometry& geo, const scalar_t* x, Strides4 s,
                                           int64_t tile0, int64_t tiles, int mr, float* v_packed,
                                           int64_t item0, int64_t item1) {
  const int64_t panels = (tiles + mr - 1) / mr;
  const int64_t chunks = (geo.in_channels + kLanes - 1) / kLanes;
  const int64_t ks = geo.k_stride;
  alignas(64) float d[kPatchBuffer * kLanes];
  alignas(64) float v[kMaxMr][kPoints * kLanes];
  for (int64_t item = item0; item < item1; ++item) {
    const int64_t panel = item / chunks, c0 = item % chunks * kLanes;
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, geo.in_channels - c0));
    for (int i = 0; i < mr; ++i) {
      const int64_t index = panel * mr + i;
      if (index >= tiles) {
        std::fill(v[i], v[i] + kPoints * kLanes, 0.0f);
        continue;
      }
      gather_patch(geo, x, s, geo.tile(tile0 + index), c0, lanes, d);
      input_2d(d, v[i]);
    }
    for (int t = 0; t < kPoints; ++t) {
      float* dst = v_packed + ((t * panels + panel) * ks + c0) * mr;
      if (mr == 8) {  // 8 tiles x 8 channels: register transposes (channels past the end land in
                      // the k_stride padding, never read)
        for (int e8 = 0; e8 < lanes; e8 += 8) {
          const float* rows[8];
          for (int i = 0; i < 8; ++i) rows[i] = v[i] + t * kLanes + e8;
          gemm::transpose8x8(rows, dst + e8 * 8, 8);
        }
      } else {
        for (int e = 0; e < lanes; ++e)
          for (int i = 0; i < mr; ++i) dst[e * mr + i] = v[i][t * kLanes + e];
      }
    }
  }
}

// ---- output transform --------------------------------------------------------------------------

// y[n][o][oh + i][ow + j] = (A^T m A)[i][j] + bias[o] for the block's tiles, from the products
// m[t][tile][o] (row stride out_channels, point stride tiles_cap * out_channels). Computes work
// items [item0, item1), item = tile * channel_chunks + chunk of kLanes output channels. Returns
// whether every value was finite.
template <typename scalar_t>
CONVPOOL_WINO_INLINE bool output_block_body(const Geometry& geo, const float* m_rows,
                                            int64_t tiles_cap, const float* bias, int64_t tile0,
                                            scalar_t* y, Strides4 s, int64_t item0, int64_t item1) {
  const int64_t n_total = geo.out_channels;
  const int64_t chunks = (n_total + kLanes - 1) / kLanes;
  alignas(64) float m[kPoints * kLanes];
  alignas(64) float out[kTile * kTile * kLanes];
  alignas(64) float zero_if_finite[kLanes] = {};  // sums of value * 0: NaN once one is not finite
  for (int64_t item = item0; item < item1; ++item) {
    const int64_t index = item / chunks, o0 = item % chunks * kLanes;
    const Geometry::Tile tile = geo.tile(tile0 + index);
    const int rows = static_cast<int>(std::min<int64_t>(kTile, geo.out_height - tile.oh));
    const int cols = static_cast<int>(std::min<int64_t>(kTile, geo.out_width - tile.ow));
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, n_total - o0));
    const float* src = m_rows + index * n_total + o0;
    const int64_t point_stride = tiles_cap * n_total;
    if (lanes == kLanes) {  // read in place
      output_2d(src, point_stride, out);
    } else {  // channels past the end as zeros
      for (int t = 0; t < kPoints; ++t)
        for (int e = 0; e < kLanes; ++e) m[t * kLanes + e] = e < lanes ? src[t * point_stride + e] : 0.0f;
      output_2d(m, kLanes, out);
    }
    for (int q = 0; q < kTile * kTile; ++q)
      for (int e = 0; e < kLanes; ++e) zero_if_finite[e] += out[q * kLanes + e] * 0.0f;
    if (bias) {
      float b[kLanes];
      for (int e = 0; e < kLanes; ++e) b[e] = e < lanes ? bias[o0 + e] : 0.0f;
      for (int q = 0; q < kTile * kTile; ++q)
        for (int e = 0; e < kLanes; ++e) out[q * kLanes + e] += b[e];
    }
    scalar_t* base = y + tile.n * s.n + o0 * s.c + tile.oh * s.h + tile.ow * s.w;
    if constexpr (std::is_same_v<scalar_t, float>) {
      // NCHW full tile: transpose to [channel][pixel] in registers, then store runs of 4 pixels.
      if (s.w == 1 && s.c != 1 && rows == kTile && cols == kTile && lanes == kLanes) {
        alignas(64) float by_channel[kLanes * kTile * kTile];
        for (int half = 0; half < 2; ++half)
          for (int e8 = 0; e8 < kLanes; e8 += 8) {
            const float* px[8];
            for (int q = 0; q < 8; ++q) px[q] = out + (half * 8 + q) * kLanes + e8;
            gemm::transpose8x8(px, by_channel + e8 * kTile * kTile + half * 8, kTile * kTile);
          }
        for (int e = 0; e < kLanes; ++e)
          for (int i = 0; i < kTile; ++i)
            std::memcpy(base + e * s.c + i * s.h, by_channel + (e * kTile + i) * kTile,
                        sizeof(float) * kTile);
        continue;
      }
    }
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) {
        const float* px = out + (i * kTile + j) * kLanes;
        scalar_t* dst = base + i * s.h + j * s.w;
        if (s.c == 1) {
          for (int e = 0; e < lanes; ++e) dst[e] = static_cast<scalar_t>(px[e]);
        } else {
          for (int e = 0; e < lanes; ++e) dst[e * s.c] = static_cast<scalar_t>(px[e]);
        }
      }
  }
  float check = 0.0f;
  for (int e = 0; e < kLanes; ++e) check += zero_if_finite[e];
  return check == 0.0f;
}

// ---- ISA variants: the same bodies compiled for AVX-512, AVX2 + FMA and the baseline -----------
// (chosen by isa.h's active_isa()).

#ifdef CONVPOOL_WINOGRAD_X86
#define CONVPOOL_WINO_VARIANTS(RET, NAME, BODY, PARAMS, ARGS)                             \
  template <typename scalar_t>                                                            \
  __attribute__((target("avx512f,avx2,fma"))) RET NAME##_avx512 PARAMS { return BODY ARGS; } \
  template <typename scalar_t>                                                            \
  __attribute__((target("avx2,fma"))) RET NAME##_avx2 PARAMS { return BODY ARGS; }        \
  template <typename scalar_t>                                                            \
  RET NAME##_generic PARAMS { return BODY ARGS; }                                         \
  template <typename scalar_t>                                                            \
  RET NAME PARAMS {                                                                       \
    switch (active_isa()) {                                                               \
      case Isa::avx512: return NAME##_avx512<scalar_t> ARGS;                            \
      case Isa::avx2: return NAME##_avx2<scalar_t> ARGS;                                \
      default: return NAME##_generic<scalar_t> ARGS;                                      \
    }                                                                                     \
  }
#else
#define CONVPOOL_WINO_VARIANTS(RET, NAME, BODY, PARAMS, ARGS) \
  template <typename scalar_t>                                \
  RET NAME PARAMS { return BODY ARGS; }
#endif

CONVPOOL_WINO_VARIANTS(void, input_block, input_block_body<scalar_t>,
                       (const Geometry& geo, const scalar_t* x, Strides4 s, int64_t tile0,
                        int64_t tiles, int mr, float* v_packed, int64_t item0, int64_t item1),
                       (geo, x, s, tile0, tiles, mr, v_packed, item0, item1))

CONVPOOL_WINO_VARIANTS(bool, output_block, output_block_body<scalar_t>,
                       (const Geometry& geo, const float* m_rows, int64_t tiles_cap,
                        const float* bias, int64_t tile0, scalar_t* y, Strides4 s, int64_t item0,
                        int64_t item1),
                       (geo, m_rows, tiles_cap, bias, tile0, y, s, item0, item1))

// The weight transform is templated on the panel width instead of a scalar type.
template <int NR>
void weight_transform_range(const Geometry& geo, const float* w, Strides4 ws, float* u_packed,
                            int64_t q0, int64_t q1) {
#ifdef CONVPOOL_WINOGRAD_X86
  struct Variants {
    __attribute__((target("avx512f,avx2,fma"))) static void avx512(
        const Geometry& g, const float* w, Strides4 ws, float* u, int64_t q0, int64_t q1) {
      weight_transform_body<NR>(g, w, ws, u, q0, q1);
    }
    __attribute__((target("avx2,fma"))) static void avx2(
        const Geometry& g, const float* w, Strides4 ws, float* u, int64_t q0, int64_t q1) {
      weight_transform_body<NR>(g, w, ws, u, q0, q1);
    }
  };
  if (active_isa() == Isa::avx512) return Variants::avx512(geo, w, ws, u_packed, q0, q1);
  if (active_isa() == Isa::avx2) return Variants::avx2(geo, w, ws, u_packed, q0, q1);
#endif
  weight_transform_body<NR>(geo, w, ws, u_packed, q0, q1);
}

// The packed U of a float weight (any strides), items split over the threads.
void weight_transform(const Geometry& geo, const at::Tensor& w, int nr, float* u_packed) {
  const float* wp = w.const_data_ptr<float>();
  const Strides4 ws = strides4(w);
  const int64_t items = (geo.out_channels + nr - 1) / nr * geo.in_channels;
  at::parallel_for(0, items, 16, [&](int64_t q0, int64_t q1) {
    switch (nr) {
      case 16: return weight_transform_range<16>(geo, wp, ws, u_packed, q0, q1);
      case 32: return weight_transform_range<32>(geo, wp, ws, u_packed, q0, q1);
      default: TORCH_CHECK(false, "convpool Winograd: unsupported GEMM panel width ", nr);
    }
  });
}

// ---- the 36 multiplications of a block ---------------------------------------------------------

// m[t][i][o] = sum_k V_t[i][k] U_t[k][o] for the block's tiles: the GEMM micro-kernel over the
// packed panels, the K loop in KC blocks in ascending order (bitwise the same for any split).
// Computes work items [item0, item1), item = t * b_panels + panel of NR output channels; the
// panel of U stays in L1 while it meets every tile of the block.
void multiply_block(const gemm::KernelInfo<float>& ki, const Geometry& geo, const float* v_packed,
                    const float* u_packed, int64_t tiles, int64_t tiles_cap, float* m_rows,
                    int64_t item0, int64_t item1) {
  const int mr = ki.mr, nr = ki.nr;
  const int64_t k_total = geo.in_channels, n_total = geo.out_channels;
  const int64_t a_panels = (tiles + mr - 1) / mr, b_panels = (n_total + nr - 1) / nr;
  for (int64_t item = item0; item < item1; ++item) {
    const int64_t t = item / b_panels, jp = item % b_panels;
    const float* a_t = v_packed + t * a_panels * geo.k_stride * mr;
    const float* b = u_packed + (t * b_panels + jp) * k_total * nr;
    float* c = m_rows + t * tiles_cap * n_total + jp * nr;
    const int n = static_cast<int>(std::min<int64_t>(nr, n_total - jp * nr));
    for (int64_t pc = 0; pc < k_total; pc += ki.kc) {
      const int64_t kc = std::min(ki.kc, k_total - pc);
      for (int64_t ip = 0; ip < a_panels; ++ip) {
        const int m = static_cast<int>(std::min<int64_t>(mr, tiles - ip * mr));
        ki.kernel(kc, a_t + (ip * geo.k_stride + pc) * mr, b + pc * nr, c + ip * mr * n_total,
                  n_total, m, n, pc > 0);
      }
    }
  }
}

// Tiles per block: the block's transformed input and products (36 * tiles * (C_in + C_out)
// floats, shared by the threads) stay within a few MiB. More tiles per block means fewer passes
// over the transformed weight (36 * C_in * C_out floats, read once per block).
int64_t block_tiles(const Geometry& geo, int64_t total_tiles, int mr) {
  constexpr int64_t kBlockBytes = int64_t(8) << 20;
  const int64_t per_tile = kPoints * int64_t(sizeof(float)) * (geo.k_stride + geo.out_channels);
  const int64_t most = std::clamp<int64_t>(kBlockBytes / per_tile, mr, 64 * mr) / mr * mr;
  // Equal blocks (a small last block would cost a whole pass over U for few tiles).
  const int64_t blocks = (total_tiles + most - 1) / most;
  return gemm::round_up((total_tiles + blocks - 1) / blocks, mr);
}

template <typename scalar_t>
bool fprop_typed(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                 const at::Tensor* bias, at::Tensor& output) {
  const gemm::KernelInfo<float>& ki = gemm::kernel_info<float>();
  TORCH_INTERNAL_ASSERT(ki.mr <= kMaxMr);
  const Geometry geo = geometry(p);
  const int64_t b_panels = (p.out_channels + ki.nr - 1) / ki.nr;
  // The calling thread's buffers (the phases' workers never use these two slots): kept between
  // calls, so a large layer does not page-fault tens of MiB in again each time.
  float* u_packed = static_cast<float*>(
      gemm::thread_buffer(4, sizeof(float) * kPoints * b_panels * p.in_channels * ki.nr));
  weight_transform(geo, weight.to(at::kFloat), ki.nr, u_packed);
  const at::Tensor b = bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
  const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
  const float* u_ptr = u_packed;
  const scalar_t* x = input.const_data_ptr<scalar_t>();
  scalar_t* y = output.mutable_data_ptr<scalar_t>();
  const Strides4 xs = strides4(input), ys = strides4(output);
  const int64_t total_tiles = p.batch * geo.tiles_per_image;
  const int64_t tiles_cap = block_tiles(geo, total_tiles, ki.mr);
  const int64_t v_size = kPoints * tiles_cap * geo.k_stride;
  float* v_packed = static_cast<float*>(
      gemm::thread_buffer(5, sizeof(float) * (v_size + kPoints * tiles_cap * p.out_channels)));
  float* m_rows = v_packed + v_size;
  const int64_t in_chunks = (p.in_channels + kLanes - 1) / kLanes;
  const int64_t out_chunks = (p.out_channels + kLanes - 1) / kLanes;
  // One block at a time, each phase split over the threads by work item.
  for (int64_t tile0 = 0; tile0 < total_tiles; tile0 += tiles_cap) {
    const int64_t tiles = std::min(tiles_cap, total_tiles - tile0);
    const int64_t a_panels = (tiles + ki.mr - 1) / ki.mr;
    at::parallel_for(0, a_panels * in_chunks, 1, [&](int64_t i0, int64_t i1) {
      input_block<scalar_t>(geo, x, xs, tile0, tiles, ki.mr, v_packed, i0, i1);
    });
    at::parallel_for(0, kPoints * b_panels, 1, [&](int64_t i0, int64_t i1) {
      multiply_block(ki, geo, v_packed, u_ptr, tiles, tiles_cap, m_rows, i0, i1);
    });
    std::atomic<bool> finite{true};
    at::parallel_for(0, tiles * out_chunks, 1, [&](int64_t i0, int64_t i1) {
      if (!output_block<scalar_t>(geo, m_rows, tiles_cap, bias_ptr, tile0, y, ys, i0, i1))
        finite.store(false, std::memory_order_relaxed);
    });
    if (!finite.load()) return false;
  }
  return true;
}

}  // namespace

const char* mode_name() {
  switch (mode()) {
    case Mode::off: return "0";
    case Mode::on: return "1";
    default: return "auto";
  }
}

void set_mode(const char* name) {
  mode_slot().store(static_cast<int>(parse_mode(name)), std::memory_order_relaxed);
}

bool applies(const Conv2dParams& p, c10::ScalarType dtype) {
  return mode() != Mode::off && dtype != at::kDouble && p.kernel_h == 3 && p.kernel_w == 3 &&
         p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1 &&
         p.groups == 1 && p.in_channels > 0 && p.out_channels > 0 && p.out_height > 0 &&
         p.out_width > 0;
}

bool preferred(const Conv2dParams& p) {
  if (mode() == Mode::on) return true;
  // Thresholds measured on a 2-core AVX-512 Zen 5 (direct GEMM path vs Winograd over channels
  // 8..512, feature maps 6..56, batch 1 and 8):
  // - with fewer than 16 channels on either side the tile transforms cost more than they save;
  // - the weight transform (36 * C_in * C_out values per call) needs enough output pixels per
  //   call to pay off: about 192 (re-measured with both threads working; 1, 2, 4 images of a
  //   7x7 map at 512 channels: 0.37x, 0.65x, 0.87x, 8 images 1.24x; 196 pixels at 128 and 256
  //   channels 1.55x and 1.32x), twice that once the transformed weight (over 256 x 256
  //   channels: 9 MiB) no longer stays in cache between tile blocks;
  // - 4x4 tiles over a small map compute padding: at most 1.5x the outputs (7x7: 1.31x, 6x6: 1.78x);
  // - below 32 input channels the 36 products reduce over too few values to run the micro-kernel
  //   well, while the direct GEMM (reducing over 9 C_in) does: not past 256 output channels
  //   (16 -> 1024 measured 0.97x, 16 -> 256 1.15x).
  const int64_t pixels = p.batch * p.out_height * p.out_width;
  const int64_t tiled = p.batch * gemm::round_up(p.out_height, kTile) * gemm::round_up(p.out_width, kTile);
  const int64_t min_pixels = p.in_channels * p.out_channels <= 256 * 256 ? 192 : 384;
  return std::min(p.in_channels, p.out_channels) >= 16 && pixels >= min_pixels &&
         2 * tiled <= 3 * pixels && (p.in_channels >= 32 || p.out_channels <= 256);
}

bool fprop(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor* bias, at::Tensor& output) {
  bool done = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "winograd", [&] {
    if constexpr (std::is_same_v<scalar_t, double>) {
      TORCH_CHECK(false, "convpool Winograd: float64 uses the direct path");
    } else {
      done = fprop_typed<scalar_t>(p, input, weight, bias, output);
    }
  });
  return done;
}

}  // namespace convpool::cpu::winograd
