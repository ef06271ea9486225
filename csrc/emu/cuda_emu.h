// A CPU emulation of the parts of the CUDA execution model our kernels use, so that the kernel
// sources in csrc/cuda/ compile with the host compiler and run on CPU tensors (tests, CI).
//
// Model: a launch runs its blocks one after another; the threads of a block are cooperative fibers
// (ucontext) that run one at a time, each until it reaches a barrier (__syncthreads, a warp
// collective) or returns. Between barriers the threads run in a configurable order (forward,
// reverse, a seeded shuffle redrawn at every barrier), so a kernel that misses a __syncthreads
// reads shared memory its neighbours have not written yet (or have already overwritten) and gives
// wrong results. A warp whose lanes complete a warp collective runs on as far as it can before the
// next warp moves, so warps drift apart as they may on hardware. Shared memory starts as 0xFF bytes (NaN for floats) at every block.
//
// Limits of real hardware are checked at launch and reported as std::runtime_error (a
// RuntimeError in Python): threads per block and block dimensions, grid dimensions, dynamic shared
// memory (48 KB unless raised with set_max_dynamic_shared_memory, never above 227 KB), static
// shared memory (CONVPOOL_STATIC_SHARED in cuda/launch.cuh: 48 KB). Static and dynamic shared
// memory are filled with 0xFF bytes at the start of every block.
//
// WMMA (nvcuda::wmma): fragments with the real shapes and element types (m16n16k16 for half and
// bfloat16, m16n16k8 for tf32, float accumulators). The layout of a fragment's elements across the
// lanes is unspecified by CUDA; here every lane holds the whole tile (num_elements = rows * cols),
// which serves element-wise use of `x[i]` the same way. Every wmma call is a warp collective (all
// 32 lanes must reach it); pointers must be 32-byte aligned and ldm a multiple of 16 bytes, as on
// hardware. mma_sync multiplies in float with fp32 accumulation, after truncating tf32 inputs to
// their 10 mantissa bits like the tensor cores.
//
// Warp collectives (__shfl*_sync, __ballot_sync, __all_sync, __any_sync, __syncwarp) wait until
// every lane named in the mask has arrived, like the hardware; a lane of the mask that exits or
// waits at another barrier instead is reported as an error.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

using cudaStream_t = void*;

namespace convpool::emu {

// Hardware limits (sm_90).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDimXY = 1024, kMaxBlockDimZ = 64;
constexpr unsigned long long kMaxGridDimX = 2147483647ull;
constexpr unsigned kMaxGridDimYZ = 65535;
constexpr size_t kDefaultDynamicShared = 48 * 1024;
constexpr size_t kMaxDynamicSharedOptIn = 227 * 1024;
constexpr size_t kMaxStaticShared = 48 * 1024;
constexpr int kWarpSize = 32;

enum class Order : int { kForward = 0, kReverse = 1, kShuffle = 2 };
void set_order(Order order, uint64_t seed);

// Thread-local state of the fiber that is running (see emulator.cpp).
struct ThreadState {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  unsigned char* dynamic_shared;
};
extern thread_local ThreadState current;

// Runs `body` once per thread of every block. Throws std::runtime_error on a limit breach,
// a deadlock or a malformed warp collective.
void run_grid(const void* kernel_id, dim3 grid, dim3 block, size_t dynamic_shared,
              const std::function<void()>& body);

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
void set_max_dynamic_shared_memory(const void* kernel_id, size_t bytes);

void syncthreads();
// A misuse found by a running kernel thread: the launch stops and throws `message` (exceptions
// cannot cross a fiber's stack, so the scheduler throws it).
[[noreturn]] void kernel_error(const std::string& message);
// The block's static shared array identified by `tag` (CONVPOOL_STATIC_SHARED).
void* static_shared(const void* tag, size_t bytes, size_t align);
// After a warp collective: whether this lane is the first of its warp to go on from it (the one
// that performs a WMMA load or store for the whole warp, at the moment the warp converged), and
// the warp's scratch buffer (kWarpScratchBytes) through which it hands a loaded tile to the others.
constexpr size_t kWarpScratchBytes = 16 * 16 * sizeof(float);
bool warp_collective_leader(unsigned char** scratch);
// Warp collective: every lane of `mask` deposits `value` and asks for lane `source`'s value
// (or, with ballot, the mask of lanes whose value is non-zero). Returns what it asked for.
uint64_t warp_exchange(unsigned mask, uint64_t value, int source, bool ballot);

inline unsigned lane_id() {
  const ThreadState& s = current;
  const unsigned linear =
      s.thread_idx.x + s.block_dim.x * (s.thread_idx.y + s.block_dim.y * s.thread_idx.z);
  return linear % kWarpSize;
}

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type over 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace convpool::emu

#define threadIdx (::convpool::emu::current.thread_idx)
#define blockIdx (::convpool::emu::current.block_idx)
#define blockDim (::convpool::emu::current.block_dim)
#define gridDim (::convpool::emu::current.grid_dim)
#define warpSize 32

inline void __syncthreads() { ::convpool::emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::convpool::emu::warp_exchange(mask, 0, 0, false);
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {
  const int lane = ::convpool::emu::lane_id();
  const int source = (lane / width) * width + ((src % width) + width) % width;
  return ::convpool::emu::from_bits<T>(
      ::convpool::emu::warp_exchange(mask, ::convpool::emu::to_bits(v), source, false));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  const int lane = ::convpool::emu::lane_id();
  int source = lane ^ lane_mask;
  if (source / width != lane / width) source = lane;
  return ::convpool::emu::from_bits<T>(
      ::convpool::emu::warp_exchange(mask, ::convpool::emu::to_bits(v), source, false));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = ::convpool::emu::lane_id();
  int source = lane + static_cast<int>(delta);
  if (source / width != lane / width) source = lane;
  return ::convpool::emu::from_bits<T>(
      ::convpool::emu::warp_exchange(mask, ::convpool::emu::to_bits(v), source, false));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = ::convpool::emu::lane_id();
  int source = lane - static_cast<int>(delta);
  if (source < (lane / width) * width) source = lane;
  return ::convpool::emu::from_bits<T>(
      ::convpool::emu::warp_exchange(mask, ::convpool::emu::to_bits(v), source, false));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return static_cast<unsigned>(::convpool::emu::warp_exchange(mask, predicate != 0, 0, true));
}
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == mask;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

// Fibers never run at the same time and blocks run one after another: a plain read-modify-write
// is atomic here.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
T atomicMax(T* address, T value) {
  const T old = *address;
  if (value > old) *address = value;
  return old;
}

// ---- half / bfloat16 as cuda_fp16.h / cuda_bf16.h spell them --------------------------------

using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;
inline __half __float2half(float v) { return __half(v); }                  // round to nearest even
inline float __half2float(__half v) { return static_cast<float>(v); }
inline __nv_bfloat16 __float2bfloat16(float v) { return __nv_bfloat16(v); }  // round to nearest even
inline float __bfloat162float(__nv_bfloat16 v) { return static_cast<float>(v); }

// ---- nvcuda::wmma ---------------------------------------------------------------------------

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <typename T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};
template <class Use, int M, int N, int K>
struct dims;
template <int M, int N, int K>
struct dims<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct dims<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct dims<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};
template <class Use, int M, int N, int K, typename T>
constexpr bool supported() {
  if constexpr (std::is_same_v<Use, accumulator>) {
    return ((M == 16 && N == 16 && (K == 16 || K == 8)) && std::is_same_v<T, float>);
  } else if constexpr (std::is_same_v<T, precision::tf32>) {
    return M == 16 && N == 16 && K == 8;
  } else {
    return M == 16 && N == 16 && K == 16 &&
           (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>);
  }
}

