// Socket details from the fd (see leakprobe/fd/socket_info.h).
#include "leakprobe/fd/socket_info.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <string_view>

#include "leakprobe/runtime/utf8.h"

namespace leakprobe {
namespace {

// "1.2.3.4:80", "[::1]:443", a unix path ("@name" when abstract); nullopt for
// an unbound or unnamed address.
std::optional<std::string> FormatAddress(const sockaddr_storage& ss, socklen_t len) {
  char host[INET6_ADDRSTRLEN];
  switch (ss.ss_family) {
    case AF_INET: {
      sockaddr_in in{};
      std::memcpy(&in, &ss, sizeof in);
      if (inet_ntop(AF_INET, &in.sin_addr, host, sizeof host) == nullptr) break;
      return std::string(host) + ":" + std::to_string(ntohs(in.sin_port));
    }
    case AF_INET6: {
      sockaddr_in6 in6{};
      std::memcpy(&in6, &ss, sizeof in6);
      if (inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof host) == nullptr) break;
      // Appends, not "[" + string: GCC 12's -O3 C++20 build warns (-Wrestrict,
      // a false positive) on prepending to a temporary.
      std::string text = "[";
      text.append(host).append("]:").append(std::to_string(ntohs(in6.sin6_port)));
      return text;
    }
    case AF_UNIX: {
      sockaddr_un un{};
      std::memcpy(&un, &ss, sizeof un);
      const std::size_t path_offset = offsetof(sockaddr_un, sun_path);
      if (len <= path_offset) break;  // unnamed
      std::size_t n = std::min<std::size_t>(len - path_offset, sizeof un.sun_path);
      // Paths and abstract names are bytes: kept as valid UTF-8.
      if (un.sun_path[0] == '\0') {  // abstract: not NUL-terminated
        std::string text = "@";
        text += ToValidUtf8(std::string_view(un.sun_path + 1, n - 1));
        return text;
      }
      n = strnlen(un.sun_path, n);
      if (n == 0) break;
      return ToValidUtf8(std::string_view(un.sun_path, n));
    }
    default:
      break;
  }
  return std::nullopt;
}

template <typename Fn>
std::optional<std::string> AddressFrom(int fd, Fn get) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (get(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return FormatAddress(ss, len);
}

}  // namespace

int TcpStateOf(int fd) noexcept {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
      len < offsetof(tcp_info, tcpi_state) + sizeof info.tcpi_state) {
    return 0;
  }
  const int state = info.tcpi_state;
  return state >= 1 && state <= kTcpStateCount ? state : 0;
}

SocketDetails ResolveSocket(int fd, FdKind kind) {
  SocketDetails d;
  switch (kind) {
    case FdKind::kTcp:
    case FdKind::kTcp6:
      if (const char* name = TcpStateName(TcpStateOf(fd))) d.tcp_state = name;
      [[fallthrough]];
    case FdKind::kUdp:
    case FdKind::kUnix:
      d.local = AddressFrom(fd, &getsockname);
      d.peer = AddressFrom(fd, &getpeername);
      break;
    default:
      break;
  }
  return d;
}

}  // namespace leakprobe
