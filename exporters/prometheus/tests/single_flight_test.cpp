#include "../src/single_flight.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace leakprobe::prometheus_exporter {
namespace {

using Flight = SingleFlight<std::string>;
using Outcome = Flight::Outcome;
using std::chrono::milliseconds;

// A gate the render waits at until the test opens it.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Pass() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Polls `done` every millisecond for up to 10 s; false if it never held.
template <typename Predicate>
bool Eventually(Predicate done) {
  for (int i = 0; i < 10000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return done();
}

// One caller starts a render that waits at `gate`; `joiners` more callers
// arrive while it waits. Returns once all of them wait, with their results
// to come in `results` (index 0: the renderer).
struct Storm {
  Storm(Flight* flight, int joiners, std::function<std::string()> render)
      : results(static_cast<std::size_t>(joiners) + 1) {
    threads.emplace_back([this, flight, render] {
      results[0] = flight->Get([&] {
        rendering.store(true);
        return render();
      });
    });
    EXPECT_TRUE(Eventually([this] { return rendering.load(); }));
    for (int i = 1; i <= joiners; ++i) {
      threads.emplace_back([this, flight, i] {
        results[static_cast<std::size_t>(i)] =
            flight->Get([] { return std::string("rendered by a joiner"); });
      });
    }
    EXPECT_TRUE(Eventually([&] { return flight->waiting() == joiners; }));
  }
  void Join() {
    for (std::thread& t : threads) t.join();
  }
  std::vector<Flight::Result> results;
  std::vector<std::thread> threads;
  std::atomic<bool> rendering{false};
};

TEST(SingleFlightTest, CallersArrivingDuringARenderShareItsPage) {
  Flight flight(std::chrono::seconds(30));
  Gate gate;
  std::atomic<int> renders{0};
  Storm storm(&flight, 7, [&] {
    gate.Pass();
    ++renders;
    return std::string("page 1");
  });
  gate.Open();
  storm.Join();
  EXPECT_EQ(renders.load(), 1);
  EXPECT_EQ(flight.renders(), 1u);
  EXPECT_EQ(flight.joined(), 7u);
  EXPECT_EQ(storm.results[0].outcome, Outcome::kRendered);
  for (std::size_t i = 1; i < storm.results.size(); ++i) {
    EXPECT_EQ(storm.results[i].outcome, Outcome::kJoined) << i;
    // The very same immutable page, not a copy.
    EXPECT_EQ(storm.results[i].page, storm.results[0].page) << i;
  }
  EXPECT_EQ(*storm.results[0].page, "page 1");
}

TEST(SingleFlightTest, AFinishedRenderIsNeverServedAgain) {
  Flight flight(std::chrono::seconds(30));
  int renders = 0;
  for (int i = 1; i <= 3; ++i) {
    const Flight::Result result = flight.Get([&] { return std::to_string(++renders); });
    EXPECT_EQ(result.outcome, Outcome::kRendered);
    EXPECT_EQ(*result.page, std::to_string(i));
  }
  EXPECT_EQ(flight.renders(), 3u);
  EXPECT_EQ(flight.joined(), 0u);
}

TEST(SingleFlightTest, ARenderThatThrowsFailsEveryWaiterAndTheNextCallRendersAgain) {
  Flight flight(std::chrono::seconds(30));
  Gate gate;
  Storm storm(&flight, 5, [&]() -> std::string {
    gate.Pass();
    throw std::runtime_error("render failed");
  });
  gate.Open();
  storm.Join();
  for (std::size_t i = 0; i < storm.results.size(); ++i) {
    EXPECT_EQ(storm.results[i].outcome, Outcome::kFailed) << i;
    EXPECT_EQ(storm.results[i].page, nullptr) << i;
  }
  EXPECT_EQ(flight.renders(), 1u);
  const Flight::Result next = flight.Get([] { return std::string("page 2"); });
  EXPECT_EQ(next.outcome, Outcome::kRendered);
  EXPECT_EQ(*next.page, "page 2");
  EXPECT_EQ(flight.renders(), 2u);
}

TEST(SingleFlightTest, CloseWakesTheWaitersAndRefusesLaterCallers) {
  Flight flight(std::chrono::seconds(30));
  Gate gate;
  Storm storm(&flight, 3, [&] {
    gate.Pass();
    return std::string("page");
  });
  flight.Close();
  // The waiters return while the render is still held at the gate.
  ASSERT_TRUE(Eventually([&] { return flight.waiting() == 0; }));
  for (std::size_t i = 1; i < storm.threads.size(); ++i) storm.threads[i].join();
  for (std::size_t i = 1; i < storm.results.size(); ++i) {
    EXPECT_EQ(storm.results[i].outcome, Outcome::kClosed) << i;
  }
  EXPECT_EQ(flight.Get([] { return std::string("late"); }).outcome, Outcome::kClosed);
  gate.Open();
  storm.threads[0].join();
  EXPECT_EQ(storm.results[0].outcome, Outcome::kRendered);  // ran to its end
  EXPECT_EQ(flight.renders(), 1u);
}

TEST(SingleFlightTest, AWaiterGivesUpOnARenderStuckPastTheLimit) {
  Flight flight(milliseconds(100));
  Gate gate;
  Storm storm(&flight, 2, [&] {
    gate.Pass();
    return std::string("late page");
  });
  for (std::size_t i = 1; i < storm.threads.size(); ++i) storm.threads[i].join();
  for (std::size_t i = 1; i < storm.results.size(); ++i) {
    EXPECT_EQ(storm.results[i].outcome, Outcome::kTimedOut) << i;
  }
  gate.Open();
  storm.threads[0].join();
  EXPECT_EQ(storm.results[0].outcome, Outcome::kRendered);
  // The stuck render ended: the next caller renders afresh.
  EXPECT_EQ(flight.Get([] { return std::string("fresh"); }).outcome, Outcome::kRendered);
}

}  // namespace
}  // namespace leakprobe::prometheus_exporter
