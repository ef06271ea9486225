// Deliberate memory and undefined-behaviour errors, compiled only into sanitizer builds
// (CONVPOOL_SANITIZE=1). .ci/sanitize calls them first and requires the sanitizers to report
// them: a stage that stays green because its instrumentation or LD_PRELOAD recipe silently stopped
// working would prove nothing about the kernels.
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

namespace {

int64_t sanitizer_canary(const std::string& kind) {
  // volatile: the compiler must not see (and fold away) the bad index or the overflow.
  if (kind == "heap-buffer-overflow") {
    auto buffer = std::make_unique<int64_t[]>(4);
    volatile int64_t past_the_end = 4;
    return buffer[past_the_end];
  }
  if (kind == "signed-integer-overflow") {
    volatile int64_t largest = std::numeric_limits<int64_t>::max();
    return largest + 1;
  }
  TORCH_CHECK(false, "_sanitizer_canary: unknown kind '", kind,
              "' (heap-buffer-overflow or signed-integer-overflow)");
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(convpool, m) {
  m.def("_sanitizer_canary(str kind) -> int", &sanitizer_canary);
}
