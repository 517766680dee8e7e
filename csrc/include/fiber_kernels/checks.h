// Argument checks shared by the launchers of every registered op of fiber_kernels._C (host code only:
// anyone can call torch.ops.fiber_kernels_C.* directly, so each op checks what its kernels rely on).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>

namespace fiber_kernels {

// `name` must be on `device` (the device of the op's first tensor): a kernel must never receive a pointer
// into another device's memory.
inline void check_device(const char* op, const char* name, const at::Tensor& t, const at::Device& device) {
  TORCH_CHECK(t.device() == device, op, ": ", name, " must be on ", device, " like the other inputs, got ",
              t.device());
}

inline void check_device(const char* op, const char* name, const std::optional<at::Tensor>& t,
                         const at::Device& device) {
  if (t.has_value()) check_device(op, name, *t, device);
}

// A softmax scale: finite and > 0.
inline void check_scale(const char* op, double scale) {
  TORCH_CHECK(std::isfinite(scale) && scale > 0.0, op, ": scale must be a finite float > 0, got ", scale);
}

// The ScalarType of a dtype named as torch names it in Python: the spelling of the limits headers
// (csrc/<op>/<op>_limits.h, whose dtype lists are string literals so that they stay torch-free).
inline at::ScalarType scalar_type_named(const char* name) {
  if (std::strcmp(name, "float32") == 0) return at::kFloat;
  if (std::strcmp(name, "float16") == 0) return at::kHalf;
  TORCH_CHECK(std::strcmp(name, "bfloat16") == 0, "fiber_kernels: no ScalarType for the dtype name ", name);
  return at::kBFloat16;
}

template <std::size_t N>
bool is_one_of(at::ScalarType dtype, const char* const (&names)[N]) {
  for (const char* name : names)
    if (scalar_type_named(name) == dtype) return true;
  return false;
}

template <std::size_t N>
bool is_one_of(long long value, const int (&values)[N]) {
  for (const int v : values)
    if (v == value) return true;
  return false;
}

// "a, b or c": a limits list in a check's message.
template <class T, std::size_t N>
std::string one_of_text(const T (&values)[N]) {
  std::ostringstream text;
  for (std::size_t i = 0; i < N; ++i) text << (i == 0 ? "" : i + 1 == N ? " or " : ", ") << values[i];
  return text.str();
}

}  // namespace fiber_kernels
