// CUDA conv2d: fprop, dgrad and wgrad as implicit GEMMs (no im2col buffer), a direct kernel for
// depthwise fprop/dgrad, a deterministic grad_bias reduction.
//
// The three GEMMs, per group g (CUTLASS's names and shapes):
//   fprop  M = N*Ho*Wo (output pixels)  N = Cout/G  K = Cin/G*KH*KW
//          A[m][k] = input at (pixel m, tap k) or 0 in the padding; B[k][n] = weight
//   dgrad  M = N*H*W (input pixels)     N = Cin/G   K = Cout/G*KH*KW
//          A[m][k] = grad_output at the output pixel that tap k of output channel k/(KH*KW) reads
//          input pixel m from, or 0 when the stride skips it; B[k][n] = weight
//   wgrad  M = Cout/G                   N = Cin/G*KH*KW   K = N*Ho*Wo (split in parts)
//          A[m][k] = grad_output; B[k][n] = input at (pixel k, tap n)
// One kernel runs them all: tiles of A and B are gathered from global memory (any strides: NCHW,
// channels_last, views) into shared memory, each thread accumulates a kTM x kTN register block, the
// epilogue converts (and adds the bias) on the way out. All offsets are 64-bit.
//
// Tensor cores (implicit_gemm_wmma_kernel): the same tiles, converted to half / bfloat16 / tf32
// on their way into shared memory, multiplied by WMMA fragments (m16n16k16, m16n16k8 for tf32)
// with fp32 accumulation; float32 takes this path only when allow_tf32 is set (PyTorch's
// torch.backends.cudnn.allow_tf32), float64 never.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#ifndef CONVPOOL_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#endif

#include "kernels.h"
#include "indexing.cuh"
#include "launch.cuh"

namespace convpool::CONVPOOL_KERNEL_NS {
namespace {

// Block tile kBM x kBN x kBK; each of the (kBM/kTM) * (kBN/kTN) threads owns a kTM x kTN block.
constexpr int kBM = 32, kBN = 32, kBK = 8, kTM = 4, kTN = 4;
constexpr int kGemmThreads = (kBM / kTM) * (kBN / kTN);
static_assert(kGemmThreads == 64, "tile shape");

// Conv2dParams' own helpers are host-only under nvcc.
__host__ __device__ inline int64_t cin_g(const Conv2dParams& p) { return p.in_channels / p.groups; }
__host__ __device__ inline int64_t cout_g(const Conv2dParams& p) { return p.out_channels / p.groups; }
__host__ __device__ inline int64_t gemm_k(const Conv2dParams& p) {
  return cin_g(p) * p.kernel_h * p.kernel_w;
}

struct Range {
  int64_t begin, end;
};

// ---- the three problems ---------------------------------------------------------------------

template <typename T>
struct FpropProblem {
  using Acc = acc_type<T>;
  Conv2dParams p;
  const T* input;
  Strides4 is;
  const T* weight;
  Strides4 ws;
  const T* bias;
  T* output;
  Strides4 os;

  __device__ int64_t batches() const { return p.groups; }
  __device__ int64_t m() const { return p.batch * p.out_height * p.out_width; }
  __device__ int64_t n() const { return cout_g(p); }
  __device__ Range k_range(int64_t) const { return {0, gemm_k(p)}; }

