#include "leakprobe/prometheus/peers.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "leakprobe/prometheus/collector.h"
#include "leakprobe/snapshot.h"

namespace leakprobe::prometheus_exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Gauge(const std::string& name,
                   std::vector<std::pair<std::string, double>> rows) {
  MetricFamily family;
  family.name = name;
  family.help = "help of " + name;
  family.type = MetricType::Gauge;
  for (const auto& [label, value] : rows) {
    ClientMetric metric;
    metric.label = {{"key", label}};
    metric.gauge.value = value;
    family.metric.push_back(metric);
  }
  return family;
}

MetricFamily Counter(const std::string& name, double value) {
  MetricFamily family;
  family.name = name;
  family.help = "a counter";
  family.type = MetricType::Counter;
  ClientMetric metric;
  metric.counter.value = value;
  family.metric.push_back(metric);
  return family;
}

// A group port of its own per test run, so concurrent test binaries (ctest
// -j2, the ASan build) never see each other's peers.
int TestGroupPort() { return 20000 + static_cast<int>(getpid() % 40000); }

TEST(PeersCodec, RoundTripKeepsNamesHelpTypesLabelsAndValues) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<MetricFamily> families = {
      Gauge("g", {{"a \"quoted\"\nline", 1.5}, {"caf\xc3\xa9", -inf}}),
      Counter("c_total", 42)};
  std::vector<MetricFamily> decoded;
  ASSERT_TRUE(DecodeFamilies(EncodeFamilies(families), &decoded));
  ASSERT_EQ(decoded.size(), 2u);
  EXPECT_EQ(decoded[0].name, "g");
  EXPECT_EQ(decoded[0].help, "help of g");
  EXPECT_EQ(decoded[0].type, MetricType::Gauge);
  ASSERT_EQ(decoded[0].metric.size(), 2u);
  EXPECT_EQ(decoded[0].metric[0].label[0].value, "a \"quoted\"\nline");
  EXPECT_EQ(decoded[0].metric[0].gauge.value, 1.5);
  EXPECT_EQ(decoded[0].metric[1].label[0].value, "caf\xc3\xa9");
  EXPECT_EQ(decoded[0].metric[1].gauge.value, -inf);
  EXPECT_EQ(decoded[1].type, MetricType::Counter);
  EXPECT_EQ(decoded[1].metric[0].counter.value, 42);
}

TEST(PeersCodec, EveryTruncationAndTrailingBytesAreRejected) {
  const std::string data =
      EncodeFamilies({Gauge("g", {{"x", 1}, {"y", 2}}), Counter("c", 3)});
  for (std::size_t n = 0; n < data.size(); ++n) {
    std::vector<MetricFamily> out;
    EXPECT_FALSE(DecodeFamilies(std::string_view(data).substr(0, n), &out)) << n;
    EXPECT_TRUE(out.empty());
  }
  std::vector<MetricFamily> out;
  EXPECT_FALSE(DecodeFamilies(data + "x", &out));
  EXPECT_FALSE(DecodeFamilies("HTTP/1.1 200 OK\r\n", &out));
  // A count far beyond what the bytes could hold is refused before any
  // allocation of that size.
  std::string huge = "LPF1";
  const std::uint32_t count = 0xffffffffU;
  huge.append(reinterpret_cast<const char*>(&count), sizeof count);
  EXPECT_FALSE(DecodeFamilies(huge, &out));
}

TEST(PeersMerge, AppendsMetricsOfKnownFamiliesAddsNewOnesDropsTypeConflicts) {
  std::vector<MetricFamily> into = {Gauge("g", {{"a", 1}}), Counter("c", 1)};
  MetricFamily conflicting = Gauge("c", {{"z", 9}});  // a gauge named like our counter
  const int conflicts = MergeFamilies(
      &into, {Gauge("g", {{"b", 2}}), Gauge("new", {{"n", 3}}), conflicting});
  EXPECT_EQ(conflicts, 1);
  ASSERT_EQ(into.size(), 3u);
  EXPECT_EQ(into[0].metric.size(), 2u);
  EXPECT_EQ(into[0].metric[1].label[0].value, "b");
  EXPECT_EQ(into[1].metric.size(), 1u);  // the counter kept only its own
  EXPECT_EQ(into[2].name, "new");
}

