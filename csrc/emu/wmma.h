// The nvcuda::wmma subset for the host build: m16n16k16 tiles, fp16 or bf16 inputs, fp32 or fp16
// accumulators; fragment, fill_fragment, load_matrix_sync, mma_sync, store_matrix_sync.
//
// load/mma/store are warp collectives: they complete only when all 32 lanes of the warp have
// arrived (with the same pointer, ldm and layout, as CUDA requires), then the last lane in does the
// whole tile for the warp. The pointer must be 256-bit aligned and ldm a multiple of 16 bytes, as
// on the GPU; accesses through an fk::Ptr are bounds-checked element by element.
// A fragment holds 8 elements per lane here (lane l owns row-major elements 8l..8l+7); the GPU's
// layout and count differ and are opaque, so kernels may only touch frag.x[i] elementwise.
#pragma once

#include <source_location>
#include <string>
#include <type_traits>

#include "emu/fp16.h"
#include "emu/memory.h"
#include "emu/runtime.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
  static_assert(M == 16 && N == 16 && K == 16, "fk::emu implements the m16n16k16 wmma shape only");
  static_assert(std::is_same_v<Use, accumulator> ? (std::is_same_v<T, float> || std::is_same_v<T, __half>)
                                                 : (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>),
                "fk::emu wmma: inputs are __half or __nv_bfloat16, accumulators float or __half");

 public:
  using element_type = T;
  static constexpr int num_elements = 8;
  T x[num_elements];
};

template <class Use, int M, int N, int K, class T, class L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, const std::type_identity_t<T>& v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

}  // namespace nvcuda::wmma

namespace fk::emu::wmma_detail {

using namespace nvcuda::wmma;

inline float to_f(float v) { return v; }
inline float to_f(__half v) { return __half2float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
T from_f(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return fk::emu::from_float<T>(v);
}

// The three arguments every lane must pass identically; checked when the warp is complete.
template <class T>
const Ptr<T>& lane_ptr(Block& b, unsigned warp, unsigned lane) {
  return *static_cast<const Ptr<T>*>(lane_thread(b, warp, lane).call.args[1]);
}

template <class T>
const Ptr<T>& uniform_args(Block& b, unsigned warp, const char* name) {
  const LaneCall& c0 = lane_thread(b, warp, 0).call;
  const Ptr<T>& p0 = lane_ptr<T>(b, warp, 0);
  for (unsigned lane = 1; lane < kWarpSize; ++lane) {
    const LaneCall& c = lane_thread(b, warp, lane).call;
    if (lane_ptr<T>(b, warp, lane).get() != p0.get() || c.ldm != c0.ldm || c.layout != c0.layout)
      fail(std::string(name) + ": lane " + std::to_string(lane) + " of warp " + std::to_string(warp) + " in block " +
           format3(b.index) + " passes a different pointer, ldm or layout than lane 0 (all 32 lanes must agree)");
  }
  if (reinterpret_cast<std::uintptr_t>(p0.get()) % 32 != 0)
    fail(std::string(name) + ": pointer into '" + p0.name() + "' is not 256-bit aligned (address % 32 = " +
         std::to_string(reinterpret_cast<std::uintptr_t>(p0.get()) % 32) + ") in block " + format3(b.index));
  if ((c0.ldm * sizeof(T)) % 16 != 0)
    fail(std::string(name) + ": ldm " + std::to_string(c0.ldm) + " is not a multiple of 16 bytes (" +
         std::to_string(16 / sizeof(T)) + " elements) in block " + format3(b.index));
  return p0;
}

inline std::size_t offset(int r, int c, unsigned ldm, bool col_major) {
  return col_major ? static_cast<std::size_t>(c) * ldm + r : static_cast<std::size_t>(r) * ldm + c;
}

template <class Frag>
Frag& lane_frag(Block& b, unsigned warp, unsigned lane, int arg) {
  return *static_cast<Frag*>(lane_thread(b, warp, lane).call.args[arg]);
}

template <class Frag, class T>
void complete_load(Block& b, unsigned warp, unsigned) {
  const Ptr<const T>& p = uniform_args<const T>(b, warp, "wmma::load_matrix_sync");
  const LaneCall& c0 = lane_thread(b, warp, 0).call;
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    Frag& f = lane_frag<Frag>(b, warp, lane, 0);
    for (int i = 0; i < Frag::num_elements; ++i) {
      int e = static_cast<int>(lane) * Frag::num_elements + i;
      f.x[i] = p[offset(e / 16, e % 16, c0.ldm, c0.layout != 0)];
    }
  }
}

template <class Frag, class T>
void complete_store(Block& b, unsigned warp, unsigned) {
  const Ptr<T>& p = uniform_args<T>(b, warp, "wmma::store_matrix_sync");
  const LaneCall& c0 = lane_thread(b, warp, 0).call;
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    const Frag& f = lane_frag<Frag>(b, warp, lane, 0);
    for (int i = 0; i < Frag::num_elements; ++i) {
      int e = static_cast<int>(lane) * Frag::num_elements + i;
      p[offset(e / 16, e % 16, c0.ldm, c0.layout != 0)] = f.x[i];
    }
  }
}

