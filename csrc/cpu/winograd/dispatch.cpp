// Winograd F(4x4, 3x3) convolution on the CPU (see winograd.h): the dispatcher. The mode, the
// registry's predicates, the weight transform's and the blocks' split over the threads, the 36
// products (our GEMM's micro-kernel); the transforms are kernels_impl.h, written once over the
// vector vocabulary and compiled once per ISA (generic.cpp, avx2.cpp, avx512.cpp), the table of
// the CPU's ISA (isa.h's choice) picked here.
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

#include "../../shape.h"
#include "../gemm/gemm.h"
#include "../isa.h"
#include "kernels.h"

namespace convpool::cpu::winograd {
namespace {

// The transforms of the widest ISA the CPU has (capped by CONVPOOL_CPU_ISA).
const Kernels& kernels() {
  static const Kernels* const table = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_avx512()) return &avx512::kKernels;
    if (use_avx2()) return &avx2::kKernels;
#endif
    return &generic::kKernels;
  }();
  return *table;
}

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

// ---- problem geometry --------------------------------------------------------------------------

Geometry geometry(const Conv2dParams& p) {
  Geometry g{p.in_channels, p.out_channels, p.in_height, p.in_width, p.pad_h, p.pad_w,
             p.out_height, p.out_width, 0, 0, 0, 0};
  g.tiles_h = (p.out_height + kTile - 1) / kTile;
  g.tiles_w = (p.out_width + kTile - 1) / kTile;
  g.tiles_per_image = g.tiles_h * g.tiles_w;
  g.k_stride = gemm::round_up(p.in_channels, 8);
  return g;
}

// The packed U of a float weight (any strides), items split over the threads.
void weight_transform(const Geometry& geo, const at::Tensor& w, int nr, float* u_packed) {
  const float* wp = w.const_data_ptr<float>();
  const Strides4 ws = strides4(w);
  const int64_t items = (geo.out_channels + nr - 1) / nr * geo.in_channels;
  TORCH_CHECK(nr == 16 || nr == 32, "convpool Winograd: unsupported GEMM panel width ", nr);
  const auto transform = kernels().weight_transform[nr == 16 ? 0 : 1];
  at::parallel_for(0, items, 16, [&](int64_t q0, int64_t q1) {
    transform(geo, wp, ws, u_packed, q0, q1);
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
  const void* x = input.const_data_ptr<scalar_t>();
  void* y = output.mutable_data_ptr<scalar_t>();
  constexpr int elem = static_cast<int>(std::is_same_v<scalar_t, float>      ? Elem::f32
                                        : std::is_same_v<scalar_t, at::Half> ? Elem::f16
                                                                             : Elem::bf16);
  static_assert(sizeof(scalar_t) == (elem == 0 ? 4 : 2));
  const Kernels& k = kernels();
  const Strides4 xs = strides4(input), ys = strides4(output);
  const int64_t total_tiles = p.batch * geo.tiles_per_image;
  const int64_t tiles_cap = block_tiles(geo, total_tiles, ki.mr);
  const int64_t v_size = kPoints * tiles_cap * geo.k_stride;
  float* v_packed = static_cast<float*>(
      gemm::thread_buffer(5, sizeof(float) * (v_size + kPoints * tiles_cap * p.out_channels)));
  float* m_rows = v_packed + v_size;
  const int64_t in_chunks = (p.in_channels + kGroup - 1) / kGroup;
  const int64_t out_chunks = (p.out_channels + kGroup - 1) / kGroup;
  // One block at a time, each phase split over the threads by work item.
  for (int64_t tile0 = 0; tile0 < total_tiles; tile0 += tiles_cap) {
    const int64_t tiles = std::min(tiles_cap, total_tiles - tile0);
    const int64_t a_panels = (tiles + ki.mr - 1) / ki.mr;
    at::parallel_for(0, a_panels * in_chunks, 1, [&](int64_t i0, int64_t i1) {
      k.input_block[elem](InputBlock{&geo, x, xs, tile0, tiles, ki.mr, v_packed}, i0, i1);
    });
    at::parallel_for(0, kPoints * b_panels, 1, [&](int64_t i0, int64_t i1) {
      multiply_block(ki, geo, v_packed, u_ptr, tiles, tiles_cap, m_rows, i0, i1);
    });
    std::atomic<bool> finite{true};
    at::parallel_for(0, tiles * out_chunks, 1, [&](int64_t i0, int64_t i1) {
      if (!k.output_block[elem](OutputBlock{&geo, m_rows, tiles_cap, bias_ptr, tile0, y, ys}, i0, i1))
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
