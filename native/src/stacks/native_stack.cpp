#define UNW_LOCAL_ONLY
#include "leakprobe/stacks/native_stack.h"

#include <libunwind.h>

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

}  // namespace leakprobe
