// Argument checks shared by the launchers of every registered op of fiber_kernels._C (host code only:
// anyone can call torch.ops.fiber_kernels_C.* directly, so each op checks what its kernels rely on).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>

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

}  // namespace fiber_kernels