TEST(PeersLabels, EveryMetricGetsPidAndRole) {
  std::vector<MetricFamily> families = {Gauge("g", {{"a", 1}, {"b", 2}}),
                                        Counter("c", 1)};
  AddProcessLabels(&families, 1234, "gunicorn-worker");
  for (const MetricFamily& family : families) {
    for (const ClientMetric& metric : family.metric) {
      const auto& labels = metric.label;
      ASSERT_GE(labels.size(), 2u);
      EXPECT_EQ(labels[labels.size() - 2].name, "pid");
      EXPECT_EQ(labels[labels.size() - 2].value, "1234");
      EXPECT_EQ(labels.back().name, "role");
      EXPECT_EQ(labels.back().value, "gunicorn-worker");
    }
  }
}

TEST(PeersDiscovery, ParsesListeningNamesOfThisUserAndPortOnly) {
  const std::string text =
      "Num       RefCount Protocol Flags    Type St Inode Path\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 11 @leakprobe-0-9464-120\n"
      "0000000000000000: 00000003 00000000 00000000 0001 03 12 @leakprobe-0-9464-120\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 13 @leakprobe-0-9464-7\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 14 @leakprobe-0-94640-8\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 15 @leakprobe-1000-9464-9\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 16 @leakprobe-0-9464-12x\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 17 /run/leakprobe-0-9464-10\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 18\n";
  EXPECT_EQ(ParsePeerPids(text, 0, 9464), (std::vector<pid_t>{7, 120}));
  EXPECT_EQ(ParsePeerPids(text, 1000, 9464), (std::vector<pid_t>{9}));
  EXPECT_TRUE(ParsePeerPids("", 0, 9464).empty());
}

// A child process serving `render` as a peer of `port` until killed; the
// parent returns once the child's socket is listed.
pid_t StartPeerChild(int port, std::function<std::string()> render) {
  int ready[2];
  if (pipe(ready) != 0) return -1;
  const pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    PeerServer server(port, std::move(render));
    (void)write(ready[1], "x", 1);
    for (;;) pause();
  }
  close(ready[1]);
  char byte = 0;
  const bool ok = read(ready[0], &byte, 1) == 1;
  close(ready[0]);
  return ok ? child : -1;
}

void Kill(pid_t child) {
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
}

TEST(PeersFetch, CollectsEveryPeerAndForgetsOneKilled) {
  const int port = TestGroupPort();
  const pid_t a = StartPeerChild(port, [] {
    std::vector<MetricFamily> f = {Gauge("g", {{"a", 1}})};
    AddProcessLabels(&f, getpid(), "worker");
    return EncodeFamilies(f);
  });
  const pid_t b = StartPeerChild(port, [] {
    std::vector<MetricFamily> f = {Gauge("g", {{"b", 2}}), Counter("only_b_total", 5)};
    AddProcessLabels(&f, getpid(), "worker");
    return EncodeFamilies(f);
  });
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  PeerFetch fetched = FetchPeers(port, getpid(), std::chrono::seconds(5));
  EXPECT_EQ(fetched.listed, 2);
  EXPECT_EQ(fetched.collected, 2);
  EXPECT_EQ(fetched.timed_out + fetched.malformed + fetched.connect_failed, 0);
  ASSERT_EQ(fetched.families.size(), 2u);
  EXPECT_EQ(fetched.families[0].metric.size(), 2u);  // g from both
  std::vector<std::string> pids;
  for (const ClientMetric& m : fetched.families[0].metric)
    pids.push_back(m.label[1].value);
  std::sort(pids.begin(), pids.end());
  std::vector<std::string> expected = {std::to_string(a), std::to_string(b)};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(pids, expected);

  Kill(a);  // the kernel removes its name with the process
  fetched = FetchPeers(port, getpid(), std::chrono::seconds(5));
  EXPECT_EQ(fetched.listed, 1);
  EXPECT_EQ(fetched.collected, 1);
  Kill(b);
  fetched = FetchPeers(port, getpid(), std::chrono::seconds(5));
  EXPECT_EQ(fetched.listed, 0);
  EXPECT_TRUE(fetched.families.empty());
}

