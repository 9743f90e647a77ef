#include "leakprobe/stacks/native_stack.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

// Outside any namespace and exported (ENABLE_EXPORTS) so dladdr names it.
extern "C" __attribute__((noinline)) std::size_t LeakprobeTestCaptureHere(
    void** pcs, std::size_t depth) {
  const std::size_t n = leakprobe::CaptureNativeStack(pcs, depth);
  asm volatile("" ::: "memory");  // keep this frame: no tail call
  return n;
}

namespace leakprobe {
namespace {

TEST(NativeStackTest, InnermostFrameIsTheCaller) {
  std::array<void*, 16> pcs{};
  const std::size_t n = LeakprobeTestCaptureHere(pcs.data(), pcs.size());
  ASSERT_GE(n, 2u);
  // Frame 0 is the function that called CaptureNativeStack.
  EXPECT_NE(DescribeAddress(pcs[0]).find("LeakprobeTestCaptureHere"), std::string::npos)
      << DescribeAddress(pcs[0]);
}

TEST(NativeStackTest, RespectsDepthLimit) {
  std::array<void*, 2> pcs{};
  EXPECT_EQ(CaptureNativeStack(pcs.data(), 2), 2u);
  EXPECT_EQ(CaptureNativeStack(pcs.data(), 0), 0u);
}

}  // namespace
}  // namespace leakprobe
