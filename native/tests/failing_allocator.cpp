// Replaces the global operator new/delete of leakprobe_oom_tests with
// malloc/free plus a per-thread failure switch (failing_allocator.h). Every
// form is replaced, so that new and delete always pair (ASan checks it).
#include "failing_allocator.h"

#include <cstddef>
#include <cstdlib>
#include <new>

namespace leakprobe::testing {
namespace {

__thread std::int64_t t_allowed = -1;  // < 0: the switch is off
__thread std::uint64_t t_failed = 0;

bool ShouldFail() noexcept {
  if (t_allowed < 0) return false;
  if (t_allowed > 0) {
    --t_allowed;
    return false;
  }
  ++t_failed;
  return true;
}

void* Allocate(std::size_t bytes, std::size_t alignment) noexcept {
  if (ShouldFail()) return nullptr;
  if (bytes == 0) bytes = 1;
  if (alignment <= alignof(std::max_align_t)) return std::malloc(bytes);
  void* p = nullptr;
  return posix_memalign(&p, alignment, bytes) == 0 ? p : nullptr;
}

void* AllocateOrThrow(std::size_t bytes, std::size_t alignment) {
  void* p = Allocate(bytes, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void FailAllocationsAfter(std::int64_t allowed) noexcept {
  t_allowed = allowed < 0 ? 0 : allowed;
  t_failed = 0;
}
void AllowAllocations() noexcept { t_allowed = -1; }
std::uint64_t FailedAllocations() noexcept { return t_failed; }

}  // namespace leakprobe::testing

using leakprobe::testing::Allocate;
using leakprobe::testing::AllocateOrThrow;

constexpr std::size_t kPlain = alignof(std::max_align_t);

void* operator new(std::size_t n) { return AllocateOrThrow(n, kPlain); }
void* operator new[](std::size_t n) { return AllocateOrThrow(n, kPlain); }
void* operator new(std::size_t n, const std::nothrow_t& /*tag*/) noexcept {
  return Allocate(n, kPlain);
}
void* operator new[](std::size_t n, const std::nothrow_t& /*tag*/) noexcept {
  return Allocate(n, kPlain);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return AllocateOrThrow(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return AllocateOrThrow(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, std::align_val_t a,
                   const std::nothrow_t& /*tag*/) noexcept {
  return Allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a,
                     const std::nothrow_t& /*tag*/) noexcept {
  return Allocate(n, static_cast<std::size_t>(a));
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t /*n*/) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t /*n*/) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t& /*tag*/) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t& /*tag*/) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t /*a*/) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t /*a*/) noexcept { std::free(p); }
void operator delete(void* p, std::size_t /*n*/, std::align_val_t /*a*/) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t /*n*/, std::align_val_t /*a*/) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t /*a*/,
                     const std::nothrow_t& /*tag*/) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t /*a*/,
                       const std::nothrow_t& /*tag*/) noexcept {
  std::free(p);
}