  __device__ Acc a(int64_t g, int64_t m, int64_t k) const {
    const int64_t pixels = p.out_height * p.out_width;
    const int64_t b = m / pixels, oh = (m % pixels) / p.out_width, ow = m % p.out_width;
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t c = g * cin_g(p) + k / taps;
    const int64_t kh = (k % taps) / p.kernel_w, kw = k % p.kernel_w;
    const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
    const int64_t iw = ow * p.stride_w - p.pad_w + kw * p.dilation_w;
    if (ih < 0 || ih >= p.in_height || iw < 0 || iw >= p.in_width) return Acc(0);
    return static_cast<Acc>(input[b * is.n + c * is.c + ih * is.h + iw * is.w]);
  }
  __device__ Acc b(int64_t g, int64_t k, int64_t n) const {
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t co = g * cout_g(p) + n;
    const int64_t kh = (k % taps) / p.kernel_w, kw = k % p.kernel_w;
    return static_cast<Acc>(weight[co * ws.n + (k / taps) * ws.c + kh * ws.h + kw * ws.w]);
  }
  __device__ void store(int64_t g, int64_t m, int64_t n, Acc v) const {
    const int64_t pixels = p.out_height * p.out_width;
    const int64_t b = m / pixels, oh = (m % pixels) / p.out_width, ow = m % p.out_width;
    const int64_t co = g * cout_g(p) + n;
    if (bias) v += static_cast<Acc>(bias[co]);
    output[b * os.n + co * os.c + oh * os.h + ow * os.w] = static_cast<T>(v);
  }
};

template <typename T>
struct DgradProblem {
  using Acc = acc_type<T>;
  Conv2dParams p;
  const T* grad_output;
  Strides4 gs;
  const T* weight;
  Strides4 ws;
  T* grad_input;
  Strides4 is;

  __device__ int64_t batches() const { return p.groups; }
  __device__ int64_t m() const { return p.batch * p.in_height * p.in_width; }
  __device__ int64_t n() const { return cin_g(p); }
  __device__ Range k_range(int64_t) const {
    return {0, cout_g(p) * p.kernel_h * p.kernel_w};
  }

  __device__ Acc a(int64_t g, int64_t m, int64_t k) const {
    const int64_t pixels = p.in_height * p.in_width;
    const int64_t b = m / pixels, ih = (m % pixels) / p.in_width, iw = m % p.in_width;
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t co = g * cout_g(p) + k / taps;
    const int64_t kh = (k % taps) / p.kernel_w, kw = k % p.kernel_w;
    const int64_t th = ih + p.pad_h - kh * p.dilation_h;
    const int64_t tw = iw + p.pad_w - kw * p.dilation_w;
    if (th < 0 || tw < 0 || th % p.stride_h != 0 || tw % p.stride_w != 0) return Acc(0);
    const int64_t oh = th / p.stride_h, ow = tw / p.stride_w;
    if (oh >= p.out_height || ow >= p.out_width) return Acc(0);
    return static_cast<Acc>(grad_output[b * gs.n + co * gs.c + oh * gs.h + ow * gs.w]);
  }
  __device__ Acc b(int64_t g, int64_t k, int64_t n) const {
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t co = g * cout_g(p) + k / taps;
    const int64_t kh = (k % taps) / p.kernel_w, kw = k % p.kernel_w;
    return static_cast<Acc>(weight[co * ws.n + n * ws.c + kh * ws.h + kw * ws.w]);
  }
  __device__ void store(int64_t g, int64_t m, int64_t n, Acc v) const {
    const int64_t pixels = p.in_height * p.in_width;
    const int64_t b = m / pixels, ih = (m % pixels) / p.in_width, iw = m % p.in_width;
    const int64_t c = g * cin_g(p) + n;
    grad_input[b * is.n + c * is.c + ih * is.h + iw * is.w] = static_cast<T>(v);
  }
};

// Batch index z = split * groups + g; partial sums of split s go to workspace[s][g][m][n].
template <typename T>
struct WgradProblem {
  using Acc = acc_type<T>;
  Conv2dParams p;
  const T* grad_output;
  Strides4 gs;
  const T* input;
  Strides4 is;
  Acc* workspace;
  int64_t splits, chunk;

  __device__ int64_t batches() const { return p.groups * splits; }
  __device__ int64_t m() const { return cout_g(p); }
  __device__ int64_t n() const { return gemm_k(p); }
  __device__ Range k_range(int64_t z) const {
    const int64_t total = p.batch * p.out_height * p.out_width;
    const int64_t begin = (z / p.groups) * chunk;
    return {begin, begin + chunk < total ? begin + chunk : total};
  }

