// A fake FrameSource for native tests: the "current Python stack" of each
// thread is whatever the test puts in tls_fake_stack; codes resolve to
// "file<code>.py:<offset / 2> in f<code>".
#pragma once

#include <cstdio>
#include <vector>

#include "leakprobe/stacks/stack_table.h"

namespace leakprobe::testing {

inline thread_local std::vector<LeakprobeRawFrame> tls_fake_stack;
// How many of tls_fake_stack's innermost frames are the running coroutine
// chain (FakeCaptureTask); 0: all.
inline thread_local int tls_fake_task_depth = 0;

inline LeakprobeRawFrame FakeFrame(std::uintptr_t code, int offset) {
  return {reinterpret_cast<const void*>(code), nullptr, offset, 1};
}

inline int FakeCapture(LeakprobeRawFrame* out, int max_frames) {
  int n = 0;
  for (const LeakprobeRawFrame& frame : tls_fake_stack) {
    if (n == max_frames) break;
    out[n++] = frame;
  }
  return n;
}

inline int FakeCaptureTask(LeakprobeRawFrame* out, int max_frames) {
  const int n = FakeCapture(out, max_frames);
  return tls_fake_task_depth > 0 && tls_fake_task_depth < n ? tls_fake_task_depth : n;
}

inline int FakeResolve(const LeakprobeRawFrame* frame, LeakprobeResolvedFrame* out) {
  const auto code = reinterpret_cast<std::uintptr_t>(frame->code);
  std::snprintf(out->filename, sizeof out->filename, "%s/file%ju.py",
                code >= 1000 ? "/lib" : "/app", static_cast<std::uintmax_t>(code));
  std::snprintf(out->function, sizeof out->function, "f%ju",
                static_cast<std::uintmax_t>(code));
  out->line = frame->offset / 2;
  return 0;
}

inline FrameSource FakeSource() { return {&FakeCapture, &FakeResolve, &FakeCaptureTask}; }

}  // namespace leakprobe::testing
