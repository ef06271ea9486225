// The scheduler of the CUDA emulator (see cuda_emu.h): blocks in sequence, the threads of a block
// as ucontext fibers that run one at a time between barriers, in a configurable order.
#include "cuda_emu.h"

#include <ucontext.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace convpool::emu {

thread_local ThreadState current;

namespace {

// Kernels keep small register arrays on their stacks; 64 KB is ample.
constexpr size_t kStackBytes = 64 * 1024;

enum class State { kReady, kAtBarrier, kAtWarp, kDone };

struct Fiber {
  ucontext_t context;
  State state = State::kReady;
  uint3 thread_idx{};
  // Warp collective in progress.
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int source = 0;
  bool ballot = false;
  uint64_t collectives = 0;  // warp collectives this lane has completed
};

struct Warp {
  uint64_t led = 0;  // the latest collective whose leader has gone on
  unsigned char scratch[kWarpScratchBytes];
};

struct Config {
  Order order = Order::kForward;
  uint64_t seed = 0;
};

std::mutex config_mutex;
Config config;
std::map<const void*, size_t> max_dynamic_shared;  // guarded by config_mutex

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  ucontext_t scheduler;
  const std::function<void()>* body = nullptr;
  Fiber* running = nullptr;
  std::string error;  // set by a fiber that found a misuse; the scheduler throws it
  // Static shared memory: one arena per launch, an offset per CONVPOOL_STATIC_SHARED array.
  unsigned char* static_arena = nullptr;
  std::map<const void*, size_t> static_offsets;
  size_t static_used = 0;
};

thread_local Block* active_block = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> stacks;  // reused across launches

void fiber_main() {
  Block* block = active_block;
  (*block->body)();
  block->running->state = State::kDone;
  // Returning resumes uc_link: the scheduler.
}

[[noreturn]] void fail(const std::string& message) {
  throw std::runtime_error("CUDA emulator: " + message);
}

std::string str(dim3 d) {
  std::ostringstream ss;
  ss << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return ss.str();
}

void check_launch(const void* kernel_id, dim3 grid, dim3 block, size_t dynamic_shared) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    fail("invalid configuration argument: empty grid " + str(grid) + " or block " + str(block));
  if (threads > kMaxThreadsPerBlock || block.x > kMaxBlockDimXY || block.y > kMaxBlockDimXY ||
      block.z > kMaxBlockDimZ)
    fail("too many threads per block: block " + str(block) + " (at most 1024 threads, " +
         "1024 x 1024 x 64)");
  if (grid.x > kMaxGridDimX || grid.y > kMaxGridDimYZ || grid.z > kMaxGridDimYZ)
    fail("grid " + str(grid) + " exceeds the grid limits (2^31-1, 65535, 65535)");
  size_t allowed = kDefaultDynamicShared;
  {
    std::lock_guard<std::mutex> lock(config_mutex);
    auto it = max_dynamic_shared.find(kernel_id);
    if (it != max_dynamic_shared.end()) allowed = it->second;
  }
  if (dynamic_shared > allowed)
    fail("dynamic shared memory of " + std::to_string(dynamic_shared) + " bytes exceeds the " +
         std::to_string(allowed) + " bytes allowed for this kernel" +
         (allowed < kMaxDynamicSharedOptIn ? " (raise it with cudaFuncSetAttribute)" : ""));
}