// D = A B + C for the warp's 16x16x16 tile, in fp32 (fp16/bf16 products are exact in fp32; the
// GPU's summation order inside the tensor core is unspecified, so compare with a tolerance).
template <class FD, class FA, class FB, class FC>
void complete_mma(Block& b, unsigned warp, unsigned) {
  float A[16][16], B[16][16], C[16][16];
  for (unsigned lane = 0; lane < kWarpSize; ++lane)
    for (int i = 0; i < 8; ++i) {
      int e = static_cast<int>(lane) * 8 + i;
      A[e / 16][e % 16] = to_f(lane_frag<const FA>(b, warp, lane, 1).x[i]);
      B[e / 16][e % 16] = to_f(lane_frag<const FB>(b, warp, lane, 2).x[i]);
      C[e / 16][e % 16] = to_f(lane_frag<const FC>(b, warp, lane, 3).x[i]);
    }
  for (unsigned lane = 0; lane < kWarpSize; ++lane)
    for (int i = 0; i < 8; ++i) {
      int e = static_cast<int>(lane) * 8 + i, r = e / 16, c = e % 16;
      float acc = C[r][c];
      for (int k = 0; k < 16; ++k) acc += A[r][k] * B[k][c];
      lane_frag<FD>(b, warp, lane, 0).x[i] = from_f<typename FD::element_type>(acc);
    }
}

inline std::uint64_t run(const char* name, void (*complete)(Block&, unsigned, unsigned), void* a0, const void* a1,
                         const void* a2, const void* a3, unsigned ldm, int layout, const std::source_location& where) {
  LaneCall c;
  c.op = Op::kCustom;
  c.name = name;
  c.mask = 0xFFFFFFFFu;
  c.args[0] = a0;
  c.args[1] = const_cast<void*>(a1);
  c.args[2] = const_cast<void*>(a2);
  c.args[3] = const_cast<void*>(a3);
  c.ldm = ldm;
  c.layout = layout;
  c.complete = complete;
  c.where = where;
  return warp_collective(c);
}


}  // namespace fk::emu::wmma_detail

namespace nvcuda::wmma {

// ---- load: matrix_a / matrix_b take their layout from the fragment type ----------------------------
template <class Use, class T, class L, class U,
          class = std::enable_if_t<!std::is_same_v<Use, accumulator> && std::is_same_v<std::remove_const_t<U>, T>>>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const fk::Ptr<U>& p, unsigned ldm,
                      std::source_location where = std::source_location::current()) {
  static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>, "matrix_a/matrix_b fragments need a layout");
  using Frag = fragment<Use, 16, 16, 16, T, L>;
  fk::Ptr<const T> cp = p;
  fk::emu::wmma_detail::run("wmma::load_matrix_sync", &fk::emu::wmma_detail::complete_load<Frag, T>, &f, &cp, nullptr,
                            nullptr, ldm, std::is_same_v<L, col_major>, where);
}
template <class Use, class T, class L, class = std::enable_if_t<!std::is_same_v<Use, accumulator>>>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm,
                      std::source_location where = std::source_location::current()) {
  load_matrix_sync(f, fk::emu::unchecked(p), ldm, where);
}

// ---- load / store of accumulators: the layout is an argument ----------------------------------------
template <class T, class U, class = std::enable_if_t<std::is_same_v<std::remove_const_t<U>, T>>>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const fk::Ptr<U>& p, unsigned ldm, layout_t layout,
                      std::source_location where = std::source_location::current()) {
  using Frag = fragment<accumulator, 16, 16, 16, T>;
  fk::Ptr<const T> cp = p;
  fk::emu::wmma_detail::run("wmma::load_matrix_sync", &fk::emu::wmma_detail::complete_load<Frag, T>, &f, &cp, nullptr,
                            nullptr, ldm, layout == mem_col_major, where);
}
template <class T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ldm, layout_t layout,
                      std::source_location where = std::source_location::current()) {
  load_matrix_sync(f, fk::emu::unchecked(p), ldm, layout, where);
}

template <class T>
void store_matrix_sync(const fk::Ptr<T>& p, const fragment<accumulator, 16, 16, 16, std::remove_const_t<T>>& f,
                       unsigned ldm, layout_t layout, std::source_location where = std::source_location::current()) {
  using Frag = fragment<accumulator, 16, 16, 16, std::remove_const_t<T>>;
  fk::emu::wmma_detail::run("wmma::store_matrix_sync", &fk::emu::wmma_detail::complete_store<Frag, T>,
                            const_cast<Frag*>(&f), &p, nullptr, nullptr, ldm, layout == mem_col_major, where);
}
template <class T>
void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm, layout_t layout,
                       std::source_location where = std::source_location::current()) {
  store_matrix_sync(fk::emu::unchecked(p), f, ldm, layout, where);
}

// ---- d = a b + c ---------------------------------------------------------------------------------------
template <class Td, class Tab, class La, class Lb, class Tc>
void mma_sync(fragment<accumulator, 16, 16, 16, Td>& d, const fragment<matrix_a, 16, 16, 16, Tab, La>& a,
              const fragment<matrix_b, 16, 16, 16, Tab, Lb>& b, const fragment<accumulator, 16, 16, 16, Tc>& c,
              std::source_location where = std::source_location::current()) {
  using FD = fragment<accumulator, 16, 16, 16, Td>;
  using FA = fragment<matrix_a, 16, 16, 16, Tab, La>;
  using FB = fragment<matrix_b, 16, 16, 16, Tab, Lb>;
  using FC = fragment<accumulator, 16, 16, 16, Tc>;
  fk::emu::wmma_detail::run("wmma::mma_sync", &fk::emu::wmma_detail::complete_mma<FD, FA, FB, FC>, &d, &a, &b, &c, 0, 0,
                            where);
}

}  // namespace nvcuda::wmma