  __device__ Acc a(int64_t z, int64_t m, int64_t k) const {
    const int64_t pixels = p.out_height * p.out_width;
    const int64_t b = k / pixels, oh = (k % pixels) / p.out_width, ow = k % p.out_width;
    const int64_t co = (z % p.groups) * cout_g(p) + m;
    return static_cast<Acc>(grad_output[b * gs.n + co * gs.c + oh * gs.h + ow * gs.w]);
  }
  __device__ Acc b(int64_t z, int64_t k, int64_t n) const {
    const int64_t pixels = p.out_height * p.out_width;
    const int64_t b = k / pixels, oh = (k % pixels) / p.out_width, ow = k % p.out_width;
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t c = (z % p.groups) * cin_g(p) + n / taps;
    const int64_t kh = (n % taps) / p.kernel_w, kw = n % p.kernel_w;
    const int64_t ih = oh * p.stride_h - p.pad_h + kh * p.dilation_h;
    const int64_t iw = ow * p.stride_w - p.pad_w + kw * p.dilation_w;
    if (ih < 0 || ih >= p.in_height || iw < 0 || iw >= p.in_width) return Acc(0);
    return static_cast<Acc>(input[b * is.n + c * is.c + ih * is.h + iw * is.w]);
  }
  __device__ void store(int64_t z, int64_t m, int64_t n, Acc v) const {
    workspace[(z * cout_g(p) + m) * gemm_k(p) + n] = v;
  }
};

// ---- the GEMM mainloop ----------------------------------------------------------------------

// grid: x over M tiles, y over N tiles, z over batches (groups, splits); each loops over what the
// grid limits leave out. Every thread of a block runs the same trip counts, so the barriers are
// uniform.
template <class Problem>
__global__ void __launch_bounds__(kGemmThreads) implicit_gemm_kernel(Problem prob) {
  using Acc = typename Problem::Acc;
  CONVPOOL_DYNAMIC_SHARED(Acc, shared);
  Acc* a_tile = shared;              // [kBK][kBM]
  Acc* b_tile = shared + kBK * kBM;  // [kBK][kBN]
  const int tid = threadIdx.x;
  const int row = tid / (kBN / kTN), col = tid % (kBN / kTN);
  const int64_t m_size = prob.m(), n_size = prob.n();
  const int64_t m_tiles = ceil_div(m_size, kBM), n_tiles = ceil_div(n_size, kBN);

  for (int64_t z = blockIdx.z; z < prob.batches(); z += gridDim.z) {
    const Range kr = prob.k_range(z);
    for (int64_t tn = blockIdx.y; tn < n_tiles; tn += gridDim.y) {
      for (int64_t tm = blockIdx.x; tm < m_tiles; tm += gridDim.x) {
        Acc acc[kTM][kTN];
        for (int i = 0; i < kTM; ++i)
          for (int j = 0; j < kTN; ++j) acc[i][j] = Acc(0);

        for (int64_t k0 = kr.begin; k0 < kr.end; k0 += kBK) {
          // Global -> shared: consecutive threads take consecutive rows (pixels) of a k slice.
          for (int e = tid; e < kBK * kBM; e += kGemmThreads) {
            const int kk = e / kBM, mm = e % kBM;
            const int64_t m = tm * kBM + mm, k = k0 + kk;
            a_tile[e] = (m < m_size && k < kr.end) ? prob.a(z, m, k) : Acc(0);
          }
          for (int e = tid; e < kBK * kBN; e += kGemmThreads) {
            const int kk = e / kBN, nn = e % kBN;
            const int64_t n = tn * kBN + nn, k = k0 + kk;
            b_tile[e] = (n < n_size && k < kr.end) ? prob.b(z, k, n) : Acc(0);
          }
          __syncthreads();  // the tiles are complete
          for (int kk = 0; kk < kBK; ++kk) {
            Acc a[kTM], b[kTN];
            for (int i = 0; i < kTM; ++i) a[i] = a_tile[kk * kBM + row + i * (kBM / kTM)];
            for (int j = 0; j < kTN; ++j) b[j] = b_tile[kk * kBN + col + j * (kBN / kTN)];
            for (int i = 0; i < kTM; ++i)
              for (int j = 0; j < kTN; ++j) acc[i][j] += a[i] * b[j];
          }
          __syncthreads();  // everyone is done reading before the next tiles overwrite them
        }

        for (int i = 0; i < kTM; ++i) {
          const int64_t m = tm * kBM + row + i * (kBM / kTM);
          if (m >= m_size) continue;
          for (int j = 0; j < kTN; ++j) {
            const int64_t n = tn * kBN + col + j * (kBN / kTN);
            if (n < n_size) prob.store(z, m, n, acc[i][j]);
          }
        }
      }
    }
  }
}

template <class Problem>
void run_gemm(const Problem& prob, int64_t m, int64_t n, int64_t batches, void* stream) {
  using Acc = typename Problem::Acc;
  const dim3 grid(grid_dim(ceil_div(m, kBM), kMaxGridX), grid_dim(ceil_div(n, kBN), kMaxGridYZ),
                  grid_dim(batches, kMaxGridYZ));
  launch(implicit_gemm_kernel<Problem>, grid, dim3(kGemmThreads), (kBM + kBN) * kBK * sizeof(Acc),
         stream, prob);
}

// ---- the GEMM on tensor cores (WMMA) -------------------------------------------------------

// A 32 x 32 block tile of 4 warps, each owning a 16 x 16 accumulator fragment; k tiles of 16.
constexpr int kWmmaBM = 32, kWmmaBN = 32, kWmmaBK = 16, kWmmaThreads = 128;

template <typename T>
struct WmmaTraits;
template <>
struct WmmaTraits<c10::Half> {
  using elem = __half;  // in shared memory
  using frag = __half;  // fragment type
  static constexpr int kK = 16;
  static constexpr int kMinArch = 70;
  __device__ static elem convert(float v) { return __float2half(v); }
};
template <>
struct WmmaTraits<c10::BFloat16> {
  using elem = __nv_bfloat16;
  using frag = __nv_bfloat16;
  static constexpr int kK = 16;
  static constexpr int kMinArch = 80;
  __device__ static elem convert(float v) { return __float2bfloat16(v); }
};
template <>
struct WmmaTraits<float> {
  using elem = float;
  static constexpr int kK = 8;
  static constexpr int kMinArch = 80;
#if defined(CONVPOOL_EMULATE) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using frag = nvcuda::wmma::precision::tf32;
  __device__ static elem convert(float v) { return nvcuda::wmma::__float_to_tf32(v); }
#else  // compiling for a GPU without TF32: never launched there (use_tensor_cores)
  using frag = float;
  __device__ static elem convert(float v) { return v; }
#endif
};

template <typename T>
constexpr size_t wmma_shared_bytes() {
  using E = typename WmmaTraits<T>::elem;
  return (kWmmaBM * kWmmaBK + kWmmaBK * kWmmaBN) * sizeof(E) + kWmmaBM * kWmmaBN * sizeof(float);
}

template <class Problem, typename T>
__global__ void __launch_bounds__(kWmmaThreads) implicit_gemm_wmma_kernel(Problem prob) {
  // WMMA for bfloat16 and tf32 exists from sm_80, for half from sm_70: the host never launches
  // this kernel on older GPUs, whose build of it is empty.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
  constexpr bool kArchOk = false;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  constexpr bool kArchOk = WmmaTraits<T>::kMinArch <= 70;
#else
  constexpr bool kArchOk = true;
#endif
  if constexpr (kArchOk) {
    namespace wmma = nvcuda::wmma;
    using W = WmmaTraits<T>;
    using E = typename W::elem;
    constexpr int kK = W::kK;
    CONVPOOL_DYNAMIC_SHARED(unsigned char, shared);
    E* a_tile = reinterpret_cast<E*>(shared);  // column-major [kWmmaBK][kWmmaBM]: m fastest
    E* b_tile = a_tile + kWmmaBM * kWmmaBK;    // row-major [kWmmaBK][kWmmaBN]
    float* c_tile = reinterpret_cast<float*>(b_tile + kWmmaBK * kWmmaBN);  // [kWmmaBM][kWmmaBN]
    const int tid = threadIdx.x, warp = tid / 32;
    const int warp_m = warp / 2, warp_n = warp % 2;
    const int64_t m_size = prob.m(), n_size = prob.n();
    const int64_t m_tiles = ceil_div(m_size, kWmmaBM), n_tiles = ceil_div(n_size, kWmmaBN);

    for (int64_t z = blockIdx.z; z < prob.batches(); z += gridDim.z) {
      const Range kr = prob.k_range(z);
      for (int64_t tn = blockIdx.y; tn < n_tiles; tn += gridDim.y) {
        for (int64_t tm = blockIdx.x; tm < m_tiles; tm += gridDim.x) {
          wmma::fragment<wmma::accumulator, 16, 16, kK, float> acc;
          wmma::fill_fragment(acc, 0.0f);
          for (int64_t k0 = kr.begin; k0 < kr.end; k0 += kWmmaBK) {
            for (int e = tid; e < kWmmaBK * kWmmaBM; e += kWmmaThreads) {
              const int kk = e / kWmmaBM, mm = e % kWmmaBM;
              const int64_t m = tm * kWmmaBM + mm, k = k0 + kk;
              a_tile[e] = W::convert((m < m_size && k < kr.end) ? prob.a(z, m, k) : 0.0f);
            }
            for (int e = tid; e < kWmmaBK * kWmmaBN; e += kWmmaThreads) {
              const int kk = e / kWmmaBN, nn = e % kWmmaBN;
              const int64_t n = tn * kWmmaBN + nn, k = k0 + kk;
              b_tile[e] = W::convert((n < n_size && k < kr.end) ? prob.b(z, k, n) : 0.0f);
            }
            __syncthreads();  // the tiles are complete
            for (int ks = 0; ks < kWmmaBK; ks += kK) {
              wmma::fragment<wmma::matrix_a, 16, 16, kK, typename W::frag, wmma::col_major> a;
              wmma::fragment<wmma::matrix_b, 16, 16, kK, typename W::frag, wmma::row_major> b;
              wmma::load_matrix_sync(a, a_tile + ks * kWmmaBM + warp_m * 16, kWmmaBM);
              wmma::load_matrix_sync(b, b_tile + ks * kWmmaBN + warp_n * 16, kWmmaBN);
              wmma::mma_sync(acc, a, b, acc);
            }
            __syncthreads();  // everyone is done reading before the next tiles overwrite them
          }
          wmma::store_matrix_sync(c_tile + warp_m * 16 * kWmmaBN + warp_n * 16, acc, kWmmaBN,
                                  wmma::mem_row_major);
          __syncthreads();  // the accumulator tile is complete
          for (int e = tid; e < kWmmaBM * kWmmaBN; e += kWmmaThreads) {
            const int mm = e % kWmmaBM, nn = e / kWmmaBM;
            const int64_t m = tm * kWmmaBM + mm, n = tn * kWmmaBN + nn;
            if (m < m_size && n < n_size) prob.store(z, m, n, c_tile[mm * kWmmaBN + nn]);
          }
          // No barrier here: K >= 1, so the next tile's first k step passes a barrier before
          // any warp stores to c_tile again.
        }
      }
    }
  }
}

int device_arch() {
#ifdef CONVPOOL_EMULATE
  return 90;
#else
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    throw std::runtime_error("convpool: cannot query the CUDA device's compute capability");
  return major * 10 + minor;
#endif
}

// Tensor cores for half and bfloat16, and for float when TF32 is allowed.
template <typename T>
bool use_tensor_cores(bool allow_tf32) {
  if constexpr (std::is_same_v<T, double>) {
    return false;
  } else {
    if (std::is_same_v<T, float> && !allow_tf32) return false;
    return device_arch() >= WmmaTraits<T>::kMinArch;
  }
}

template <typename T, class Problem>
void run_gemm_any(const Problem& prob, int64_t m, int64_t n, int64_t batches, bool allow_tf32,
                  void* stream) {
  if constexpr (!std::is_same_v<T, double>) {
    if (use_tensor_cores<T>(allow_tf32)) {
      const dim3 grid(grid_dim(ceil_div(m, kWmmaBM), kMaxGridX),
                      grid_dim(ceil_div(n, kWmmaBN), kMaxGridYZ), grid_dim(batches, kMaxGridYZ));
      launch(implicit_gemm_wmma_kernel<Problem, T>, grid, dim3(kWmmaThreads),
             wmma_shared_bytes<T>(), stream, prob);
      return;
    }
  }
  run_gemm(prob, m, n, batches, stream);
}

// ---- depthwise (one input channel per group): direct kernels, one thread per element ---------

template <typename T>
__global__ void depthwise_fprop_kernel(Conv2dParams p, const T* input, Strides4 is,
                                       const T* weight, Strides4 ws, const T* bias, T* output,
                                       Strides4 os, bool channels_fastest) {
  using Acc = acc_type<T>;
  const int64_t total = p.batch * p.out_channels * p.out_height * p.out_width;
  const int64_t mult = cout_g(p);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const Coord o = coord(e, p.out_channels, p.out_height, p.out_width, channels_fastest);
    const int64_t c = o.c / mult;
    Acc sum = Acc(0);
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      const int64_t ih = o.h * p.stride_h - p.pad_h + kh * p.dilation_h;
      if (ih < 0 || ih >= p.in_height) continue;
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const int64_t iw = o.w * p.stride_w - p.pad_w + kw * p.dilation_w;
        if (iw < 0 || iw >= p.in_width) continue;
        sum += static_cast<Acc>(input[o.n * is.n + c * is.c + ih * is.h + iw * is.w]) *
               static_cast<Acc>(weight[o.c * ws.n + kh * ws.h + kw * ws.w]);
      }
    }
    if (bias) sum += static_cast<Acc>(bias[o.c]);
    output[o.n * os.n + o.c * os.c + o.h * os.h + o.w * os.w] = static_cast<T>(sum);
  }
}