// Resolves the warp collectives whose lanes have all arrived. Returns whether any was resolved.
bool release_warps(Block& block) {
  bool released = false;
  const size_t n = block.fibers.size();
  for (size_t warp_begin = 0; warp_begin < n; warp_begin += kWarpSize) {
    const size_t warp_end = std::min(n, warp_begin + kWarpSize);
    unsigned waiting = 0, mask = 0;
    for (size_t t = warp_begin; t < warp_end; ++t) {
      const Fiber& f = block.fibers[t];
      if (f.state != State::kAtWarp) continue;
      waiting |= 1u << (t - warp_begin);
      mask |= f.mask;
    }
    if (!waiting) continue;
    for (size_t t = warp_begin; t < warp_end; ++t) {
      const Fiber& f = block.fibers[t];
      if (f.state == State::kAtWarp && f.mask != mask)
        fail("lanes of warp " + std::to_string(warp_begin / kWarpSize) +
             " wait in warp collectives with different masks");
    }
    if ((mask & waiting) != mask) {
      // A lane of the mask never came: it exited, sits at __syncthreads, or does not exist.
      for (unsigned lane = 0; lane < kWarpSize; ++lane) {
        if (!(mask >> lane & 1u) || (waiting >> lane & 1u)) continue;
        const size_t t = warp_begin + lane;
        if (t >= warp_end || block.fibers[t].state != State::kReady)
          fail("lane " + std::to_string(lane) + " of warp " +
               std::to_string(warp_begin / kWarpSize) +
               " is named in a warp collective's mask but never reaches it");
      }
      continue;
    }
    unsigned ballot = 0;
    for (size_t t = warp_begin; t < warp_end; ++t)
      if (block.fibers[t].value) ballot |= 1u << (t - warp_begin);
    for (size_t t = warp_begin; t < warp_end; ++t) {
      Fiber& f = block.fibers[t];
      if (f.state != State::kAtWarp) continue;
      if (f.ballot) {
        f.result = ballot & mask;
      } else {
        const size_t src = warp_begin + static_cast<size_t>(f.source);
        // Reading a lane outside the mask is undefined on hardware; give it garbage.
        f.result = (src < warp_end && (mask >> f.source & 1u)) ? block.fibers[src].value
                                                               : 0xDEADBEEFDEADBEEFull;
      }
    }
    for (size_t t = warp_begin; t < warp_end; ++t)
      if (block.fibers[t].state == State::kAtWarp) block.fibers[t].state = State::kReady;
    released = true;
  }
  return released;
}

void resume(Block& block, Fiber& f) {
  block.running = &f;
  current.thread_idx = f.thread_idx;
  swapcontext(&block.scheduler, &f.context);
  if (!block.error.empty()) fail(block.error);
}

void run_block(Block& block, const std::vector<unsigned>& base_order, std::mt19937_64& rng,
               Order order) {
  std::vector<unsigned> run_order = base_order;
  for (;;) {
    if (order == Order::kShuffle) std::shuffle(run_order.begin(), run_order.end(), rng);
    for (unsigned t : run_order) {
      if (block.fibers[t].state != State::kReady) continue;
      resume(block, block.fibers[t]);
      if (block.fibers[t].state != State::kAtWarp) continue;
      // When this lane completes a warp collective, its warp runs on, as far as it can, before
      // any other warp moves: warps drift apart like on hardware, so a warp that overwrites
      // shared memory another warp has yet to read (a missing __syncthreads) is seen.
      const size_t warp = t / kWarpSize;
      while (release_warps(block)) {
        for (unsigned u : run_order)
          if (u / kWarpSize == warp && block.fibers[u].state == State::kReady)
            resume(block, block.fibers[u]);
      }
    }
    bool any_ready = false, all_done = true, any_barrier = false;
    for (const Fiber& f : block.fibers) {
      any_ready |= f.state == State::kReady;
      all_done &= f.state == State::kDone;
      any_barrier |= f.state == State::kAtBarrier;
    }
    if (all_done) return;
    if (any_ready) continue;
    if (release_warps(block)) continue;
    bool warp_waiting = false;
    for (const Fiber& f : block.fibers) warp_waiting |= f.state == State::kAtWarp;
    if (warp_waiting)
      fail("deadlock: threads wait in a warp collective while others wait at __syncthreads or "
           "have exited");
    if (any_barrier) {
      // Every thread that has not exited waits at __syncthreads: release them.
      for (Fiber& f : block.fibers)
        if (f.state == State::kAtBarrier) f.state = State::kReady;
    }
  }
}

}  // namespace

void set_order(Order order, uint64_t seed) {
  std::lock_guard<std::mutex> lock(config_mutex);
  config.order = order;
  config.seed = seed;
}

void set_max_dynamic_shared_memory(const void* kernel_id, size_t bytes) {
  if (bytes > kMaxDynamicSharedOptIn)
    fail("cudaFuncSetAttribute: " + std::to_string(bytes) +
         " bytes of dynamic shared memory exceed the opt-in maximum of " +
         std::to_string(kMaxDynamicSharedOptIn));
  std::lock_guard<std::mutex> lock(config_mutex);
  max_dynamic_shared[kernel_id] = bytes;
}

