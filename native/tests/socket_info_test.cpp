// Socket details and TCP states from real loopback sockets.
#include "leakprobe/fd/socket_info.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "leakprobe/fd/fd_summary.h"
#include "leakprobe/fd/fd_table.h"

namespace leakprobe {
namespace {

constexpr int kEstablished = 1;
constexpr int kCloseWait = 8;
constexpr int kListen = 10;

// Polls `done` until it holds or 10 s have passed.
template <typename Fn>
bool Eventually(Fn done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

struct TcpPair {
  int listener = -1, client = -1, server = -1;
  std::string listen_address;
  ~TcpPair() {
    for (int fd : {listener, client, server}) {
      if (fd >= 0) close(fd);
    }
  }
};

// A listener on the loopback address of `family`, a client connected to it
// and the accepted end. Fails, or skips the test (IPv6 only, when the host
// has none): call it as ASSERT_NO_FATAL_FAILURE(MakeTcpPair(...)), then
// return if IsSkipped().
void MakeTcpPair(int family, TcpPair* p) {
  p->listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (p->listener < 0 && family == AF_INET6 && errno == EAFNOSUPPORT) {
    GTEST_SKIP() << "IPv6 is not available in this kernel";
  }
  ASSERT_GE(p->listener, 0) << std::strerror(errno);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *in;
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_addr = in6addr_loopback;
    len = sizeof *in6;
  }
  if (bind(p->listener, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (family == AF_INET6 && errno == EADDRNOTAVAIL) {
      GTEST_SKIP() << "this host has no ::1";
    }
    FAIL() << "bind to loopback: " << std::strerror(errno);
  }
  ASSERT_EQ(listen(p->listener, 4), 0);
  ASSERT_EQ(getsockname(p->listener, reinterpret_cast<sockaddr*>(&ss), &len), 0);
  p->client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(p->client, 0) << std::strerror(errno);
  ASSERT_EQ(connect(p->client, reinterpret_cast<sockaddr*>(&ss), len), 0);
  p->server = accept4(p->listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(p->server, 0);
  const int port =
      ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                              : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  p->listen_address =
      (family == AF_INET ? std::string("127.0.0.1:") : std::string("[::1]:")) +
      std::to_string(port);
}

TEST(SocketInfoTest, TcpStatesAndAddressesOfAConnectedPair) {
  TcpPair p;
  ASSERT_NO_FATAL_FAILURE(MakeTcpPair(AF_INET, &p));
  EXPECT_EQ(TcpStateOf(p.listener), kListen);
  EXPECT_EQ(TcpStateOf(p.client), kEstablished);
  EXPECT_EQ(TcpStateOf(p.server), kEstablished);

  const SocketDetails listener = ResolveSocket(p.listener, FdKind::kTcp);
  EXPECT_EQ(listener.local, p.listen_address);
  EXPECT_EQ(listener.peer, std::nullopt);
  EXPECT_EQ(listener.tcp_state, "LISTEN");
  const SocketDetails client = ResolveSocket(p.client, FdKind::kTcp);
  const SocketDetails server = ResolveSocket(p.server, FdKind::kTcp);
  EXPECT_EQ(client.peer, p.listen_address);
  EXPECT_EQ(server.local, p.listen_address);
  ASSERT_TRUE(client.local.has_value());
  EXPECT_EQ(server.peer, client.local);
  EXPECT_EQ(client.tcp_state, "ESTABLISHED");

  // The peer closes: our end waits for us to close it too.
  close(p.server);
  p.server = -1;
  EXPECT_TRUE(Eventually([&] { return TcpStateOf(p.client) == kCloseWait; }))
      << TcpStateName(TcpStateOf(p.client));
  EXPECT_EQ(ResolveSocket(p.client, FdKind::kTcp).tcp_state, "CLOSE_WAIT");
}

TEST(SocketInfoTest, Tcp6AddressesAreBracketed) {
  TcpPair p;
  ASSERT_NO_FATAL_FAILURE(MakeTcpPair(AF_INET6, &p));
  if (IsSkipped()) return;  // the helper skipped, with its reason
  const SocketDetails client = ResolveSocket(p.client, FdKind::kTcp6);
  EXPECT_EQ(client.peer, p.listen_address);
  EXPECT_EQ(client.tcp_state, "ESTABLISHED");
  EXPECT_EQ(client.local.value_or("").rfind("[::1]:", 0), 0u);
}

TEST(SocketInfoTest, UdpHasAddressesButNoState) {
  const int a = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(b, reinterpret_cast<sockaddr*>(&in), sizeof in), 0);
  socklen_t len = sizeof in;
  ASSERT_EQ(getsockname(b, reinterpret_cast<sockaddr*>(&in), &len), 0);
  const std::string b_address = "127.0.0.1:" + std::to_string(ntohs(in.sin_port));
  EXPECT_EQ(ResolveSocket(a, FdKind::kUdp).peer, std::nullopt);  // not connected
  ASSERT_EQ(connect(a, reinterpret_cast<sockaddr*>(&in), sizeof in), 0);
  const SocketDetails d = ResolveSocket(a, FdKind::kUdp);
  EXPECT_EQ(d.peer, b_address);
  EXPECT_TRUE(d.local.has_value());
  EXPECT_EQ(d.tcp_state, std::nullopt);
  EXPECT_EQ(TcpStateOf(a), 0);
  close(a);
  close(b);
}

TEST(SocketInfoTest, UnixSocketsGiveTheirPaths) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  const SocketDetails unnamed = ResolveSocket(pair[0], FdKind::kUnix);
  EXPECT_EQ(unnamed.local, std::nullopt);
  EXPECT_EQ(unnamed.peer, std::nullopt);
  EXPECT_EQ(unnamed.tcp_state, std::nullopt);
  close(pair[0]);
  close(pair[1]);

  const std::string path =
      ::testing::TempDir() + "leakprobe_sock_" + std::to_string(getpid());
  const int server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof un.sun_path);
  std::memcpy(un.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(bind(server, reinterpret_cast<sockaddr*>(&un), sizeof un), 0);
  ASSERT_EQ(listen(server, 1), 0);
  const int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&un), sizeof un), 0);
  EXPECT_EQ(ResolveSocket(server, FdKind::kUnix).local, path);
  EXPECT_EQ(ResolveSocket(client, FdKind::kUnix).peer, path);
  close(client);
  close(server);
  unlink(path.c_str());

  const int abstract = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un an{};
  an.sun_family = AF_UNIX;
  const char name[] = "leakprobe-abstract-test";
  std::memcpy(an.sun_path + 1, name, sizeof name - 1);
  ASSERT_EQ(bind(abstract, reinterpret_cast<sockaddr*>(&an),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + sizeof name)),
            0);
  EXPECT_EQ(ResolveSocket(abstract, FdKind::kUnix).local, std::string("@") + name);
  close(abstract);
}