template <typename T>
__global__ void depthwise_dgrad_kernel(Conv2dParams p, const T* grad_output, Strides4 gs,
                                       const T* weight, Strides4 ws, T* grad_input, Strides4 is,
                                       bool channels_fastest) {
  using Acc = acc_type<T>;
  const int64_t total = p.batch * p.in_channels * p.in_height * p.in_width;
  const int64_t mult = cout_g(p);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const Coord i = coord(e, p.in_channels, p.in_height, p.in_width, channels_fastest);
    Acc sum = Acc(0);
    for (int64_t co = i.c * mult; co < (i.c + 1) * mult; ++co) {
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t th = i.h + p.pad_h - kh * p.dilation_h;
        if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.out_height) continue;
        for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const int64_t tw = i.w + p.pad_w - kw * p.dilation_w;
          if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= p.out_width) continue;
          sum += static_cast<Acc>(grad_output[i.n * gs.n + co * gs.c + (th / p.stride_h) * gs.h +
                                              (tw / p.stride_w) * gs.w]) *
                 static_cast<Acc>(weight[co * ws.n + kh * ws.h + kw * ws.w]);
        }
      }
    }
    grad_input[i.n * is.n + i.c * is.c + i.h * is.h + i.w * is.w] = static_cast<T>(sum);
  }
}

