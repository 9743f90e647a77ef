// The fd vocabulary (see leakprobe/fd/fd_kind.h).
#include "leakprobe/fd/fd_kind.h"

#include <netinet/in.h>
#include <sys/socket.h>

namespace leakprobe {
namespace {

constexpr const char* kTcpStateNames[kTcpStateCount + 1] = {
    nullptr,     "ESTABLISHED", "SYN_SENT",   "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
    "TIME_WAIT", "CLOSE",       "CLOSE_WAIT", "LAST_ACK", "LISTEN",    "CLOSING"};

}  // namespace

const char* TcpStateName(int state) noexcept {
  return state >= 1 && state <= kTcpStateCount ? kTcpStateNames[state] : nullptr;
}

const char* FdKindName(FdKind kind) noexcept {
  switch (kind) {
    case FdKind::kFile:
      return "file";
    case FdKind::kTcp:
      return "tcp";
    case FdKind::kTcp6:
      return "tcp6";
    case FdKind::kUdp:
      return "udp";
    case FdKind::kUnix:
      return "unix";
    case FdKind::kPipe:
      return "pipe";
    case FdKind::kEventfd:
      return "eventfd";
    case FdKind::kEpoll:
      return "epoll";
    case FdKind::kTimerfd:
      return "timerfd";
    case FdKind::kSignalfd:
      return "signalfd";
    case FdKind::kInotify:
      return "inotify";
    case FdKind::kMemfd:
      return "memfd";
    case FdKind::kOther:
      break;
  }
  return "other";
}

FdKind SocketKind(int domain, int type, int protocol) noexcept {
  const int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (domain == AF_UNIX) return FdKind::kUnix;
  if (domain != AF_INET && domain != AF_INET6) return FdKind::kOther;
  if (base == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP)) {
    return domain == AF_INET ? FdKind::kTcp : FdKind::kTcp6;
  }
  if (base == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP)) {
    return FdKind::kUdp;
  }
  return FdKind::kOther;
}

}  // namespace leakprobe
