#include "leakprobe/runtime/log.h"

#include <array>
#include <atomic>
#include <memory>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "leakprobe/runtime/fork.h"
#include "spdlog/logger.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace leakprobe {
namespace {

// The current logger. Replaced only after fork; old loggers are leaked on
// purpose (their mutex may be held by a thread that does not exist).
std::atomic<spdlog::logger*> g_logger{nullptr};
// The level survives logger replacement.
std::atomic<int> g_level{spdlog::level::info};

spdlog::logger* MakeLogger() {
  RegisterForkHandlers(ForkStage::kLog, {nullptr, nullptr, &ResetLogAfterFork});
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto* logger = new spdlog::logger("leakprobe", std::move(sink));
  logger->set_pattern("[leakprobe] [%l] %v");
  logger->set_level(static_cast<spdlog::level::level_enum>(g_level.load()));
  logger->flush_on(spdlog::level::trace);
  return logger;
}

spdlog::logger* Logger() {
  spdlog::logger* logger = g_logger.load(std::memory_order_acquire);
  if (logger != nullptr) return logger;
  spdlog::logger* fresh = MakeLogger();
  if (g_logger.compare_exchange_strong(logger, fresh)) return fresh;
  delete fresh;  // lost the race; `logger` now holds the winner
  return logger;
}

}  // namespace

std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view name) {
  static constexpr std::array<std::pair<std::string_view, spdlog::level::level_enum>, 7>
      kLevels = {{{"trace", spdlog::level::trace},
                  {"debug", spdlog::level::debug},
                  {"info", spdlog::level::info},
                  {"warning", spdlog::level::warn},
                  {"error", spdlog::level::err},
                  {"critical", spdlog::level::critical},
                  {"off", spdlog::level::off}}};
  for (const auto& [text, level] : kLevels) {
    if (text == name) return level;
  }
  return std::nullopt;
}

bool SetLogLevel(std::string_view name) {
  const auto level = ParseLogLevel(name);
  if (!level) return false;
  g_level.store(*level);
  Logger()->set_level(*level);
  return true;
}

void Log(spdlog::level::level_enum level, std::string_view message) {
  Logger()->log(level, "{}", message);
}

void ResetLogAfterFork() noexcept {
  // Leak the old logger (on purpose: see the header); allocate the new one
  // lazily on first use.
  spdlog::logger* old = g_logger.exchange(nullptr, std::memory_order_acq_rel);
#if defined(__SANITIZE_ADDRESS__)
  if (old != nullptr) __lsan_ignore_object(old);
#else
  (void)old;
#endif
}

}  // namespace leakprobe
