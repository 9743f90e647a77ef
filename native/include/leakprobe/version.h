// leakprobe/version.h — the version of the native core, set by CMake.
//
//   std::cout << leakprobe::kVersion;  // "0.1.0"
//
// Thread-safety: constants only.
#pragma once

namespace leakprobe {

#ifndef LEAKPROBE_VERSION
#error "LEAKPROBE_VERSION must be defined by the build"
#endif

inline constexpr const char* kVersion = LEAKPROBE_VERSION;

}  // namespace leakprobe
