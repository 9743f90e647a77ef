// leakprobe/fd/socket_info.h — details of this process's open sockets, resolved
// on the cold path from the fd itself: local and peer address (tcp, tcp6,
// udp; the bound path for unix sockets) and the TCP state.
//
//   SocketDetails d = ResolveSocket(fd, FdKind::kTcp);
//   // d.local "127.0.0.1:8080", d.peer "127.0.0.1:51234", d.tcp_state "ESTABLISHED"
//
// Per fd: getsockname, getpeername and, for TCP, getsockopt(TCP_INFO) for
// the state. That costs O(our sockets), where a sock_diag netlink dump or
// /proc/net/tcp{,6} costs O(every socket in the network namespace);
// docs/fd-hooks.md has the measurements behind the choice. Never called from
// a hook.
//
// Thread-safety: stateless; any thread. An fd closed or reused concurrently
// gives empty or another socket's details, never an error.
#pragma once

#include <optional>
#include <string>

#include "leakprobe/fd/fd_kind.h"

namespace leakprobe {

struct SocketDetails {
  // "127.0.0.1:8080", "[::1]:443", a unix path ("@name" if abstract) as
  // valid UTF-8: bytes that are not are written "\xNN" (leakprobe/utf8.h).
  std::optional<std::string> local;
  std::optional<std::string> peer;       // when connected
  std::optional<std::string> tcp_state;  // tcp and tcp6 only
};

// Details of socket `fd` of kind `kind` (other kinds give nothing).
SocketDetails ResolveSocket(int fd, FdKind kind);

// The TCP state (1..kTcpStateCount) of socket `fd`, or 0 if it is not a
// TCP socket or is gone.
int TcpStateOf(int fd) noexcept;

}  // namespace leakprobe
