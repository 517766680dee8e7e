// Torch-free self-test of the emulator (tests/emu/test_emu_selftest.py compiles it with g++ in a
// few seconds and runs it): fault reports of emu_fault_kernels.cuh, the 48 KiB static shared limit,
// __half/__nv_bfloat16 operators (compiled here without torch's __CUDA_NO_HALF_* macros) and the
// __fdividef trap. Prints one line per failed check and the cost of a barrier wait (the figure
// docs/emulation.md points here for), and exits with the number of failures.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "fiber_kernels/portable.cuh"
#include "emu_fault_kernels.cuh"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL %s\n", what);
    ++failures;
  }
}

template <class F>
void expect_error(F&& launch, const std::string& needle, const char* what) {
  try {
    launch();
    std::printf("FAIL %s: no error (expected '%s')\n", what, needle.c_str());
    ++failures;
  } catch (const fk::emu::Error& e) {
    if (std::string(e.what()).find(needle) == std::string::npos) {
      std::printf("FAIL %s: '%s' lacks '%s'\n", what, e.what(), needle.c_str());
      ++failures;
    }
  }
}

__global__ void too_much_static_shared_kernel(fk::Ptr<float> out) {
  FK_SHARED(float, big, 13000);  // 52 000 bytes > 48 KiB (nvcc refuses it at compile time)
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = big[threadIdx.x];
}

// Every thread waits at `rounds` barriers: each wait parks the thread's fiber and resumes it later.
__global__ void barrier_rounds_kernel(int rounds) {
  for (int i = 0; i < rounds; ++i) __syncthreads();
}

}  // namespace

