#include "leakprobe/stacks/native_stack.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

// Outside any namespace and exported (ENABLE_EXPORTS) so dladdr names it.
extern "C" __attribute__((noinline)) std::size_t LeakprobeTestCaptureHere(
    void** pcs, std::size_t depth) {
  const std::size_t n = leakprobe::CaptureNativeStack(pcs, depth);  // kCaptureLine
  asm volatile("" ::: "memory");  // keep this frame: no tail call
  return n;
}
constexpr int kCaptureLine = __LINE__ - 4;

// Static: only the object's full symbol table (.symtab) names it; dladdr
// names the exported symbol before it, or nothing.
namespace {
volatile int g_static_calls = 0;  // a body of its own: not folded into the one above
__attribute__((noinline)) std::size_t StaticCaptureHere(void** pcs, std::size_t depth) {
  const std::size_t n = leakprobe::CaptureNativeStack(pcs, depth);
  g_static_calls = g_static_calls + 1;
  return n;
}
}  // namespace

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

// The test binary is built with -g: the call's source line comes from its
// DWARF line table, through libdw (scripts/setup.sh installs libdw-dev).
TEST(NativeStackTest, SourceLineAndStaticSymbolFromDebugInfo) {
  std::array<void*, 16> pcs{};
  ASSERT_GE(LeakprobeTestCaptureHere(pcs.data(), pcs.size()), 1u);
  const NativeLocation where = LocateAddress(pcs[0]);
  EXPECT_NE(where.file.find("native_stack_test.cpp"), std::string::npos) << where.file;
  EXPECT_EQ(where.line, kCaptureLine);
  EXPECT_EQ(where.function.rfind("LeakprobeTestCaptureHere+0x", 0), 0u) << where.function;
  const std::string text = DescribeAddress(pcs[0]);
  EXPECT_NE(text.find("native_stack_test.cpp:" + std::to_string(kCaptureLine)),
            std::string::npos)
      << text;

  ASSERT_GE(StaticCaptureHere(pcs.data(), pcs.size()), 1u);
  const NativeLocation inside_static = LocateAddress(pcs[0]);
  EXPECT_NE(inside_static.function.find("StaticCaptureHere"), std::string::npos)
      << inside_static.function;
  EXPECT_GT(inside_static.line, 0);

  const SymbolizerStats stats = GetSymbolizerStats();
  EXPECT_TRUE(stats.libdw);
  EXPECT_GE(stats.with_line, 2u);
  const std::uint64_t lookups = stats.lookups;
  LocateAddress(pcs[0]);  // cached now
  EXPECT_EQ(GetSymbolizerStats().lookups, lookups);
  EXPECT_GT(GetSymbolizerStats().cached, stats.cached);
}

// Each call that misses the cache reads the process's objects afresh (a
// libdw session: tens to hundreds of milliseconds with debug info), so
// many new addresses are described in one call, as the native heap's
// summary names its sites.
TEST(NativeStackTest, ManyNewAddressesAreDescribedInOneSession) {
  const auto* code = reinterpret_cast<const char*>(&LeakprobeTestCaptureHere);
  std::vector<const void*> batch;
  std::vector<const void*> one_by_one;
  for (int i = 0; i < 8; ++i) {
    batch.push_back(code + 3 + i);  // inside the test binary, never located before
    one_by_one.push_back(code + 11 + i);
  }
  const std::uint64_t before = GetSymbolizerStats().sessions;
  const std::vector<std::string> names = DescribeAddresses(batch);
  ASSERT_EQ(names.size(), batch.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(names[i], DescribeAddress(batch[i]));  // the same text, now cached
    EXPECT_NE(names[i].find("leakprobe_native_tests"), std::string::npos) << names[i];
  }
  EXPECT_EQ(GetSymbolizerStats().sessions, before + 1);
  for (const void* pc : one_by_one) DescribeAddress(pc);  // what the batch saves
  EXPECT_EQ(GetSymbolizerStats().sessions, before + 1 + one_by_one.size());
  DescribeAddresses(batch);  // all cached: no session
  EXPECT_EQ(GetSymbolizerStats().sessions, before + 1 + one_by_one.size());
}

// An address in no object: its value, no line.
TEST(NativeStackTest, AddressOutsideEveryObject) {
  const NativeLocation where = LocateAddress(reinterpret_cast<const void*>(0x10));
  EXPECT_TRUE(where.object.empty());
  EXPECT_EQ(where.line, 0);
  EXPECT_EQ(DescribeAddress(reinterpret_cast<const void*>(0x10)), "0x10");
}

TEST(NativeStackTest, RespectsDepthLimit) {
  std::array<void*, 2> pcs{};
  EXPECT_EQ(CaptureNativeStack(pcs.data(), 2), 2u);
  EXPECT_EQ(CaptureNativeStack(pcs.data(), 0), 0u);
}

}  // namespace
}  // namespace leakprobe