void syncthreads() {
  Block* block = active_block;
  Fiber* self = block->running;
  self->state = State::kAtBarrier;
  swapcontext(&self->context, &block->scheduler);
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int source, bool ballot) {
  Block* block = active_block;
  Fiber* self = block->running;
  const unsigned lane = lane_id();
  if (!(mask >> lane & 1u))
    kernel_error("lane " + std::to_string(lane) + " calls a warp collective whose mask excludes it");
  self->state = State::kAtWarp;
  self->mask = mask;
  self->value = value;
  self->source = source;
  self->ballot = ballot;
  swapcontext(&self->context, &block->scheduler);
  ++self->collectives;
  return self->result;
}

void kernel_error(const std::string& message) {
  Block* block = active_block;
  if (!block) fail(message);
  block->error = message;
  block->running->state = State::kDone;
  swapcontext(&block->running->context, &block->scheduler);  // never resumed
  std::abort();
}

void* static_shared(const void* tag, size_t bytes, size_t align) {
  Block* block = active_block;
  auto it = block->static_offsets.find(tag);
  if (it != block->static_offsets.end()) return block->static_arena + it->second;
  const size_t offset = (block->static_used + align - 1) / align * align;
  if (offset + bytes > kMaxStaticShared)
    kernel_error("static shared memory of " + std::to_string(offset + bytes) +
                 " bytes exceeds the 49152 bytes per block");
  block->static_offsets[tag] = offset;
  block->static_used = offset + bytes;
  return block->static_arena + offset;
}

bool warp_collective_leader(unsigned char** scratch) {
  Block* block = active_block;
  Fiber* self = block->running;
  Warp& warp = block->warps[(self - block->fibers.data()) / kWarpSize];
  *scratch = warp.scratch;
  if (warp.led >= self->collectives) return false;
  warp.led = self->collectives;
  return true;
}

void run_grid(const void* kernel_id, dim3 grid, dim3 block_dim, size_t dynamic_shared,
              const std::function<void()>& body) {
  check_launch(kernel_id, grid, block_dim, dynamic_shared);
  if (active_block) fail("a kernel launched from inside a kernel (dynamic parallelism)");
  Config cfg;
  {
    std::lock_guard<std::mutex> lock(config_mutex);
    cfg = config;
  }
  const unsigned threads = block_dim.x * block_dim.y * block_dim.z;
  while (stacks.size() < threads) stacks.emplace_back(new char[kStackBytes]);
  // Dynamic shared memory starts 128-byte aligned, as on hardware (WMMA needs 32 bytes).
  std::vector<unsigned char> shared_buffer(std::max<size_t>(dynamic_shared, 1) + 128);
  unsigned char* shared = shared_buffer.data() + (128 - reinterpret_cast<uintptr_t>(shared_buffer.data()) % 128) % 128;
  std::vector<unsigned> order(threads);
  std::iota(order.begin(), order.end(), 0u);
  if (cfg.order == Order::kReverse) std::reverse(order.begin(), order.end());
  std::mt19937_64 rng(cfg.seed);

  std::vector<unsigned char> static_buffer(kMaxStaticShared + 128);
  unsigned char* static_arena =
      static_buffer.data() + (128 - reinterpret_cast<uintptr_t>(static_buffer.data()) % 128) % 128;

  Block block;
  block.body = &body;
  block.static_arena = static_arena;
  block.fibers.resize(threads);
  block.warps.resize((threads + kWarpSize - 1) / kWarpSize);
  const ThreadState saved = current;
  current.block_dim = block_dim;
  current.grid_dim = grid;
  current.dynamic_shared = shared;
  active_block = &block;
  try {
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          current.block_idx = {bx, by, bz};
          // NaN garbage, like fresh shared memory.
          std::fill(shared, shared + std::max<size_t>(dynamic_shared, 1), 0xFF);
          std::fill(static_arena, static_arena + kMaxStaticShared, 0xFF);
          for (Warp& w : block.warps) w.led = 0;
          for (unsigned t = 0; t < threads; ++t) {
            Fiber& f = block.fibers[t];
            f.state = State::kReady;
            f.collectives = 0;
            f.thread_idx = {t % block_dim.x, (t / block_dim.x) % block_dim.y,
                            t / (block_dim.x * block_dim.y)};
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = stacks[t].get();
            f.context.uc_stack.ss_size = kStackBytes;
            f.context.uc_link = &block.scheduler;
            makecontext(&f.context, fiber_main, 0);
          }
          run_block(block, order, rng, cfg.order);
        }
  } catch (...) {
    active_block = nullptr;
    current = saved;
    throw;
  }
  active_block = nullptr;
  current = saved;
}

}  // namespace convpool::emu