inline void warp_converge() { ::convpool::emu::warp_exchange(0xffffffffu, 0, 0, false); }

inline void check_pointer(const void* p, unsigned ldm, size_t element_bytes, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    ::convpool::emu::kernel_error(std::string(what) + ": pointer not 256-bit aligned");
  if ((ldm * element_bytes) % 16 != 0)
    ::convpool::emu::kernel_error(std::string(what) + ": ldm is not a multiple of 16 bytes");
}

inline float tf32_truncate(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits &= 0xFFFFE000u;
  std::memcpy(&v, &bits, 4);
  return v;
}
}  // namespace detail

template <class Use, int M, int N, int K, typename T, class Layout = void>
struct fragment {
  static_assert(detail::supported<Use, M, N, K, T>(), "WMMA shape/type not supported by hardware");
  using element_type = typename detail::storage<T>::type;
  static constexpr int rows = detail::dims<Use, M, N, K>::rows;
  static constexpr int cols = detail::dims<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];  // row-major: x[r * cols + c]
};

template <class Use, int M, int N, int K, typename T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f,
                   typename fragment<Use, M, N, K, T, Layout>::element_type v) {
  for (auto& e : f.x) e = v;
}

// matrix_a / matrix_b: the layout is part of the fragment type.
template <class Use, int M, int N, int K, typename T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f,
                      const typename fragment<Use, M, N, K, T, Layout>::element_type* p,
                      unsigned ldm) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                "matrix_a/matrix_b fragments need a layout");
  using F = fragment<Use, M, N, K, T, Layout>;
  detail::check_pointer(p, ldm, sizeof(*p), "load_matrix_sync");
  detail::warp_converge();
  unsigned char* scratch;
  if (::convpool::emu::warp_collective_leader(&scratch)) {
    for (int r = 0; r < F::rows; ++r)
      for (int c = 0; c < F::cols; ++c)
        f.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
    std::memcpy(scratch, f.x, sizeof(f.x));
  } else {
    std::memcpy(f.x, scratch, sizeof(f.x));
  }
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                      layout_t layout) {
  detail::check_pointer(p, ldm, sizeof(float), "load_matrix_sync");
  detail::warp_converge();
  unsigned char* scratch;
  if (::convpool::emu::warp_collective_leader(&scratch)) {
    for (int r = 0; r < M; ++r)
      for (int c = 0; c < N; ++c)
        f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
    std::memcpy(scratch, f.x, sizeof(f.x));
  } else {
    std::memcpy(f.x, scratch, sizeof(f.x));
  }
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  detail::check_pointer(p, ldm, sizeof(float), "store_matrix_sync");
  detail::warp_converge();
  unsigned char* scratch;
  if (!::convpool::emu::warp_collective_leader(&scratch)) return;
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}

template <int M, int N, int K, typename T, class LayoutA, class LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d,
              const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  detail::warp_converge();
  auto in = [](auto v) {
    const float f = static_cast<float>(v);
    return std::is_same_v<T, precision::tf32> ? detail::tf32_truncate(f) : f;
  };
  fragment<accumulator, M, N, K, float> out;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float sum = c.x[i * N + j];
      for (int k = 0; k < K; ++k) sum += in(a.x[i * K + k]) * in(b.x[k * N + j]);
      out.x[i * N + j] = sum;
    }
  d = out;
}

// Round to the nearest tf32 value, ties away from zero (cvt.rna.tf32.f32).
inline float __float_to_tf32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7F800000u) != 0x7F800000u) bits += 0x1000u;  // finite: round half away
  bits &= 0xFFFFE000u;
  std::memcpy(&v, &bits, 4);
  return v;
}

}  // namespace nvcuda::wmma
