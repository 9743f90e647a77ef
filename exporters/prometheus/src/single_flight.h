// single_flight.h (private) — one render shared by every scrape that arrives
// while it is under way, so a storm of scrapers costs one snapshot and one
// serialisation per render, not per scrape.
//
//   SingleFlight<std::string> flight(std::chrono::seconds(10));
//   auto result = flight.Get([] { return Render(); });  // result.page
//
// Freshness: a caller joins only a render that is running when it arrives
// (it started at most one render's duration before), never a finished one:
// there is no cache, a caller that finds no render under way starts one.
// No wait is unbounded: a render that throws wakes its waiters with
// kFailed, Close() wakes them with kClosed, and a waiter gives up with
// kTimedOut after `max_wait` (a render stuck that long).
// Thread-safety: Get() and Close() may be called from any thread; pages are
// shared immutable values.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "leakprobe/runtime/mutex.h"

namespace leakprobe::prometheus_exporter {

template <typename Page>
class SingleFlight {
 public:
  enum class Outcome {
    kRendered,  // this caller rendered the page
    kJoined,    // a render under way when the caller arrived gave the page
    kFailed,    // the render this caller ran or joined threw
    kClosed,    // Close() was called: no page
    kTimedOut,  // the joined render took longer than max_wait
  };
  struct Result {
    Outcome outcome;
    std::shared_ptr<const Page> page;  // null unless kRendered or kJoined
  };

  explicit SingleFlight(std::chrono::steady_clock::duration max_wait)
      : max_wait_(max_wait) {}

  SingleFlight(const SingleFlight&) = delete;
  SingleFlight& operator=(const SingleFlight&) = delete;

  // The page of the render under way, or of a new one that `render` (a
  // callable returning Page) makes on this thread. Exceptions from render
  // are caught (kFailed); only std::bad_alloc before a render starts can
  // escape, with nothing shared yet.
  template <typename Render>
  Result Get(Render&& render) {
    std::shared_ptr<Flight> flight;
    {
      MutexLock lock(&mu_);
      if (closed_) return {Outcome::kClosed, nullptr};
      if (current_ != nullptr) return Join(current_);
      flight = std::make_shared<Flight>();
      current_ = flight;
      ++renders_;
    }
    // Whatever happens below, the waiters are woken: the Finisher publishes
    // the page (null if render threw, or if a forced unwind passes).
    Finisher finisher(this, flight);
    try {
      finisher.page = std::make_shared<const Page>(std::forward<Render>(render)());
    } catch (const std::exception&) {
      return {Outcome::kFailed, nullptr};
    }
    return {Outcome::kRendered, finisher.page};
  }

  // Wakes every waiter (kClosed) and refuses later callers; a render under
  // way runs to its end. Not async-signal-safe (takes the lock).
  void Close() {
    MutexLock lock(&mu_);
    closed_ = true;
    cv_.NotifyAll();
  }

  // Renders started, and callers that joined one (every outcome).
  std::uint64_t renders() const {
    MutexLock lock(&mu_);
    return renders_;
  }
  std::uint64_t joined() const {
    MutexLock lock(&mu_);
    return joined_;
  }
  // Callers waiting for a render now (for tests).
  int waiting() const {
    MutexLock lock(&mu_);
    return waiting_;
  }

 private:
  struct Flight {
    // Both written once, under SingleFlight::mu_, when the render ends.
    bool done = false;
    std::shared_ptr<const Page> page;
  };

  // Publishes the flight's page and wakes its waiters, on every way out of
  // the render (return, exception, forced unwind).
  struct Finisher {
    Finisher(SingleFlight* owner_flight, std::shared_ptr<Flight> started)
        : owner(owner_flight), flight(std::move(started)) {}
    Finisher(const Finisher&) = delete;
    Finisher& operator=(const Finisher&) = delete;
    ~Finisher() {
      MutexLock lock(&owner->mu_);
      flight->page = page;
      flight->done = true;
      owner->current_ = nullptr;
      owner->cv_.NotifyAll();
    }
    SingleFlight* const owner;
    const std::shared_ptr<Flight> flight;
    std::shared_ptr<const Page> page;
  };

  Result Join(std::shared_ptr<Flight> flight) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++joined_;
    ++waiting_;
    const auto deadline = std::chrono::steady_clock::now() + max_wait_;
    while (!flight->done && !closed_) {
      if (!cv_.WaitUntil(&mu_, deadline)) break;  // the deadline passed
    }
    --waiting_;
    if (flight->done) {
      return {flight->page ? Outcome::kJoined : Outcome::kFailed, flight->page};
    }
    return {closed_ ? Outcome::kClosed : Outcome::kTimedOut, nullptr};
  }

  const std::chrono::steady_clock::duration max_wait_;
  mutable Mutex mu_;
  CondVar cv_;  // signalled under mu_ when a render ends or at Close()
  std::shared_ptr<Flight> current_ ABSL_GUARDED_BY(mu_);  // the render under way
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::uint64_t renders_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t joined_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace leakprobe::prometheus_exporter
