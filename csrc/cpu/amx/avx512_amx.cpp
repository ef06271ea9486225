// The AMX bf16 tile kernel and its store (kernels.h), compiled for AVX-512 + AMX-TILE + AMX-BF16.
// Only ever called where isa_reached(Isa::amx) said yes (isa.cpp: the CPU has AMX and Linux granted
// the tile data permission). Everything before the pragma is plain C++, so nothing of torch's is
// built with these instructions.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,amx-tile,amx-bf16")

namespace convpool::cpu::amx::avx512_amx {
namespace {

// The tile configuration (Intel SDM, LDTILECFG): palette 1; tmm0-3 the 16 x 16 float
// accumulators, tmm4-5 two 16-pixel x 32-bf16 slices of the copy, tmm6-7 two weight tiles of 16
// pair-rows x 16 channels. Every tile is 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

TileConfig make_config() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  return cfg;
}

}  // namespace

void configure() {
  static const TileConfig cfg = make_config();
  _tile_loadconfig(&cfg);
}

void release() { _tile_release(); }

void block_32x32(const uint16_t* a, int64_t a_stride, const int64_t* off, int taps, int steps,
                 const uint16_t* b, float* c, bool accumulate) {
  const int64_t a_bytes = a_stride * 2;
  const int64_t a_half = a_stride * 16;  // the second 16 pixels
  if (accumulate) {
    _tile_loadd(0, c, 128);
    _tile_loadd(1, c + 16, 128);
    _tile_loadd(2, c + 16 * 32, 128);
    _tile_loadd(3, c + 16 * 32 + 16, 128);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int t = 0; t < taps; ++t) {
    const uint16_t* at = a + off[t];
    for (int s = 0; s < steps; ++s, at += kStep, b += 2 * 16 * 32) {
      // Tiles are not renamed: each load comes right after the last product reading its
      // previous contents, so it overlaps the products still running.
      _tile_loadd(4, at, a_bytes);
      _tile_loadd(6, b, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_loadd(7, b + 16 * 32, 64);
      _tile_dpbf16ps(1, 4, 7);
      _tile_loadd(5, at + a_half, a_bytes);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, 128);
  _tile_stored(1, c + 16, 128);
  _tile_stored(2, c + 16 * 32, 128);
  _tile_stored(3, c + 16 * 32 + 16, 128);
}

void wgrad_block_32x32(const uint16_t* a, int64_t a_stride, const uint16_t* b, int64_t b_stride,
                       int64_t steps, float* c, int64_t ldc, bool accumulate) {
  const int64_t c_bytes = ldc * 4;
  float* c1 = c + 16 * ldc;
  if (accumulate) {
    _tile_loadd(0, c, c_bytes);
    _tile_loadd(1, c + 16, c_bytes);
    _tile_loadd(2, c1, c_bytes);
    _tile_loadd(3, c1 + 16, c_bytes);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const int64_t a_bytes = a_stride * 2, b_bytes = b_stride * 2;
  const uint16_t* a1 = a + 16 * a_stride;
  for (int64_t s = 0; s < steps; ++s, a += kStep, a1 += kStep, b += 16 * b_stride) {
    _tile_loadd(4, a, a_bytes);
    _tile_loadd(6, b, b_bytes);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b + 32, b_bytes);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1, a_bytes);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, c_bytes);
  _tile_stored(1, c + 16, c_bytes);
  _tile_stored(2, c1, c_bytes);
  _tile_stored(3, c1 + 16, c_bytes);
}

void interleave(const uint16_t* a, const uint16_t* b, int64_t n, uint16_t* out) {
  alignas(64) static constexpr uint16_t kLow[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i lo = _mm512_load_si512(kLow);
  const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
  for (int64_t i = 0; i < n; i += 32) {
    const int64_t left = n - i;
    const __mmask32 m = left >= 32 ? ~__mmask32(0) : (__mmask32(1) << left) - 1;
    const __m512i va = _mm512_maskz_loadu_epi16(m, a + i), vb = _mm512_maskz_loadu_epi16(m, b + i);
    const __m512i p0 = _mm512_permutex2var_epi16(va, lo, vb), p1 = _mm512_permutex2var_epi16(va, hi, vb);
    if (left >= 32) {
      _mm512_storeu_si512(out + 2 * i, p0);
      _mm512_storeu_si512(out + 2 * i + 32, p1);
    } else {  // 2 * left values: the first min(32, 2 left) from p0, the rest from p1
      const int64_t w = 2 * left;
      _mm512_mask_storeu_epi16(out + 2 * i, w >= 32 ? ~__mmask32(0) : (__mmask32(1) << w) - 1, p0);
      if (w > 32) _mm512_mask_storeu_epi16(out + 2 * i + 32, (__mmask32(1) << (w - 32)) - 1, p1);
    }
  }
}

void pack_step(const uint16_t* const* rows, uint16_t* dst) {
  for (int h = 0; h < 2; ++h, rows += 16, dst += 512) {
    __m512i r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(rows[i]);
    // 16 x 16 transpose of 32-bit lanes: 2x2, 4x4 blocks of lanes, then 128-bit quarters.
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
      r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
      r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
      r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
      r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    // r[4q + k] holds, in 128-bit quarter x, lanes 4x + k... of rows 4q..4q+3: gather quarters.
    for (int k = 0; k < 4; ++k) {
      const __m512i a = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x88);       // quarters 0, 2 | 0, 2
      const __m512i b = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xDD);       // quarters 1, 3 | 1, 3
      const __m512i c = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x88);
      const __m512i d = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xDD);
      t[k] = _mm512_shuffle_i32x4(a, c, 0x88);       // quarter 0 of every row group
      t[8 + k] = _mm512_shuffle_i32x4(a, c, 0xDD);   // quarter 2
      t[4 + k] = _mm512_shuffle_i32x4(b, d, 0x88);   // quarter 1
      t[12 + k] = _mm512_shuffle_i32x4(b, d, 0xDD);  // quarter 3
    }
    for (int i = 0; i < 16; ++i) _mm512_storeu_si512(dst + i * 32, t[i]);
  }
}

namespace {

// 16 floats to bf16 (round to nearest even, NaN as 0x7FC0: c10::BFloat16's conversion), the
// lanes of m stored at dst.
inline void store_bf16(__m512 v, __mmask16 m, uint16_t* dst) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  _mm256_mask_storeu_epi16(dst, m, _mm512_cvtepi32_epi16(r));
}

inline __mmask16 first_lanes(int n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

}  // namespace

void round_row(const float* src, const float* bias, int n, uint16_t* dst) {
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = first_lanes(n - j);
    __m512 v = _mm512_maskz_loadu_ps(m, src + j);
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
    store_bf16(v, m, dst + j);
  }
}

void round_column(const float* src, int64_t stride, float bias, int n, uint16_t* dst) {
  const __m512i lanes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(static_cast<int>(stride)));
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = first_lanes(n - i);
    const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lanes, src + i * stride, 4);
    store_bf16(_mm512_add_ps(v, _mm512_set1_ps(bias)), m, dst + i);
  }
}

}  // namespace convpool::cpu::amx::avx512_amx
#endif