constexpr int kElementwiseThreads = 256;

unsigned elementwise_blocks(int64_t total) {
  // Enough blocks to fill a large GPU; the kernels loop over the rest.
  const int64_t blocks = ceil_div(total, kElementwiseThreads);
  return grid_dim(blocks < 65536 ? blocks : 65536, kMaxGridX);
}

bool is_depthwise(const Conv2dParams& p) {
  return p.groups > 1 && cin_g(p) == 1;
}

// ---- wgrad: fixed-order sum of the split partials ----------------------------------------------

template <typename T>
__global__ void wgrad_reduce_kernel(Conv2dParams p, const acc_type<T>* workspace, int64_t splits,
                                    T* grad_weight, Strides4 ws) {
  using Acc = acc_type<T>;
  const int64_t per_split = p.out_channels * gemm_k(p);
  const int64_t taps = p.kernel_h * p.kernel_w;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per_split;
       e += int64_t(gridDim.x) * blockDim.x) {
    Acc sum = Acc(0);
    for (int64_t s = 0; s < splits; ++s) sum += workspace[s * per_split + e];
    const int64_t co = e / gemm_k(p), k = e % gemm_k(p);
    const int64_t c = k / taps, kh = (k % taps) / p.kernel_w, kw = k % p.kernel_w;
    grad_weight[co * ws.n + c * ws.c + kh * ws.h + kw * ws.w] = static_cast<T>(sum);
  }
}

