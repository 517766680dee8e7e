// Bounds-checked memory for the host build: fk::Ptr<T> and the per-block shared memory macros.
//
// Under nvcc fk::Ptr<T> is T* (csrc/include/fiber_kernels/portable.cuh). Here it is a pointer that remembers the
// allocation it points into (a tensor, a shared array, the dynamic shared buffer) and checks every
// dereference: an access outside [begin, end) of that allocation, or misaligned for T, throws
// fk::emu::Error naming the buffer, the element and the CUDA thread. Pointer arithmetic is free
// (like raw pointers, one may point past the end); only dereferences are checked.
// Raw T* obtained from a checked access (&p[i]) are unchecked: keep pointers as fk::Ptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "emu/runtime.h"

namespace fk {

namespace emu {
enum class Space { kGlobal, kShared, kRaw };

inline const char* space_name(Space s) {
  return s == Space::kGlobal ? "global" : s == Space::kShared ? "shared" : "unchecked";
}

[[noreturn]] inline void bad_access(const char* buffer, Space space, std::uintptr_t begin, std::uintptr_t end,
                                    std::uintptr_t address, std::size_t size, std::size_t align) {
  std::string msg;
  if (address == 0) {
    msg = "null pointer dereference";
  } else if (address % align != 0) {
    msg = "misaligned access (address % " + std::to_string(align) + " = " + std::to_string(address % align) + ")";
  } else {
    auto offset = static_cast<long long>(address - begin);
    long long bytes = static_cast<long long>(end - begin);
    msg = "out-of-bounds access";
    msg += " at element " + std::to_string(offset >= 0 ? offset / static_cast<long long>(size)
                                                       : -((-offset + static_cast<long long>(size) - 1) / static_cast<long long>(size)));
    msg += " (byte offset " + std::to_string(offset) + ")";
    msg += " of " + std::string(space_name(space)) + " buffer '" + buffer + "' with " +
           std::to_string(bytes / static_cast<long long>(size)) + " elements of " + std::to_string(size) + " bytes";
  }
  if (address != 0 && address % align != 0) msg += " in " + std::string(space_name(space)) + " buffer '" + buffer + "'";
  fail(msg + ", by " + where_now());
}
}  // namespace emu

template <class T>
class Ptr {
 public:
  using element_type = T;

  Ptr() = default;
  Ptr(std::nullptr_t) {}  // NOLINT: implicit like a raw pointer
  Ptr(T* p, std::uintptr_t begin, std::uintptr_t end, const char* name, emu::Space space)
      : p_(reinterpret_cast<std::uintptr_t>(p)), begin_(begin), end_(end), name_(name), space_(space) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  Ptr(const Ptr<U>& other)  // NOLINT: Ptr<float> -> Ptr<const float>, like T* -> const T*
      : p_(reinterpret_cast<std::uintptr_t>(static_cast<T*>(other.get()))),
        begin_(other.begin()), end_(other.end()), name_(other.name()), space_(other.space()) {}

  template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
  T& operator[](I i) const {
    return *check(p_ + static_cast<std::uintptr_t>(static_cast<std::ptrdiff_t>(i) * static_cast<std::ptrdiff_t>(sizeof(T))));
  }
  T& operator*() const { return *check(p_); }
  T* operator->() const { return check(p_); }

  template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
  Ptr operator+(I i) const {
    Ptr r = *this;
    r.p_ += static_cast<std::uintptr_t>(static_cast<std::ptrdiff_t>(i) * static_cast<std::ptrdiff_t>(sizeof(T)));
    return r;
  }
  template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
  friend Ptr operator+(I i, const Ptr& p) {
    return p + i;
  }
  template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
  Ptr operator-(I i) const {
    return *this + (-static_cast<std::ptrdiff_t>(i));
  }
  template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
  Ptr& operator+=(I i) {
    return *this = *this + i;
  }
  template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
  Ptr& operator-=(I i) {
    return *this = *this - i;
  }
  Ptr& operator++() { return *this += 1; }
  Ptr& operator--() { return *this -= 1; }
  Ptr operator++(int) {
    Ptr r = *this;
    *this += 1;
    return r;
  }
  Ptr operator--(int) {
    Ptr r = *this;
    *this -= 1;
    return r;
  }
  std::ptrdiff_t operator-(const Ptr& o) const {
    return (static_cast<std::ptrdiff_t>(p_) - static_cast<std::ptrdiff_t>(o.p_)) / static_cast<std::ptrdiff_t>(sizeof(T));
  }
  bool operator==(const Ptr& o) const { return p_ == o.p_; }
  bool operator!=(const Ptr& o) const { return p_ != o.p_; }
  bool operator<(const Ptr& o) const { return p_ < o.p_; }
  bool operator<=(const Ptr& o) const { return p_ <= o.p_; }
  bool operator>(const Ptr& o) const { return p_ > o.p_; }
  bool operator>=(const Ptr& o) const { return p_ >= o.p_; }
  explicit operator bool() const { return p_ != 0; }