TEST(SocketInfoTest, StateNamesAreTheKernels) {
  const char* expected[] = {"ESTABLISHED", "SYN_SENT",  "SYN_RECV", "FIN_WAIT1",
                            "FIN_WAIT2",   "TIME_WAIT", "CLOSE",    "CLOSE_WAIT",
                            "LAST_ACK",    "LISTEN",    "CLOSING"};
  for (int s = 1; s <= kTcpStateCount; ++s)
    EXPECT_STREQ(TcpStateName(s), expected[s - 1]);
  EXPECT_EQ(TcpStateName(0), nullptr);
  EXPECT_EQ(TcpStateName(kTcpStateCount + 1), nullptr);
}

TEST(SocketInfoTest, SummaryCountsTcpRecordsByStateAfterARefresh) {
  TcpPair p;
  ASSERT_NO_FATAL_FAILURE(MakeTcpPair(AF_INET, &p));
  FdTable table;
  table.RecordOpen(p.listener, FdKind::kTcp, kNoStackId);
  table.RecordOpen(p.client, FdKind::kTcp, kNoStackId);
  table.RecordOpen(p.server, FdKind::kTcp, kNoStackId);
  RefreshTcpStates(table);
  FdSummary s = SummarizeFds(table);
  EXPECT_EQ(s.tcp_states[kListen], 1u);
  EXPECT_EQ(s.tcp_states[kEstablished], 2u);
  EXPECT_EQ(s.open[static_cast<int>(FdKind::kTcp)], 3u);
  // Served from the refresh: a state change shows after the next one.
  close(p.server);
  table.RetireBeforeClose(p.server);
  p.server = -1;
  ASSERT_TRUE(Eventually([&] { return TcpStateOf(p.client) == kCloseWait; }));
  EXPECT_EQ(SummarizeFds(table).tcp_states[kEstablished], 2u);
  RefreshTcpStates(table);
  s = SummarizeFds(table);
  EXPECT_EQ(s.tcp_states[kEstablished], 0u);
  EXPECT_EQ(s.tcp_states[kCloseWait], 1u);
  EXPECT_EQ(s.tcp_states[kListen], 1u);
  ClearTcpStates();
}

}  // namespace
}  // namespace leakprobe
