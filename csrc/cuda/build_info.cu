// What nvcc compiled, as nvcc itself reports it: read by convpool._C._build_info() (ops.cpp) for
// `python -m convpool`. Plain C strings, nothing of torch. Not part of the emulator build.
// Variadic: __CUDA_ARCH_LIST__ holds commas when several architectures are compiled.
#define CONVPOOL_STRINGIFY_(...) #__VA_ARGS__
#define CONVPOOL_STRINGIFY(...) CONVPOOL_STRINGIFY_(__VA_ARGS__)

namespace convpool::cuda {

// The virtual architectures of this compilation ("750,800,900"): __CUDA_ARCH_LIST__ is defined by
// nvcc from its -gencode flags (CUDA 11.5 and newer).
const char* compiled_arch_list() {
#ifdef __CUDA_ARCH_LIST__
  return CONVPOOL_STRINGIFY(__CUDA_ARCH_LIST__);
#else
  return "";
#endif
}

const char* nvcc_version() {
  return CONVPOOL_STRINGIFY(__CUDACC_VER_MAJOR__) "." CONVPOOL_STRINGIFY(__CUDACC_VER_MINOR__);
}

}  // namespace convpool::cuda