TEST(PeersFetch, ASilentPeerCostsTheDeadlineAndAGarbledOneIsDropped) {
  const int port = TestGroupPort() + 1;
  // Listens under a peer's name but never accepts: its connection waits.
  const int silent = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(silent, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string name = PeerSocketName(getuid(), port, 1);  // "pid 1": not us
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  ASSERT_EQ(
      bind(silent, reinterpret_cast<sockaddr*>(&addr),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())),
      0);
  ASSERT_EQ(listen(silent, 4), 0);
  const pid_t garbled =
      StartPeerChild(port, [] { return std::string("not an encoding"); });
  const pid_t good =
      StartPeerChild(port, [] { return EncodeFamilies({Counter("c", 1)}); });
  ASSERT_GT(garbled, 0);
  ASSERT_GT(good, 0);

  const auto start = std::chrono::steady_clock::now();
  const PeerFetch fetched = FetchPeers(port, getpid(), std::chrono::milliseconds(300));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(fetched.listed, 3);
  EXPECT_EQ(fetched.collected, 1);
  EXPECT_EQ(fetched.timed_out, 1);
  EXPECT_EQ(fetched.malformed, 1);
  ASSERT_EQ(fetched.families.size(), 1u);
  EXPECT_EQ(fetched.families[0].name, "c");
  EXPECT_GE(elapsed, std::chrono::milliseconds(300));
  EXPECT_LT(elapsed, std::chrono::seconds(3));
  close(silent);
  Kill(garbled);
  Kill(good);
}

TEST(PeersFetch, ANameSquattedByAnotherUserIsNeverRead) {
  if (getuid() != 0) GTEST_SKIP() << "needs root, to run the squatter as another user";
  const int port = TestGroupPort() + 3;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t squatter = fork();
  if (squatter == 0) {
    // Another user binds a name of root's group (abstract names have no
    // permissions) and would answer with a valid encoding.
    close(ready[0]);
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(1);
    PeerServer server(port,
                      [] { return EncodeFamilies({Counter("injected_total", 1)}); });
    // PeerServer named itself with uid 65534: bind root's name by hand.
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string name = PeerSocketName(0, port, getpid());
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr),
             static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) !=
            0 ||
        listen(fd, 4) != 0) {
      _exit(2);
    }
    (void)write(ready[1], "x", 1);
    for (;;) {
      const int conn = accept(fd, nullptr, nullptr);
      const std::string data = EncodeFamilies({Counter("injected_total", 1)});
      (void)write(conn, data.data(), data.size());
      close(conn);
    }
  }
  close(ready[1]);
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  const PeerFetch fetched = FetchPeers(port, getpid(), std::chrono::seconds(2));
  EXPECT_EQ(fetched.listed, 1);
  EXPECT_EQ(fetched.foreign, 1);
  EXPECT_EQ(fetched.collected, 0);
  EXPECT_TRUE(fetched.families.empty());
  Kill(squatter);
}

TEST(PeersCollector, AGroupCollectorServesItsOwnAndItsPeersSeriesLabelledByPid) {
  const int port = TestGroupPort() + 2;
  auto source = [] {
    Snapshot s;
    s.process.ok = true;
    s.process.threads = 3;
    return s;
  };
  SnapshotCollector collector(source);
  const pid_t peer = StartPeerChild(port, [&collector] {
    SetProcessRole("celery-child");
    return EncodeFamilies(collector.CollectOwn());
  });
  ASSERT_GT(peer, 0);
  SetProcessRole("celery-main");
  collector.JoinGroup(port, std::chrono::seconds(5));
  const std::vector<MetricFamily> families = collector.Collect();
  SetProcessRole("main");

  std::vector<std::string> threads_rows;
  double processes = -1;
  for (const MetricFamily& family : families) {
    if (family.name == "process_threads") {
      for (const ClientMetric& m : family.metric) {
        threads_rows.push_back(absl::StrCat(m.label[0].value, "/", m.label[1].value));
      }
    }
    if (family.name == "leakprobe_group_processes")
      processes = family.metric[0].gauge.value;
  }
  std::sort(threads_rows.begin(), threads_rows.end());
  std::vector<std::string> expected = {absl::StrCat(getpid(), "/celery-main"),
                                       absl::StrCat(peer, "/celery-child")};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(threads_rows, expected);
  EXPECT_EQ(processes, 2);
  Kill(peer);
}

}  // namespace
}  // namespace leakprobe::prometheus_exporter
