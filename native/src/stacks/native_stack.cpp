#define UNW_LOCAL_ONLY
#include "leakprobe/stacks/native_stack.h"

#include <dlfcn.h>
#include <libunwind.h>

#include <cstdint>
#include <cstdio>

namespace leakprobe {

__attribute__((noinline)) std::size_t CaptureNativeStack(void** pcs,
                                                         std::size_t max_depth) noexcept {
  unw_context_t context;
  unw_cursor_t cursor;
  if (max_depth == 0 || unw_getcontext(&context) != 0 ||
      unw_init_local(&cursor, &context) != 0) {
    return 0;
  }
  // The cursor starts in this function; each step moves to a caller.
  std::size_t n = 0;
  while (n < max_depth && unw_step(&cursor) > 0) {
    unw_word_t ip = 0;
    if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0) break;
    pcs[n++] =
        reinterpret_cast<void*>(ip);  // NOLINT(performance-no-int-to-ptr): a code address
  }
  return n;
}

std::string DescribeAddress(const void* pc) {
  Dl_info info{};
  char line[512];
  if (dladdr(pc, &info) == 0) {
    std::snprintf(line, sizeof line, "%p", pc);
    return line;
  }
  const char* object = info.dli_fname != nullptr ? info.dli_fname : "?";
  if (info.dli_sname == nullptr) {
    std::snprintf(line, sizeof line, "%p (%s)", pc, object);
    return line;
  }
  const auto offset = reinterpret_cast<std::uintptr_t>(pc) -
                      reinterpret_cast<std::uintptr_t>(info.dli_saddr);
  std::snprintf(line, sizeof line, "%s+0x%jx (%s)", info.dli_sname,
                static_cast<std::uintmax_t>(offset), object);
  return line;
}

}  // namespace leakprobe
