// leakprobe/runtime/error.h — the error hierarchy of the cold path.
//
//   try { StartSomething(); } catch (const leakprobe::BindError& e) { ... }
//
// Hooks never throw; only cold-path set-up (configuration, binding the
// exporter) does. The Python bindings map Error to leakprobe._native.Error
// and BindError to leakprobe._native.BindError.
// Thread-safety: plain value types.
#pragma once

#include <stdexcept>
#include <string>

namespace leakprobe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The exporter could not listen on the requested address (in use, not an
// address of this host, permission denied).
class BindError : public Error {
 public:
  using Error::Error;
};

}  // namespace leakprobe
