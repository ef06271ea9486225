// A CPU emulation of the parts of the CUDA execution model our kernels use, so that the kernel
// sources in csrc/cuda/ compile with the host compiler and run on CPU tensors (tests, CI).
//
// Model: a launch runs its blocks one after another; the threads of a block are cooperative fibers
// (ucontext) that run one at a time, each until it reaches a barrier (__syncthreads, a warp
// collective) or returns. Between barriers the threads run in a configurable order (forward,
// reverse, a seeded shuffle redrawn at every barrier), so a kernel that misses a __syncthreads
// reads shared memory its neighbours have not written yet (or have already overwritten) and gives
// wrong results. Shared memory starts as 0xFF bytes (NaN for floats) at every block.
//
// Limits of real hardware are checked at launch and reported as std::runtime_error (a
// RuntimeError in Python): threads per block and block dimensions, grid dimensions, dynamic shared
// memory (48 KB unless raised with set_max_dynamic_shared_memory, never above 227 KB). Static
// __shared__ arrays are bounded at compile time (CONVPOOL_STATIC_SHARED in cuda/launch.cuh).
//
// Warp collectives (__shfl*_sync, __ballot_sync, __all_sync, __any_sync, __syncwarp) wait until
// every lane named in the mask has arrived, like the hardware; a lane of the mask that exits or
// waits at another barrier instead is reported as an error.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
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