// ---- grad_bias: one block per channel, tree reduction in shared memory -----------------------

constexpr int kBiasThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    grad_bias_kernel(const T* grad_output, Strides4 gs, int64_t N, int64_t C, int64_t H, int64_t W,
                     T* grad_bias) {
  using Acc = acc_type<T>;
  CONVPOOL_STATIC_SHARED(Acc, partial, kBiasThreads);
  const int tid = threadIdx.x;
  const int64_t per_channel = N * H * W;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    Acc sum = Acc(0);
    for (int64_t e = tid; e < per_channel; e += kBiasThreads) {
      const int64_t n = e / (H * W), h = (e / W) % H, w = e % W;
      sum += static_cast<Acc>(grad_output[n * gs.n + c * gs.c + h * gs.h + w * gs.w]);
    }
    partial[tid] = sum;
    __syncthreads();
    for (int width = kBiasThreads / 2; width > 0; width /= 2) {
      if (tid < width) partial[tid] += partial[tid + width];
      __syncthreads();
    }
    // Only thread 0 reads partial[0] and writes it again for the next channel: no barrier.
    if (tid == 0) grad_bias[c] = static_cast<T>(partial[0]);
  }
}

}  // namespace

// ---- host entry points ------------------------------------------------------------------------

template <typename T>
void conv2d_fprop(const Conv2dParams& p, const T* input, Strides4 is, const T* weight, Strides4 ws,
                  const T* bias, T* output, Strides4 os, bool allow_tf32, void* stream) {
  if (is_depthwise(p)) {
    const int64_t total = p.batch * p.out_channels * p.out_height * p.out_width;
    launch(depthwise_fprop_kernel<T>, dim3(elementwise_blocks(total)), dim3(kElementwiseThreads),
           0, stream, p, input, is, weight, ws, bias, output, os,
           os.c == 1 && p.out_channels > 1);
    return;
  }
  const FpropProblem<T> prob{p, input, is, weight, ws, bias, output, os};
  run_gemm_any<T>(prob, p.batch * p.out_height * p.out_width, cout_g(p), p.groups, allow_tf32,
                  stream);
}

