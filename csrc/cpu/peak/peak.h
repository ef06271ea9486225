// The CPU's measured fp32 FMA peak: the number benchmarks quote "% of peak" against (run.py's
// header). A loop of independent fused multiply-adds in registers, the widest vectors the
// active ISA has, on `threads` OpenMP threads at once, for about `seconds`.
#pragma once

namespace convpool::cpu::peak {

// GFLOP/s (2 per multiply-add) of the whole loop, summed over the threads.
double fma_gflops(int threads, double seconds);

}  // namespace convpool::cpu::peak
