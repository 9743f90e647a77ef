// leakprobe/fd/fd_kind.h — the bounded vocabulary of fd labels: what kind of
// file an fd is, and the TCP states. Plain values, shared by the hooks, the
// snapshot and the exporter.
//
//   FdKind k = SocketKind(AF_INET, SOCK_STREAM, 0);   // FdKind::kTcp
//   const char* label = FdKindName(k);               // "tcp"
//
// Thread-safety: stateless functions; any thread, async-signal-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace leakprobe {

// The creating call's idea of what an fd is. Sockets are classified from
// socket()'s arguments; dup'ed and accepted fds inherit their source's kind.
enum class FdKind : std::uint8_t {
  kFile,  // open*, creat, fopen*, opendir
  kTcp,
  kTcp6,
  kUdp,  // AF_INET and AF_INET6 datagram sockets
  kUnix,
  kPipe,
  kEventfd,
  kEpoll,
  kTimerfd,
  kSignalfd,
  kInotify,
  kMemfd,
  kOther,  // other sockets, fds dup'ed from an fd we never saw created
};
inline constexpr std::size_t kFdKindCount = static_cast<std::size_t>(FdKind::kOther) + 1;

// "file", "tcp", ...: bounded, usable as a metric label.
const char* FdKindName(FdKind kind) noexcept;

// The kind of a socket made by socket(domain, type, protocol) (type may
// carry SOCK_NONBLOCK / SOCK_CLOEXEC).
FdKind SocketKind(int domain, int type, int protocol) noexcept;

// TCP states as the kernel numbers them (include/net/tcp_states.h: 1..11)
// and names them (ss, /proc/net/tcp documentation).
inline constexpr int kTcpStateCount = 11;
// "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
// "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING" for
// 1..11; nullptr otherwise.
const char* TcpStateName(int state) noexcept;
// Open TCP sockets (tcp and tcp6) per state; index 0 counts sockets whose
// state could not be read.
using TcpStateCounts = std::array<std::uint64_t, kTcpStateCount + 1>;

}  // namespace leakprobe
