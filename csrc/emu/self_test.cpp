// Self-tests of the CUDA emulator, run from tests/test_cuda_emulated.py through the private op
// convpool::_cuda_emulator_self_test(str name) -> int[] (registered in emu/backend.cpp).
// Small kernels that exercise one feature each; a breach of a limit throws.
#include <stdexcept>
#include <string>
#include <vector>

#define CONVPOOL_EMULATE 1
#define CONVPOOL_KERNEL_NS emu
#include "../cuda/launch.cuh"

namespace convpool::emu {
namespace {

// out[t] = in[n - 1 - t] through shared memory: wrong without the barrier, in every order.
__global__ void reverse_kernel(const int64_t* in, int64_t* out, bool barrier) {
  CONVPOOL_DYNAMIC_SHARED(int64_t, tile);
  const int t = threadIdx.x, n = blockDim.x;
  tile[t] = in[blockIdx.x * n + t];
  if (barrier) __syncthreads();
  out[blockIdx.x * n + t] = tile[n - 1 - t];
}

__global__ void empty_kernel() {}

// Per warp: butterfly sum with __shfl_xor_sync, a ballot, a __shfl_down_sync and __shfl_sync.
__global__ void warp_kernel(int64_t* out) {
  const unsigned lane = threadIdx.x % 32;
  int sum = static_cast<int>(threadIdx.x);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  const int down = __shfl_down_sync(0xffffffffu, static_cast<int>(lane) * 10, 1);
  const double from0 = __shfl_sync(0xffffffffu, 0.5 + threadIdx.x, 0);
  out[threadIdx.x * 4 + 0] = sum;
  out[threadIdx.x * 4 + 1] = ballot;
  out[threadIdx.x * 4 + 2] = down;
  out[threadIdx.x * 4 + 3] = static_cast<int64_t>(from0 * 2);
}

// Lane 0 skips the shuffle that names it in its mask: a deadlock on hardware.
__global__ void warp_divergent_kernel(int64_t* out) {
  if (threadIdx.x % 32 != 0) out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
}

// 2 x 32 KB of static shared memory: each array passes the compile-time check, the block does not.
__global__ void static_shared_kernel(int64_t* out) {
  CONVPOOL_STATIC_SHARED(int64_t, first, 4096);
  CONVPOOL_STATIC_SHARED(int64_t, second, 4096);
  first[threadIdx.x] = threadIdx.x;
  second[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = first[threadIdx.x] + second[threadIdx.x];
}

// One warp: D = A (16x16, row-major) x B (16x16, col-major) + 1 on m16n16k16 half fragments, A
// and B staged in shared memory at `offset` elements (1: misaligned).
__global__ void wmma_kernel(const float* a, const float* b, float* d, int offset) {
  namespace wmma = nvcuda::wmma;
  CONVPOOL_DYNAMIC_SHARED(__half, tiles);
  __half* a_tile = tiles + offset;
  __half* b_tile = tiles + 512;
  for (int e = threadIdx.x; e < 256; e += 32) {
    a_tile[e] = __float2half(a[e]);
    b_tile[e] = __float2half(b[e]);
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 1.0f);
  wmma::load_matrix_sync(fa, a_tile, 16);
  wmma::load_matrix_sync(fb, b_tile, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

// One warp: D = A x B on m16n16k8 tf32 fragments, the inputs rounded with __float_to_tf32.
__global__ void wmma_tf32_kernel(const float* a, const float* b, float* d) {
  namespace wmma = nvcuda::wmma;
  CONVPOOL_DYNAMIC_SHARED(float, tiles);
  for (int e = threadIdx.x; e < 128; e += 32) {
    tiles[e] = wmma::__float_to_tf32(a[e]);
    tiles[128 + e] = wmma::__float_to_tf32(b[e]);
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, tiles, 8);
  wmma::load_matrix_sync(fb, tiles + 128, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

__global__ void atomic_kernel(int64_t* counter) { atomicAdd(counter, int64_t(threadIdx.x)); }

}  // namespace

std::vector<int64_t> self_test(const std::string& name) {
  if (name == "reverse" || name == "reverse_no_barrier") {
    const int threads = 128, blocks = 3;
    std::vector<int64_t> in(threads * blocks), out(threads * blocks);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int64_t>(i);
    launch(reverse_kernel, dim3(blocks), dim3(threads), threads * sizeof(int64_t), nullptr,
           in.data(), out.data(), name == "reverse");
    return out;
  }
  if (name == "warp") {
    std::vector<int64_t> out(64 * 4);
    launch(warp_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
    return out;
  }
  if (name == "warp_divergent") {
    std::vector<int64_t> out(32);
    launch(warp_divergent_kernel, dim3(1), dim3(32), 0, nullptr, out.data());
    return out;
  }
  if (name == "wmma" || name == "wmma_misaligned") {
    // Small integers: exact in half, so the product is exact in fp32.
    std::vector<float> a(256), b(256);
    alignas(256) float d[256];  // like cudaMalloc'ed memory
    for (int i = 0; i < 256; ++i) {
      a[i] = static_cast<float>(i % 7 - 3);
      b[i] = static_cast<float>(i % 5 - 2);
    }
    launch(wmma_kernel, dim3(1), dim3(32), 1024 * sizeof(__half), nullptr, a.data(), b.data(),
           d, name == "wmma" ? 0 : 1);
    return std::vector<int64_t>(d, d + 256);
  }
  if (name == "wmma_tf32") {
    // 1 + 2^-12 rounds to 1 in tf32 (10 mantissa bits): D = A x B with A, B all ones -> 8.
    std::vector<float> a(128, 1.0f + 1.0f / 4096), b(128, 1.0f);
    alignas(256) float d[256];
    launch(wmma_tf32_kernel, dim3(1), dim3(32), 256 * sizeof(float), nullptr, a.data(), b.data(),
           d);
    std::vector<int64_t> out(256);
    for (int i = 0; i < 256; ++i) out[i] = static_cast<int64_t>(d[i] * 4096);
    return out;
  }
  if (name == "atomic") {
    int64_t counter = 0;
    launch(atomic_kernel, dim3(4), dim3(256), 0, nullptr, &counter);
    return {counter};
  }
  if (name == "too_many_threads") {
    launch(empty_kernel, dim3(1), dim3(1025), 0, nullptr);
  } else if (name == "block_z_too_large") {
    launch(empty_kernel, dim3(1), dim3(1, 1, 65), 0, nullptr);
  } else if (name == "grid_y_too_large") {
    launch(empty_kernel, dim3(1, 65536), dim3(32), 0, nullptr);
  } else if (name == "grid_z_too_large") {
    launch(empty_kernel, dim3(1, 1, 65536), dim3(32), 0, nullptr);
  } else if (name == "static_shared_over_limit") {
    std::vector<int64_t> out(32);
    launch(static_shared_kernel, dim3(1), dim3(32), 0, nullptr, out.data());
  } else if (name == "grid_y_max") {
    launch(empty_kernel, dim3(1, 65535), dim3(1), 0, nullptr);
  } else if (name == "shared_over_default") {
    launch(reverse_kernel, dim3(1), dim3(1), 48 * 1024 + 1, nullptr, nullptr, nullptr, false);
  } else if (name == "shared_opt_in") {
    // Raised to 100 KB: a 100 KB launch passes, one more byte does not.
    set_max_dynamic_shared_memory(empty_kernel, 100 * 1024);
    launch(empty_kernel, dim3(1), dim3(32), 100 * 1024, nullptr);
    launch(empty_kernel, dim3(1), dim3(32), 100 * 1024 + 1, nullptr);
  } else if (name == "shared_opt_in_over_max") {
    set_max_dynamic_shared_memory(empty_kernel, 227 * 1024 + 1);
  } else {
    throw std::invalid_argument("unknown emulator self-test '" + name + "'");
  }
  return {};
}

}  // namespace convpool::emu