template <typename T>
void conv2d_dgrad(const Conv2dParams& p, const T* grad_output, Strides4 gs, const T* weight,
                  Strides4 ws, T* grad_input, Strides4 is, bool allow_tf32, void* stream) {
  if (is_depthwise(p)) {
    const int64_t total = p.batch * p.in_channels * p.in_height * p.in_width;
    launch(depthwise_dgrad_kernel<T>, dim3(elementwise_blocks(total)), dim3(kElementwiseThreads),
           0, stream, p, grad_output, gs, weight, ws, grad_input, is,
           is.c == 1 && p.in_channels > 1);
    return;
  }
  const DgradProblem<T> prob{p, grad_output, gs, weight, ws, grad_input, is};
  run_gemm_any<T>(prob, p.batch * p.in_height * p.in_width, cin_g(p), p.groups, allow_tf32,
                  stream);
}

// Each split reduces at least 32 pixels (four k tiles), and there are at most 64 splits.
static int64_t wgrad_chunk(const Conv2dParams& p) {
  const int64_t total = p.batch * p.out_height * p.out_width;
  const int64_t chunk = ceil_div(total, 64);
  return ceil_div(chunk < 4 * kBK ? 4 * kBK : chunk, kBK) * kBK;
}

int64_t conv2d_wgrad_splits(const Conv2dParams& p) {
  return ceil_div(p.batch * p.out_height * p.out_width, wgrad_chunk(p));
}

