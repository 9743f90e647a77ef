// A per-thread switch that makes operator new fail, for the out-of-memory
// tests (leakprobe_oom_tests only: failing_allocator.cpp replaces the global
// operator new and delete of that binary).
//
//   testing::FailAllocationsAfter(2);   // two more succeed, then all fail
//   ...code under test...
//   testing::AllowAllocations();
//   testing::FailedAllocations();       // attempts that failed on this thread
//
// Failing means throwing std::bad_alloc (nullptr from the nothrow forms).
// Thread-safety: per thread.
#pragma once

#include <cstdint>

namespace leakprobe::testing {

void FailAllocationsAfter(std::int64_t allowed) noexcept;
void AllowAllocations() noexcept;
std::uint64_t FailedAllocations() noexcept;

}  // namespace leakprobe::testing
