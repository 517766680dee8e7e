// __half and __nv_bfloat16 for the host build: bit-exact storage and CUDA's conversions.
//
// Conversions round to nearest even like __float2half / __float2bfloat16 (subnormals, overflow to
// inf, NaN -> 0x7FFF like CUDA's host path). Arithmetic (__hadd, operators, ...) computes in float
// and rounds once: for +, -, *, / and sqrt that is the correctly rounded fp16/bf16 result (float's
// 24 bits are >= 2p+2 for p = 11 and 8), which is what the GPU's fp16 units return.
// Like cuda_fp16.h, implicit conversions and operators are left out when __CUDA_NO_HALF_CONVERSIONS__
// / __CUDA_NO_HALF_OPERATORS__ (and the BFLOAT16 ones) are defined: torch's CUDAExtension defines
// them for nvcc, and fiber_kernels.testing.emu.build() defines them too, so a kernel that relies on
// them fails here as it would in the _C build.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fk::emu {

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::uint16_t float_to_half_bits(float f) {
  std::uint32_t x = float_bits(f);
  std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  std::uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return 0x7FFF;                  // NaN (CUDA returns the canonical NaN)
  if (ax >= 0x477FF000u) return sign | 0x7C00;          // >= 65520 rounds to inf
  if (ax < 0x38800000u) {                               // below 2^-14: a subnormal half or zero
    float scaled = bits_float(ax) * 16777216.0f;        // |f| * 2^24, exact (a power-of-two scale)
    auto m = static_cast<std::uint16_t>(std::nearbyint(scaled));  // ties to even in the default mode
    return sign | m;                                    // m == 1024 is the smallest normal: same bits
  }
  std::uint32_t exponent = (ax >> 23) - 112;            // rebias 127 -> 15
  std::uint32_t mantissa = ax & 0x7FFFFFu;
  std::uint32_t h = (exponent << 10) | (mantissa >> 13);
  std::uint32_t rest = mantissa & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is correct
  return sign | static_cast<std::uint16_t>(h);
}

inline float half_bits_to_float(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1Fu;
  std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {
    float v = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // m * 2^-24
    return sign ? -v : v;
  }
  if (exponent == 31) return bits_float(sign | 0x7F800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  x += 0x7FFFu + ((x >> 16) & 1u);  // round to nearest even; overflow carries into inf
  return static_cast<std::uint16_t>(x >> 16);
}

inline float bf16_bits_to_float(std::uint16_t b) { return bits_float(static_cast<std::uint32_t>(b) << 16); }

}  // namespace fk::emu

struct __half_raw {
  unsigned short x;
};

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct alignas(2) __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(const __half_raw& r) : __x(r.x) {}  // NOLINT: implicit like cuda_fp16.h
  __half& operator=(const __half_raw& r) {
    __x = r.x;
    return *this;
  }
  operator __half_raw() const { return __half_raw{__x}; }
#if !defined(__CUDA_NO_HALF_CONVERSIONS__)
  __half(float f) : __x(fk::emu::float_to_half_bits(f)) {}  // NOLINT
  __half(double f) : __x(fk::emu::float_to_half_bits(static_cast<float>(f))) {}  // NOLINT
  __half(int i) : __x(fk::emu::float_to_half_bits(static_cast<float>(i))) {}  // NOLINT
  operator float() const { return fk::emu::half_bits_to_float(__x); }
#endif
};

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}  // NOLINT
  __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) {
    __x = r.x;
    return *this;
  }
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
#if !defined(__CUDA_NO_BFLOAT16_CONVERSIONS__)
  __nv_bfloat16(float f) : __x(fk::emu::float_to_bf16_bits(f)) {}  // NOLINT
  __nv_bfloat16(double f) : __x(fk::emu::float_to_bf16_bits(static_cast<float>(f))) {}  // NOLINT
  __nv_bfloat16(int i) : __x(fk::emu::float_to_bf16_bits(static_cast<float>(i))) {}  // NOLINT
  operator float() const { return fk::emu::bf16_bits_to_float(__x); }
#endif
};

using half = __half;
using nv_bfloat16 = __nv_bfloat16;

// ---- conversions ---------------------------------------------------------------------------------
inline __half __float2half(float f) { return __half_raw{fk::emu::float_to_half_bits(f)}; }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline float __half2float(__half h) { return fk::emu::half_bits_to_float(h.__x); }
inline __half __int2half_rn(int i) { return __float2half(static_cast<float>(i)); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half_raw{u}; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16_raw{fk::emu::float_to_bf16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return fk::emu::bf16_bits_to_float(b.__x); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16_raw{u}; }

namespace fk::emu {
inline float to_float(__half h) { return __half2float(h); }
inline float to_float(__nv_bfloat16 b) { return __bfloat162float(b); }
template <class H>
H from_float(float f);
template <>
inline __half from_float<__half>(float f) { return __float2half(f); }
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float f) { return __float2bfloat16(f); }
}  // namespace fk::emu

