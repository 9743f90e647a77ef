#include "leakprobe/interpose/interpose.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "fd_test_lib_loader.h"
#include "leakprobe/runtime/error.h"

namespace leakprobe {
namespace {

using testing::FdTestLib;

std::atomic<void*> real_getppid{nullptr};
std::atomic<int> getppid_calls{0};

int CountingGetppid() noexcept {
  getppid_calls.fetch_add(1);
  return reinterpret_cast<int (*)()>(real_getppid.load(std::memory_order_relaxed))();
}

const InterposeHook kHooks[] = {
    {"getppid", reinterpret_cast<void*>(&CountingGetppid), &real_getppid}};

void* const kHook = reinterpret_cast<void*>(&CountingGetppid);

class InterposeTest : public ::testing::Test {
 protected:
  void TearDown() override { Interposer::Instance().Restore(); }
};

TEST_F(InterposeTest, PatchesAnotherObjectAndRestoresEveryEntry) {
  FdTestLib a(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(a.ok()) << dlerror();
  void* const original = a.getppid_address();
  ASSERT_EQ(original, dlsym(RTLD_DEFAULT, "getppid"));

  Interposer::Instance().Install(kHooks, 1);
  EXPECT_TRUE(Interposer::Instance().installed());
  EXPECT_EQ(real_getppid.load(), original);
  EXPECT_EQ(a.getppid_address(), kHook);  // A's GOT entry now leads to the hook
  const int before = getppid_calls.load();
  EXPECT_EQ(a.getppid(), getppid());  // return value untouched
  EXPECT_EQ(getppid_calls.load(), before + 1);
  // This executable holds leakprobe and is never patched.
  EXPECT_GE(Interposer::Instance().stats().objects_skipped, 1u);

  Interposer::Instance().Restore();
  EXPECT_FALSE(Interposer::Instance().installed());
  EXPECT_EQ(a.getppid_address(), original);
  EXPECT_EQ(a.getppid(), getppid());
  EXPECT_EQ(getppid_calls.load(), before + 1);
}

TEST_F(InterposeTest, InstallingTwiceNeverWrapsTheHook) {
  FdTestLib a(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(a.ok());
  Interposer::Instance().Install(kHooks, 1);
  const std::uint64_t patched = Interposer::Instance().stats().slots_patched;
  Interposer::Instance().Install(kHooks, 1);
  Interposer::Instance().PatchNewObjects();
  EXPECT_EQ(Interposer::Instance().stats().slots_patched, patched);
  EXPECT_EQ(real_getppid.load(), dlsym(RTLD_DEFAULT, "getppid"));
  const int before = getppid_calls.load();
  a.getppid();
  EXPECT_EQ(getppid_calls.load(), before + 1);
}

TEST_F(InterposeTest, ConflictingRegistrationThrows) {
  static std::atomic<void*> other_real{nullptr};
  static const InterposeHook other = {"getppid", reinterpret_cast<void*>(&getpid),
                                      &other_real};
  Interposer::Instance().Install(kHooks, 1);
  EXPECT_THROW(Interposer::Instance().Install(&other, 1), Error);
}

TEST_F(InterposeTest, PatchesLazilyBoundEntriesNotYetResolved) {
  FdTestLib b(LEAKPROBE_FD_TEST_LIB_B);  // -z lazy: getppid's PLT slot unresolved
  ASSERT_TRUE(b.ok());
  Interposer::Instance().Install(kHooks, 1);
  const int before = getppid_calls.load();
  EXPECT_EQ(b.getppid(), getppid());
  EXPECT_EQ(getppid_calls.load(), before + 1);
  Interposer::Instance().Restore();
  EXPECT_EQ(b.getppid(), getppid());  // the lazy stub resolves again
  EXPECT_EQ(getppid_calls.load(), before + 1);
}

TEST_F(InterposeTest, LibraryDlopenedByPathAfterInstallIsPatchedAtOnce) {
  FdTestLib a(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(a.ok());
  Interposer::Instance().Install(kHooks, 1);
  // A's dlopen goes through our stub; the test executable's dlsym below does
  // not, so only the patch after the real dlopen can have reached B.
  void* b = a.dlopen(LEAKPROBE_FD_TEST_LIB_B, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(dlerror(), nullptr);  // our RTLD_NOLOAD probes leave no message
  auto b_getppid = reinterpret_cast<int (*)()>(dlsym(b, "fdtest_getppid"));
  ASSERT_NE(b_getppid, nullptr);
  const int before = getppid_calls.load();
  EXPECT_EQ(b_getppid(), getppid());
  EXPECT_EQ(getppid_calls.load(), before + 1);
  // Unloaded while patched: Restore must skip it, not write into freed pages.
  EXPECT_EQ(a.dlclose(b), 0);
  Interposer::Instance().Restore();
  EXPECT_EQ(a.getppid_address(), real_getppid.load());
}

TEST_F(InterposeTest, DlopenByBareNameKeepsTheCallersRunpath) {
  FdTestLib a(LEAKPROBE_FD_TEST_LIB_A);  // RUNPATH $ORIGIN: finds B by name
  ASSERT_TRUE(a.ok());
  void* without_hooks = a.dlopen(LEAKPROBE_FD_TEST_LIB_B_NAME, RTLD_NOW | RTLD_LOCAL);
#if defined(__SANITIZE_ADDRESS__)
  if (without_hooks == nullptr) {
    GTEST_SKIP() << "under ASan, whose own dlopen interceptor loses the caller's RUNPATH "
                    "(hooks or not), B cannot be loaded by bare name: "
                 << dlerror();
  }
#endif
  ASSERT_NE(without_hooks, nullptr) << dlerror();
  a.dlclose(without_hooks);
  Interposer::Instance().Install(kHooks, 1);
  void* with_hooks = a.dlopen(LEAKPROBE_FD_TEST_LIB_B_NAME, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(with_hooks, nullptr) << dlerror();
  // A bare-name load is handed to the loader untouched and patched at the
  // next dl* call from a patched object, e.g. the dlsym that finds a function.
  auto b_getppid = reinterpret_cast<int (*)()>(a.dlsym(with_hooks, "fdtest_getppid"));
  ASSERT_NE(b_getppid, nullptr);
  const int before = getppid_calls.load();
  b_getppid();
  EXPECT_EQ(getppid_calls.load(), before + 1);
  a.dlclose(with_hooks);
}

TEST_F(InterposeTest, DlErrorsAreTheLoadersOwn) {
  FdTestLib a(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(a.ok());
  Interposer::Instance().Install(kHooks, 1);
  dlerror();
  EXPECT_EQ(a.dlopen("/nonexistent/libnothing.so", RTLD_NOW), nullptr);
  const char* error = dlerror();
  ASSERT_NE(error, nullptr);
  EXPECT_NE(std::string(error).find("/nonexistent/libnothing.so"), std::string::npos);
  EXPECT_EQ(a.dlsym(a.handle, "no_such_symbol_here"), nullptr);
  EXPECT_NE(dlerror(), nullptr);
  // RTLD_DEFAULT resolves from the caller's scope, which the stub preserves.
  EXPECT_EQ(a.dlsym(RTLD_DEFAULT, "getppid"), real_getppid.load());
}

TEST_F(InterposeTest, PatchingWhileOtherThreadsCallThrough) {
  FdTestLib a(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(a.ok());
  const int expected = getppid();
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        if (a.getppid() != expected) wrong.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    Interposer::Instance().Install(kHooks, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    Interposer::Instance().Restore();
  }
  stop.store(true);
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(a.getppid_address(), real_getppid.load());
}

}  // namespace
}  // namespace leakprobe
