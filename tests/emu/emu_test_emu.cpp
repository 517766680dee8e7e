// Emulation binding of the test kernels (tests/emu/emu_test_kernels.cuh): one launcher per kernel,
// taking CPU tensors, as a CUDA launcher would take CUDA tensors. Built once for all tests/emu by
// fiber_kernels.testing.emu.build("emu_test", ["tests/emu/emu_test_emu.cpp"]).
#include "emu/torch.h"

#include "emu_test_kernels.cuh"

namespace {

using fk::emu::global;

int blocks_for(int64_t n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

// variant: "shared" (static, with all barriers), "racy" (one barrier left out), "dynamic", "shfl".
at::Tensor block_sum(const at::Tensor& x, int64_t threads, const std::string& variant) {
  TORCH_CHECK(x.dim() == 1 && x.scalar_type() == at::kFloat, "block_sum: x must be a 1-D float tensor");
  TORCH_CHECK(threads > 0 && threads <= 256 && (threads & (threads - 1)) == 0, "block_sum: threads must be a power of two <= 256");
  const int n = static_cast<int>(x.numel());
  const int grid = blocks_for(n, static_cast<int>(threads));
  at::Tensor out = at::empty({grid}, x.options());
  const unsigned block = static_cast<unsigned>(threads);
  if (variant == "shared")
    fk::emu::launch(fk_test::block_sum_kernel, grid, block, 0, global<const float>(x, "x"), global<float>(out, "out"), n);
  else if (variant == "racy")
    fk::emu::launch(fk_test::block_sum_racy_kernel, grid, block, 0, global<const float>(x, "x"), global<float>(out, "out"), n);
  else if (variant == "dynamic")
    fk::emu::launch(fk_test::block_sum_dynamic_kernel, grid, block, threads * sizeof(float), global<const float>(x, "x"),
                    global<float>(out, "out"), n);
  else if (variant == "shfl")
    fk::emu::launch(fk_test::block_sum_shfl_kernel, grid, block, 0, global<const float>(x, "x"), global<float>(out, "out"), n);
  else
    TORCH_CHECK(false, "block_sum: unknown variant ", variant);
  return out;
}

at::Tensor warp_ops(const at::Tensor& x, int64_t threads) {
  TORCH_CHECK(x.dim() == 1 && x.numel() % threads == 0, "warp_ops: x.numel() must be a multiple of threads");
  at::Tensor out = at::empty({x.numel(), 8}, x.options());
  fk::emu::launch(fk_test::warp_ops_kernel, static_cast<unsigned>(x.numel() / threads), static_cast<unsigned>(threads), 0,
                  global<const int>(x, "x"), global<int>(out, "out"));
  return out;
}

std::vector<at::Tensor> atomics(const at::Tensor& x, int64_t bins, int64_t blocks, int64_t threads) {
  const int n = static_cast<int>(x.numel());
  auto f32 = x.options().dtype(at::kFloat);
  at::Tensor fsum = at::zeros({1}, f32), dsum = at::zeros({1}, x.options().dtype(at::kDouble));
  at::Tensor hist = at::zeros({bins}, x.options());
  at::Tensor extrema = at::tensor({INT32_MIN, INT32_MAX}, x.options());
  at::Tensor ticket = at::zeros({1}, x.options()), owner = at::full({n}, -1, x.options());
  at::Tensor fmax = at::full({1}, -1e30f, f32);
  fk::emu::launch(fk_test::atomics_kernel, static_cast<unsigned>(blocks), static_cast<unsigned>(threads), 0,
                  global<const int>(x, "x"), n, global<float>(fsum, "fsum"), global<double>(dsum, "dsum"),
                  global<int>(hist, "hist"), static_cast<int>(bins), global<int>(extrema, "extrema"),
                  global<unsigned int>(ticket, "ticket"), global<int>(owner, "owner"), global<float>(fmax, "fmax"));
  return {fsum, dsum, hist, extrema, ticket, owner, fmax};
}

at::Tensor wmma_tile(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool b_col_major, bool d_col_major) {
  TORCH_CHECK(a.dim() == 3 && a.size(1) == 16 && a.size(2) == 16 && a.is_contiguous(), "wmma_tile: a must be (T, 16, 16)");
  TORCH_CHECK(b.sizes() == a.sizes() && c.sizes() == a.sizes() && b.is_contiguous() && c.is_contiguous(),
              "wmma_tile: b and c must be (T, 16, 16) and contiguous");
  at::Tensor d = at::empty(a.sizes(), c.options());
  fk::emu::launch(fk_test::wmma_tile_kernel, static_cast<unsigned>(a.size(0)), 32u, 0, global<const __half>(a, "a"),
                  global<const __half>(b, "b"), global<const float>(c, "c"), global<float>(d, "d"),
                  static_cast<int>(b_col_major), static_cast<int>(d_col_major));
  return d;
}

at::Tensor shifted_read(const at::Tensor& x, int64_t shift, bool through_shared) {
  const int n = static_cast<int>(x.numel());
  at::Tensor out = at::empty_like(x);
  if (through_shared) {
    TORCH_CHECK(n % 64 == 0, "shifted_read: x.numel() must be a multiple of 64 through shared memory");
    fk::emu::launch(fk_test::shared_shifted_read_kernel, static_cast<unsigned>(n / 64), 64u, 0,
                    global<const float>(x, "x"), global<float>(out, "out"), static_cast<int>(shift));
  } else {
    fk::emu::launch(fk_test::shifted_read_kernel, static_cast<unsigned>(blocks_for(n, 64)), 64u, 0,
                    global<const float>(x, "x"), global<float>(out, "out"), n, static_cast<int>(shift));
  }
  return out;
}

at::Tensor divergent(int64_t threads, int64_t active, bool shuffle) {
  at::Tensor out = at::zeros({threads}, at::kFloat);
  auto kernel = shuffle ? fk_test::divergent_shuffle_kernel : fk_test::divergent_barrier_kernel;
  fk::emu::launch(kernel, 1u, static_cast<unsigned>(threads), 0, global<float>(out, "out"), static_cast<int>(active));
  return out;
}

at::Tensor indices(std::vector<int64_t> grid, std::vector<int64_t> block) {
  TORCH_CHECK(grid.size() == 3 && block.size() == 3, "indices: grid and block are (x, y, z)");
  int64_t total = grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2];
  at::Tensor out = at::full({total, 7}, -1, at::kInt);
  dim3 g(static_cast<unsigned>(grid[0]), static_cast<unsigned>(grid[1]), static_cast<unsigned>(grid[2]));
  dim3 b(static_cast<unsigned>(block[0]), static_cast<unsigned>(block[1]), static_cast<unsigned>(block[2]));
  fk::emu::launch(fk_test::index_kernel, g, b, 0, global<int>(out, "out"));
  return out;
}

std::vector<at::Tensor> convert(const at::Tensor& x) {
  const int n = static_cast<int>(x.numel());
  at::Tensor h = at::empty_like(x, at::kHalf), bf = at::empty_like(x, at::kBFloat16);
  at::Tensor h_back = at::empty_like(x), bf_back = at::empty_like(x);
  fk::emu::launch(fk_test::convert_kernel, static_cast<unsigned>(blocks_for(n, 128)), 128u, 0, global<const float>(x, "x"),
                  global<__half>(h, "h"), global<__nv_bfloat16>(bf, "bf"), global<float>(h_back, "h_back"),
                  global<float>(bf_back, "bf_back"), n);
  return {h, bf, h_back, bf_back};
}

at::Tensor half_math(const at::Tensor& a, const at::Tensor& b) {
  const int n = static_cast<int>(a.numel());
  at::Tensor out = at::empty({n, 5}, a.options());
  fk::emu::launch(fk_test::half_math_kernel, static_cast<unsigned>(blocks_for(n, 128)), 128u, 0,
                  global<const __half>(a, "a"), global<const __half>(b, "b"), global<__half>(out, "out"), n);
  return out;
}

at::Tensor math(const at::Tensor& x) {
  const int n = static_cast<int>(x.numel());
  at::Tensor out = at::empty({n, 6}, x.options());
  fk::emu::launch(fk_test::math_kernel, static_cast<unsigned>(blocks_for(n, 128)), 128u, 0, global<const float>(x, "x"),
                  global<float>(out, "out"), n);
  return out;
}

// A launch the runtime must refuse (for the launch-configuration test).
void bad_launch(std::vector<int64_t> block) {
  at::Tensor out = at::zeros({1}, at::kFloat);
  dim3 b(static_cast<unsigned>(block[0]), static_cast<unsigned>(block[1]), static_cast<unsigned>(block[2]));
  fk::emu::launch(fk_test::divergent_barrier_kernel, 1u, b, 0, global<float>(out, "out"), 0);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  fk::emu::bind_runtime(m);
  m.def("block_sum", &block_sum);
  m.def("warp_ops", &warp_ops);
  m.def("atomics", &atomics);
  m.def("wmma_tile", &wmma_tile);
  m.def("shifted_read", &shifted_read);
  m.def("divergent", &divergent);
  m.def("indices", &indices);
  m.def("convert", &convert);
  m.def("half_math", &half_math);
  m.def("math", &math);
  m.def("bad_launch", &bad_launch);
}
