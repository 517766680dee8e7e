// The Python module of fiber_kernels._C (build facts). C++ ops live in the fiber_kernels_C
// torch.library namespace: each kernel family declares its schemas with TORCH_LIBRARY_FRAGMENT in
// csrc/<op>/<op>_ops.cpp and registers CPU/CUDA implementations with TORCH_LIBRARY_IMPL beside
// its sources (docs/architecture.md says why fragments rather than one TORCH_LIBRARY block).
#include <torch/extension.h>

#ifndef FIBER_KERNELS_CUDA_ARCHS
#define FIBER_KERNELS_CUDA_ARCHS ""
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef FIBER_KERNELS_WITH_CUDA
  info["with_cuda"] = true;
#else
  info["with_cuda"] = false;
#endif
  info["cuda_archs"] = std::string(FIBER_KERNELS_CUDA_ARCHS);
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fiber_kernels compiled ops (C++ CPU kernels, and CUDA kernels when built with CUDA)";
  m.def("build_info", &build_info, "with_cuda and cuda_archs of this build");
}