int main() {
  using fk::emu::launch;
  using fk::emu::span;
  std::vector<float> x(256, 1.0f), outf(256);
  std::vector<int> out(64, -1);

  launch(fk_test::vector_load_kernel, 1u, 32u, 0, span<const float>(x.data(), 256, "x"), span(outf.data(), 256, "out"), 0);
  check(outf[0] == 4.0f && outf[31] == 4.0f, "aligned float4 loads");
  expect_error([&] { launch(fk_test::vector_load_kernel, 1u, 32u, 0, span<const float>(x.data(), 256, "x"), span(outf.data(), 256, "out"), 1); },
               "misaligned access (address % 16 = 4) in global buffer 'x'", "misaligned float4");
  expect_error([&] { launch(fk_test::vector_load_kernel, 1u, 65u, 0, span<const float>(x.data(), 256, "x"), span(outf.data(), 256, "out"), 0); },
               "out-of-bounds access at element 64", "float4 past the end (elements counted in float4)");

  expect_error([&] { launch(fk_test::split_barrier_kernel, 1u, 64u, 0, span(out.data(), 64, "out")); },
               "threads meet at different barriers", "divergent __syncthreads sites");
  expect_error([&] { launch(fk_test::mixed_collectives_kernel, 1u, 32u, 0, span(out.data(), 64, "out")); },
               "lanes meet at different collectives", "shuffle and vote in one warp");

  launch(fk_test::half_warp_shuffle_kernel, 1u, 64u, 0, span(out.data(), 64, "out"), 0);
  bool halves = true;
  for (int t = 0; t < 64; ++t) halves &= out[t] == (((t % 32) & 16) + ((t % 32) + 1) % 16) * 10;
  check(halves, "independent half-warp shuffles with disjoint masks");
  expect_error([&] { launch(fk_test::half_warp_shuffle_kernel, 1u, 32u, 0, span(out.data(), 64, "out"), 1); },
               "reads lane 16, which is not in the mask", "shuffle from a lane outside the mask");
  expect_error([&] { launch(fk_test::half_warp_shuffle_kernel, 1u, 24u, 0, span(out.data(), 64, "out"), 0); },
               "mask names lanes that do not exist", "mask beyond a partial warp");

  launch(fk_test::warp_exchange_kernel, 1u, 32u, 0, span(out.data(), 64, "out"), 1);
  bool exchanged = true;
  for (int l = 0; l < 32; ++l) exchanged &= out[l] == ((l + 1) % 32) * 3;
  check(exchanged, "__syncwarp orders a shared exchange");
  int racy_seeds = 0;
  for (std::uint64_t seed = 0; seed < 10; ++seed) {
    fk::emu::settings().seed = seed;
    launch(fk_test::warp_exchange_kernel, 1u, 32u, 0, span(out.data(), 64, "out"), 0);
    for (int l = 0; l < 32; ++l)
      if (out[l] != ((l + 1) % 32) * 3) {
        ++racy_seeds;
        break;
      }
  }
  fk::emu::settings().seed = 0;
  check(racy_seeds > 0, "missing __syncwarp is wrong for some seeds (threads of a warp are independent)");

  launch(fk_test::wmma_offset_kernel, 1u, 32u, 0, span(outf.data(), 256, "out"), 0);
  check(outf[0] == 16.0f && outf[255] == 16.0f, "wmma tile of ones");
  expect_error([&] { launch(fk_test::wmma_offset_kernel, 1u, 32u, 0, span(outf.data(), 256, "out"), 8); },
               "pointer into 'tile' is not 256-bit aligned", "misaligned wmma load");
  expect_error([&] { launch(fk_test::wmma_offset_kernel, 1u, 32u, 0, span(outf.data(), 255, "out"), 0); },
               "out-of-bounds access at element 255 (byte offset 1020) of global buffer 'out'", "wmma store past the end");
  outf.assign(256, 0.0f);
  launch(fk_test::wmma_offset_kernel, 1u, 64u, 0, span(outf.data(), 256, "out"), 0);
  check(outf[17] == 16.0f, "two warps, each its own wmma collective");
  expect_error([&] { launch(too_much_static_shared_kernel, 1u, 32u, 0, span(outf.data(), 256, "out")); },
               "static shared memory of the kernel exceeds 48 KiB", "48 KiB static shared limit");

  for (std::uint64_t seed = 0; seed < 5; ++seed) {
    fk::emu::settings().seed = seed;
    int flag = 0, data = 0, got = -1;
    launch(fk_test::handoff_kernel, 1u, 64u, 0, span(&flag, 1, "flag"), span(&data, 1, "data"), span(&got, 1, "out"), 0);
    check(got == 42, "spin-wait on a flag another thread of the block raises");
  }
  fk::emu::settings().seed = 0;
  int reported = 0;
  for (std::uint64_t seed = 0; seed < 8; ++seed) {
    fk::emu::settings().seed = seed;  // block 1 first: the flag is up in time; block 0 first: reported
    int flag = 0, data = 0, got = -1;
    try {
      launch(fk_test::handoff_kernel, 2u, 64u, 0, span(&flag, 1, "flag"), span(&data, 1, "data"), span(&got, 1, "out"), 1);
      check(got == 42, "cross-block handoff that happened to run in order");
    } catch (const fk::emu::Error& e) {
      ++reported;
      check(std::string(e.what()).find("spins in thread (0,0,0) of block (0,0,0) while no other thread") != std::string::npos,
            "a spin on another block is reported");
    }
  }
  check(reported > 0, "some block order makes the cross-block spin visible");
  fk::emu::settings().seed = 0;

  int scale = 3;
  std::vector<int> counts(4, 0);
  launch(fk_test::shared_counter_kernel, 4u, dim3(8, 4, 2), 0, span<const int>(&scale, 1, "scale"), span(counts.data(), 4, "out"));
  check(counts == std::vector<int>(4, 64 * 3), "FK_SHARED_VAR is one scalar per block (fresh in each block)");

  std::vector<int> poison(96, 0);
  launch(fk_test::uninitialised_shared_kernel, 3u, 32u, 0, span(poison.data(), 96, "out"));
  check(poison == std::vector<int>(96, -1), "shared memory reads as 0xFF bytes until written, in every block");

  // __half / __nv_bfloat16 operators and implicit conversions (available without torch's macros).
  __half a = 1.5f, b = 0.25f;
  check(static_cast<float>(a + b) == 1.75f && static_cast<float>(a * b) == 0.375f && a > b, "__half operators");
  __nv_bfloat16 c = 3.0f;
  c += __nv_bfloat16(1.0f);
  check(static_cast<float>(c) == 4.0f && -c < c, "__nv_bfloat16 operators");
  check(static_cast<float>(__half(65520.0f)) == INFINITY, "__half overflow rounds to inf");
  check(__fdividef(1.0f, 1e38f) == 0.0f && __fdividef(1.0f, 4.0f) == 0.25f, "__fdividef's trap for 2^126 < |y| < 2^128");

  constexpr int kThreads = 128, kRounds = 400;
  const auto start = std::chrono::steady_clock::now();
  launch(barrier_rounds_kernel, 1u, static_cast<unsigned>(kThreads), 0, kRounds);
  const std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - start;
  std::printf("%.0f ns per barrier wait of one thread (its fiber switched out and back, scheduling included)\n",
              elapsed.count() / (kThreads * kRounds));
  std::printf("%d failures\n", failures);
  return failures;
}
