// leakprobe/stacks/native_stack.h — native (C/C++) call stacks through libunwind,
// for attributing native allocations and fds made by C libraries.
//
//   std::array<void*, 32> pcs;
//   std::size_t n = leakprobe::CaptureNativeStack(pcs.data(), pcs.size());
//   std::string where = leakprobe::DescribeAddress(pcs[0]);
//
// CaptureNativeStack does not allocate and is async-signal-safe as far as
// libunwind's local unwinder is (UNW_LOCAL_ONLY). DescribeAddress is cold
// path only (it resolves symbols and allocates).
// Thread-safety: both are reentrant.
#pragma once

#include <cstddef>
#include <string>

namespace leakprobe {

// Fills `pcs` with up to `max_depth` return addresses, innermost first,
// skipping this function itself. Returns how many were written.
std::size_t CaptureNativeStack(void** pcs, std::size_t max_depth) noexcept;

// "symbol+0x12 (object)" for a code address, best effort.
std::string DescribeAddress(const void* pc);

}  // namespace leakprobe