// ---- arithmetic intrinsics (both types, as cuda_fp16.h / cuda_bf16.h overload them) --------------
#define FK_EMU_HALF_INTRINSICS(H)                                                                        \
  inline H __hadd(H a, H b) { return fk::emu::from_float<H>(fk::emu::to_float(a) + fk::emu::to_float(b)); } \
  inline H __hsub(H a, H b) { return fk::emu::from_float<H>(fk::emu::to_float(a) - fk::emu::to_float(b)); } \
  inline H __hmul(H a, H b) { return fk::emu::from_float<H>(fk::emu::to_float(a) * fk::emu::to_float(b)); } \
  inline H __hdiv(H a, H b) { return fk::emu::from_float<H>(fk::emu::to_float(a) / fk::emu::to_float(b)); } \
  inline H __hfma(H a, H b, H c) {                                                                       \
    return fk::emu::from_float<H>(static_cast<float>(                                                    \
        std::fma(static_cast<double>(fk::emu::to_float(a)), fk::emu::to_float(b), fk::emu::to_float(c)))); \
  }                                                                                                      \
  inline H __hneg(H a) {                                                                                 \
    a.__x ^= 0x8000u;                                                                                    \
    return a;                                                                                            \
  }                                                                                                      \
  inline H __habs(H a) {                                                                                 \
    a.__x &= 0x7FFFu;                                                                                    \
    return a;                                                                                            \
  }                                                                                                      \
  inline H __hmax(H a, H b) { return fk::emu::from_float<H>(std::fmax(fk::emu::to_float(a), fk::emu::to_float(b))); } \
  inline H __hmin(H a, H b) { return fk::emu::from_float<H>(std::fmin(fk::emu::to_float(a), fk::emu::to_float(b))); } \
  inline bool __heq(H a, H b) { return fk::emu::to_float(a) == fk::emu::to_float(b); }                  \
  inline bool __hne(H a, H b) { return fk::emu::to_float(a) != fk::emu::to_float(b); }                  \
  inline bool __hlt(H a, H b) { return fk::emu::to_float(a) < fk::emu::to_float(b); }                   \
  inline bool __hle(H a, H b) { return fk::emu::to_float(a) <= fk::emu::to_float(b); }                  \
  inline bool __hgt(H a, H b) { return fk::emu::to_float(a) > fk::emu::to_float(b); }                   \
  inline bool __hge(H a, H b) { return fk::emu::to_float(a) >= fk::emu::to_float(b); }                  \
  inline bool __hisnan(H a) { return std::isnan(fk::emu::to_float(a)); }                                \
  inline int __hisinf(H a) {                                                                             \
    float f = fk::emu::to_float(a);                                                                      \
    return std::isinf(f) ? (f < 0 ? -1 : 1) : 0;                                                         \
  }

FK_EMU_HALF_INTRINSICS(__half)
FK_EMU_HALF_INTRINSICS(__nv_bfloat16)
#undef FK_EMU_HALF_INTRINSICS


#define FK_EMU_HALF_OPERATORS(H)                                                     \
  inline H operator+(H a, H b) { return __hadd(a, b); }                              \
  inline H operator-(H a, H b) { return __hsub(a, b); }                              \
  inline H operator*(H a, H b) { return __hmul(a, b); }                              \
  inline H operator/(H a, H b) { return __hdiv(a, b); }                              \
  inline H operator-(H a) { return __hneg(a); }                                      \
  inline H& operator+=(H& a, H b) { return a = __hadd(a, b); }                       \
  inline H& operator-=(H& a, H b) { return a = __hsub(a, b); }                       \
  inline H& operator*=(H& a, H b) { return a = __hmul(a, b); }                       \
  inline H& operator/=(H& a, H b) { return a = __hdiv(a, b); }                       \
  inline bool operator==(H a, H b) { return __heq(a, b); }                           \
  inline bool operator!=(H a, H b) { return __hne(a, b); }                           \
  inline bool operator<(H a, H b) { return __hlt(a, b); }                            \
  inline bool operator<=(H a, H b) { return __hle(a, b); }                           \
  inline bool operator>(H a, H b) { return __hgt(a, b); }                            \
  inline bool operator>=(H a, H b) { return __hge(a, b); }

#if !defined(__CUDA_NO_HALF_OPERATORS__)
FK_EMU_HALF_OPERATORS(__half)
#endif
#if !defined(__CUDA_NO_BFLOAT16_OPERATORS__)
FK_EMU_HALF_OPERATORS(__nv_bfloat16)
#endif
#undef FK_EMU_HALF_OPERATORS
