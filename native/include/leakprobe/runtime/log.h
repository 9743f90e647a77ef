// leakprobe/runtime/log.h — leakprobe's own log: one line per event on stderr,
// "[leakprobe] [warning] ...", through spdlog.
//
//   leakprobe::Log(spdlog::level::warn, "LEAKPROBE_PORT=abc is not a number");
//   leakprobe::SetLogLevel("debug");
//
// Never called from a hook (hooks do not log). The logger is created once and
// never destroyed, so threads that log during exit stay safe.
// Thread-safety: all functions may be called from any thread. ResetAfterFork
// is for the child side of fork only: it replaces the logger, whose lock a
// vanished parent thread may have held, by a fresh one.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "spdlog/common.h"

namespace leakprobe {

// Parses "trace", "debug", "info", "warning", "error", "critical", "off".
std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view name);

// Returns false, changing nothing, for an unknown name.
bool SetLogLevel(std::string_view name);

void Log(spdlog::level::level_enum level, std::string_view message);

void ResetLogAfterFork() noexcept;

}  // namespace leakprobe