int64_t conv2d_wgrad_workspace(const Conv2dParams& p) {
  return conv2d_wgrad_splits(p) * p.out_channels * gemm_k(p);
}

template <typename T>
void conv2d_wgrad(const Conv2dParams& p, const T* grad_output, Strides4 gs, const T* input,
                  Strides4 is, acc_type<T>* workspace, T* grad_weight, Strides4 ws,
                  bool allow_tf32, void* stream) {
  const int64_t splits = conv2d_wgrad_splits(p);
  const WgradProblem<T> prob{p, grad_output, gs, input, is, workspace, splits, wgrad_chunk(p)};
  run_gemm_any<T>(prob, cout_g(p), gemm_k(p), p.groups * splits, allow_tf32, stream);
  const int64_t total = p.out_channels * gemm_k(p);
  launch(wgrad_reduce_kernel<T>, dim3(elementwise_blocks(total)), dim3(kElementwiseThreads), 0,
         stream, p, static_cast<const acc_type<T>*>(workspace), splits, grad_weight, ws);
}

template <typename T>
void conv2d_grad_bias(const T* grad_output, Strides4 gs, int64_t n, int64_t c, int64_t h,
                      int64_t w, T* grad_bias, void* stream) {
  launch(grad_bias_kernel<T>, dim3(grid_dim(c, kMaxGridX)), dim3(kBiasThreads), 0, stream,
         grad_output, gs, n, c, h, w, grad_bias);
}

#define CONVPOOL_INSTANTIATE_CONV2D(T)                                                          \
  template void conv2d_fprop<T>(const Conv2dParams&, const T*, Strides4, const T*, Strides4,   \
                                const T*, T*, Strides4, bool, void*);                          \
  template void conv2d_dgrad<T>(const Conv2dParams&, const T*, Strides4, const T*, Strides4,   \
                                T*, Strides4, bool, void*);                                    \
  template void conv2d_wgrad<T>(const Conv2dParams&, const T*, Strides4, const T*, Strides4,   \
                                acc_type<T>*, T*, Strides4, bool, void*);                      \
  template void conv2d_grad_bias<T>(const T*, Strides4, int64_t, int64_t, int64_t, int64_t, T*, \
                                    void*);

CONVPOOL_INSTANTIATE_CONV2D(float)
CONVPOOL_INSTANTIATE_CONV2D(double)
CONVPOOL_INSTANTIATE_CONV2D(c10::Half)
CONVPOOL_INSTANTIATE_CONV2D(c10::BFloat16)

}  // namespace convpool::CONVPOOL_KERNEL_NS
