// Torch glue for emulation bindings (*_emu.cpp): checked pointers to CPU tensors, and the runtime
// knobs every emulation module exposes to Python. A binding includes this first:
//
//   #include "emu/torch.h"            // torch, then the emulator (FIBER_KERNELS_EMU is set by emu.build)
//   #include "atss/atss_kernel.cuh"   // the same kernel source nvcc compiles
//
//   at::Tensor atss_fwd(const at::Tensor& x, ...) {             // same signature as the CUDA launcher
//     auto out = at::empty(...);
//     fk::emu::launch(atss_kernel<float>, grid, block, smem,
//                     fk::emu::global<const float>(x, "x"), fk::emu::global<float>(out, "out"), n);
//     return out;
//   }
//   PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
//     fk::emu::bind_runtime(m);       // set_seed, seed, set_stack_kib, launches
//     m.def("atss_fwd", &atss_fwd);
//   }
#pragma once

// ATen plus torch's pybind casters, not <torch/extension.h>: that header pulls the whole C++ frontend
// into every binding's build, which then takes about twice as long.
#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include <string>
#include <type_traits>

#ifndef FIBER_KERNELS_EMU
#error "emu/torch.h is for emulation bindings, built by fiber_kernels.testing.emu.build (which defines FIBER_KERNELS_EMU)"
#endif

#include "emu/emulator.h"

namespace fk::emu {

template <class T>
constexpr c10::ScalarType scalar_type_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return c10::ScalarType::Float;
  else if constexpr (std::is_same_v<U, double>) return c10::ScalarType::Double;
  else if constexpr (std::is_same_v<U, __half> || std::is_same_v<U, c10::Half>) return c10::ScalarType::Half;
  else if constexpr (std::is_same_v<U, __nv_bfloat16> || std::is_same_v<U, c10::BFloat16>) return c10::ScalarType::BFloat16;
  else if constexpr (std::is_same_v<U, int> || std::is_same_v<U, unsigned int>) return c10::ScalarType::Int;
  else if constexpr (std::is_same_v<U, long long> || std::is_same_v<U, long> || std::is_same_v<U, unsigned long long>)
    return c10::ScalarType::Long;
  else if constexpr (std::is_same_v<U, short> || std::is_same_v<U, unsigned short>) return c10::ScalarType::Short;
  else if constexpr (std::is_same_v<U, unsigned char>) return c10::ScalarType::Byte;
  else if constexpr (std::is_same_v<U, signed char>) return c10::ScalarType::Char;
  else if constexpr (std::is_same_v<U, bool>) return c10::ScalarType::Bool;
  else static_assert(sizeof(U) == 0, "fk::emu::global: no tensor dtype for this element type");
}

// A checked pointer to a CPU tensor's elements, T matching its dtype (__half for Half, __nv_bfloat16
// for BFloat16, unsigned for Int, ...). The bounds are the elements the tensor's sizes and strides
// can reach, not its whole storage: an off-by-one past a slice is caught. `name` is kept by pointer
// (use a string literal).
template <class T>
Ptr<T> global(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "fk::emu: tensor '", name, "' must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == scalar_type_of<T>(), "fk::emu: tensor '", name, "' has dtype ", t.scalar_type(),
              ", the kernel reads it as ", c10::toString(scalar_type_of<T>()));
  auto* data = static_cast<T*>(const_cast<void*>(t.data_ptr()));
  auto begin = reinterpret_cast<std::uintptr_t>(data);
  std::int64_t extent = t.numel() == 0 ? 0 : 1;
  for (std::int64_t d = 0; d < t.dim(); ++d) {
    TORCH_CHECK(t.stride(d) >= 0, "fk::emu: tensor '", name, "' has a negative stride");
    extent += (t.size(d) - 1) * t.stride(d);
  }
  return Ptr<T>(data, begin, begin + static_cast<std::uintptr_t>(extent) * sizeof(T), name, Space::kGlobal);
}

inline void bind_runtime(pybind11::module_& m) {
  m.def("set_seed", [](std::uint64_t seed) { settings().seed = seed; },
        "Seed of the thread schedule (order of threads between barriers, order of blocks) of later launches.");
  m.def("seed", [] { return settings().seed; }, "The current schedule seed.");
  m.def("set_stack_kib", [](std::size_t kib) {
    TORCH_CHECK(kib >= 16 && kib <= 8192, "fk::emu: fiber stack must be 16..8192 KiB");
    settings().stack_bytes = kib * 1024;
  }, "Stack size of each emulated thread (default 128 KiB; raise it for kernels with big local arrays).");
  m.def("launches", [] { return settings().launches; }, "Number of kernel launches completed by this module.");
}

}  // namespace fk::emu
