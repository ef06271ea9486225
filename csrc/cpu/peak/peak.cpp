// The FMA peak (peak.h): the active ISA's loop (kernels.h) on `threads` threads, calibrated to
// run about `seconds`.
#include "peak.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../isa.h"
#include "kernels.h"

namespace convpool::cpu::peak {

namespace portable {
int lanes() { return 1; }
float fma_loop(int64_t iterations) {
  float acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = static_cast<float>(i);
  for (int64_t k = 0; k < iterations; ++k)
    for (int i = 0; i < kChains; ++i) acc[i] = __builtin_fmaf(acc[i], 1.0f, 0.0f);
  float sum = 0;
  for (int i = 0; i < kChains; ++i) sum += acc[i];
  return sum;
}
}  // namespace portable

namespace {

struct Loop {
  float (*run)(int64_t);
  int lanes;
};

Loop active_loop() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (active_isa()) {
    case Isa::amx:  // never active_isa() (isa.h)
    case Isa::avx512: return {&avx512::fma_loop, avx512::lanes()};
    case Isa::avx2: return {&avx2::fma_loop, avx2::lanes()};
    case Isa::generic: break;
  }
#endif
  return {&portable::fma_loop, portable::lanes()};
}

volatile float sink;

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Wall seconds of `iterations` on every thread at once.
double timed(const Loop& loop, int threads, int64_t iterations) {
  float total = 0;
  const double t0 = seconds_now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    const float s = loop.run(iterations);
#ifdef _OPENMP
#pragma omp atomic
#endif
    total += s;
  }
  const double elapsed = seconds_now() - t0;
  sink = total;  // the loops' results are used: the compiler keeps them
  (void)threads;
  return elapsed;
}

}  // namespace

double fma_gflops(int threads, double seconds) {
  threads = std::max(1, threads);
  const Loop loop = active_loop();
  int64_t iterations = 1 << 16;
  double t = timed(loop, threads, iterations);  // also wakes the threads and the clocks
  while (t < seconds / 4 && iterations < (int64_t{1} << 40)) {
    iterations *= 4;
    t = timed(loop, threads, iterations);
  }
  double best = t;  // the fastest of three: the others were disturbed
  for (int r = 0; r < 2; ++r) best = std::min(best, timed(loop, threads, iterations));
  const double flops = 2.0 * kChains * loop.lanes * static_cast<double>(iterations) * threads;
  return flops / best / 1e9;
}

}  // namespace convpool::cpu::peak
