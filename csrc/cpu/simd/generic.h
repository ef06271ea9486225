// The vector vocabulary in plain C++ (no intrinsics, any architecture): the same names as
// simd/avx2.h and simd/avx512.h, a "vector" being a struct of kLanes values and each operation a
// plain loop over them, which the compiler may vectorize for the baseline ISA. It lets a kernel
// family written once over the vocabulary be compiled a third time as its portable variant
// (gemm/generic.cpp), with the register tile of the AVX2 kernels (8 float / 4 double lanes).
// Not here: lanes_mask (its type is each ISA's own; load_n / store_n take the lane count).
// fmadd is a * b + c as written (the compiler contracts it only where the target has FMA).
#pragma once

#include <cstdint>

namespace convpool::cpu::simd::generic {

constexpr int kLanes = 8;
struct V {
  float v[kLanes];
};
inline V zero() { return V{}; }
inline V set1(float x) {
  V r;
  for (int l = 0; l < kLanes; ++l) r.v[l] = x;
  return r;
}
inline V load(const float* p) {
  V r;
  for (int l = 0; l < kLanes; ++l) r.v[l] = p[l];
  return r;
}
inline V load_n(const float* p, int n) {
  V r{};
  for (int l = 0; l < n; ++l) r.v[l] = p[l];
  return r;
}
inline void store(float* p, V v) {
  for (int l = 0; l < kLanes; ++l) p[l] = v.v[l];
}
inline void store_n(float* p, V v, int n) {
  for (int l = 0; l < n; ++l) p[l] = v.v[l];
}
inline V add(V a, V b) {
  for (int l = 0; l < kLanes; ++l) a.v[l] += b.v[l];
  return a;
}
inline V sub(V a, V b) {
  for (int l = 0; l < kLanes; ++l) a.v[l] -= b.v[l];
  return a;
}
inline V mul(V a, V b) {
  for (int l = 0; l < kLanes; ++l) a.v[l] *= b.v[l];
  return a;
}
inline V fmadd(V a, V b, V c) {
  for (int l = 0; l < kLanes; ++l) c.v[l] = a.v[l] * b.v[l] + c.v[l];
  return c;
}
inline V load_bits(const float* p, uint32_t bits) {
  V r{};
  for (int l = 0; l < kLanes; ++l)
    if (bits >> l & 1u) r.v[l] = p[l];
  return r;
}
inline float hsum(V v) {  // in lane order
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += v.v[l];
  return s;
}
// r[i][j] <- r[j][i]
inline void transpose(V r[kLanes]) {
  for (int i = 0; i < kLanes; ++i)
    for (int j = i + 1; j < kLanes; ++j) {
      const float t = r[i].v[j];
      r[i].v[j] = r[j].v[i];
      r[j].v[i] = t;
    }
}

// ---- as simd/avx2.h: Vec<T> (float and double written once), 8 x 8 blocks ------------------

template <typename T, int N>
struct Lanes {
  T v[N];
};

template <typename T>
struct Vec {
  static constexpr int kLanes = 32 / sizeof(T);  // 8 float, 4 double: AVX2's register tile
  using V = Lanes<T, kLanes>;
  static V zero() { return V{}; }
  static V set1(T x) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = x;
    return r;
  }
  static V load(const T* p) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = p[l];
    return r;
  }
  static V load_n(const T* p, int n) {
    V r{};
    for (int l = 0; l < n; ++l) r.v[l] = p[l];
    return r;
  }
  static void store(T* p, V v) {
    for (int l = 0; l < kLanes; ++l) p[l] = v.v[l];
  }
  static void store_n(T* p, V v, int n) {
    for (int l = 0; l < n; ++l) p[l] = v.v[l];
  }
  static V add(V a, V b) {
    for (int l = 0; l < kLanes; ++l) a.v[l] += b.v[l];
    return a;
  }
  static V fmadd(V a, V b, V c) {
    for (int l = 0; l < kLanes; ++l) c.v[l] = a.v[l] * b.v[l] + c.v[l];
    return c;
  }
  static T hsum(V v) {
    T s = T(0);
    for (int l = 0; l < kLanes; ++l) s += v.v[l];
    return s;
  }
};

using V8 = Lanes<float, 8>;
inline V8 zero8() { return V8{}; }
inline V8 load8(const float* p) {
  V8 r;
  for (int l = 0; l < 8; ++l) r.v[l] = p[l];
  return r;
}
inline void store8(float* p, V8 v) {
  for (int l = 0; l < 8; ++l) p[l] = v.v[l];
}
inline void transpose8(V8 r[8]) {
  for (int i = 0; i < 8; ++i)
    for (int j = i + 1; j < 8; ++j) {
      const float t = r[i].v[j];
      r[i].v[j] = r[j].v[i];
      r[j].v[i] = t;
    }
}

}  // namespace convpool::cpu::simd::generic