  T* get() const { return reinterpret_cast<T*>(p_); }
  std::uintptr_t begin() const { return begin_; }
  std::uintptr_t end() const { return end_; }
  const char* name() const { return name_; }
  emu::Space space() const { return space_; }
  // The pointer to an element after checking it (for atomics and wmma on an fk::Ptr).
  T* checked() const { return check(p_); }

 private:
  T* check(std::uintptr_t a) const {
    constexpr std::size_t size = sizeof(std::conditional_t<std::is_void_v<T>, char, T>);
    constexpr std::size_t align = alignof(std::conditional_t<std::is_void_v<T>, char, T>);
    if (a == 0 || a % align != 0 || a < begin_ || a + size > end_ || a + size < a)
      emu::bad_access(name_, space_, begin_, end_, a, size, align);
    return reinterpret_cast<T*>(a);
  }

  std::uintptr_t p_ = 0, begin_ = 0, end_ = 0;
  const char* name_ = "(null)";
  emu::Space space_ = emu::Space::kRaw;
};

// The same bytes seen as another type (vectorised loads: float4 from a float buffer); the bounds
// stay those of the allocation and every access checks the alignment of U.
template <class U, class T>
Ptr<U> ptr_cast(const Ptr<T>& p) {
  return Ptr<U>(reinterpret_cast<U*>(p.get()), p.begin(), p.end(), p.name(), p.space());
}

template <class T>
T* raw(const Ptr<T>& p) {
  return p.get();
}

namespace emu {

// A checked view of n elements at p (for host buffers that are not tensors).
template <class T>
Ptr<T> span(T* p, std::size_t n, const char* name) {
  auto b = reinterpret_cast<std::uintptr_t>(p);
  return Ptr<T>(p, b, b + n * sizeof(T), name, Space::kGlobal);
}

// A raw pointer used where a checked one is expected (wmma on &smem[i]): no bounds, alignment only.
template <class T>
Ptr<T> unchecked(T* p) {
  return Ptr<T>(p, 0, ~std::uintptr_t(0), "(raw pointer)", Space::kRaw);
}

template <class Site>
inline const char site_key = 0;  // one address per FK_SHARED declaration (its lambda's type)

// The block's array for one static declaration: the first thread of the block to reach the
// declaration allocates it, the others get the same memory, as on a GPU.
template <class T, class Site>
Ptr<T> shared_array(Site, std::size_t count, const char* name, std::size_t align = alignof(T)) {
  Launch& l = launch_state("__shared__ memory");
  SharedMemory& s = l.blk.shared;
  const void* key = &site_key<Site>;
  for (const SharedMemory::Site& site : s.sites)
    if (site.key == key) {
      auto b = reinterpret_cast<std::uintptr_t>(s.arena + site.offset);
      return Ptr<T>(reinterpret_cast<T*>(b), b, b + site.bytes, name, Space::kShared);
    }
  std::size_t offset = (s.used + align - 1) / align * align;
  std::size_t bytes = count * sizeof(T);
  if (offset + bytes > kMaxStaticShared)
    fail("static shared memory of the kernel exceeds 48 KiB (CUDA's limit for __shared__ arrays) at '" + std::string(name) +
         "' (" + std::to_string(offset + bytes) + " bytes); use dynamic shared memory");
  s.sites.push_back(SharedMemory::Site{key, offset, bytes});
  s.used = offset + bytes;
  std::memset(s.arena + offset, 0xFF, bytes);  // uninitialised shared memory reads as NaN / -1
  auto b = reinterpret_cast<std::uintptr_t>(s.arena + offset);
  return Ptr<T>(reinterpret_cast<T*>(b), b, b + bytes, name, Space::kShared);
}

// The dynamic shared memory of the launch (its byte count is the launch's 4th argument).
template <class T>
Ptr<T> dynamic_shared(const char* name) {
  Launch& l = launch_state("extern __shared__ memory");
  SharedMemory& s = l.blk.shared;
  auto b = reinterpret_cast<std::uintptr_t>(s.dynamic_base);
  return Ptr<T>(reinterpret_cast<T*>(b), b, b + s.dynamic_bytes, name, Space::kShared);
}

}  // namespace emu
}  // namespace fk

// `__shared__ T name[count];` in a kernel: one array per block, shared by its threads, checked.
#define FK_SHARED(T, name, count) ::fk::Ptr<T> name = ::fk::emu::shared_array<T>([] {}, (count), #name)
#define FK_SHARED_ALIGNED(T, name, count, align) \
  ::fk::Ptr<T> name = ::fk::emu::shared_array<T>([] {}, (count), #name, (align))
#define FK_SHARED_VAR(T, name) T& name = *::fk::emu::shared_array<T>([] {}, 1, #name)
#define FK_DYNAMIC_SHARED(T, name) ::fk::Ptr<T> name = ::fk::emu::dynamic_shared<T>(#name)

// A raw `__shared__` would compile to one function-static array shared by all blocks and unchecked:
// refuse it so kernels use the macros above.
#define __shared__ static_assert(false, "fk::emu: use FK_SHARED / FK_SHARED_VAR / FK_DYNAMIC_SHARED instead of __shared__ (docs/emulation.md)");
