// Cost of the fd layer's cold paths, for docs/fd-hooks.md. A benchmark, not
// a test: built with the tests, never run by ctest.
//
//   build/native/leakprobe_fd_bench [fds=10000] [sockets=5000]
//
// 1. ReconcileFds with `fds` open fds (files, pipes, sockets, eventfds): the
//    first pass (every fd new: classified) and a steady pass (all known).
// 2. The TCP state of `sockets` loopback TCP sockets (connected pairs), three
//    ways: per fd with getsockopt(TCP_INFO) (what leakprobe does), one
//    sock_diag netlink dump (NETLINK_SOCK_DIAG, inet_diag_req_v2, AF_INET and
//    AF_INET6) matched by inode, and parsing /proc/net/tcp and tcp6.
// Each figure is the median of several runs.
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "leakprobe/fd/fd_reconcile.h"
#include "leakprobe/fd/fd_summary.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/fd/socket_info.h"

namespace {

using leakprobe::FdKind;
using InodeStates = std::unordered_map<std::uint64_t, int>;

double Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

template <typename Fn>
double Median(int runs, Fn fn) {
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const double start = Now();
    fn();
    t.push_back(Now() - start);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

bool DumpNetlink(int family, InodeStates* out) {
  const int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return false;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = static_cast<std::uint8_t>(family);
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0U;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(nl, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof kernel) < 0) {
    close(nl);
    return false;
  }
  alignas(nlmsghdr) static char buf[64 * 1024];
  bool ok = false;
  for (bool done = false; !done;) {
    const ssize_t n = recv(nl, buf, sizeof buf, 0);
    if (n <= 0) break;
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        done = ok = true;
        break;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        done = true;
        break;
      }
      const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      (*out)[m->idiag_inode] = m->idiag_state;
    }
  }
  close(nl);
  return ok;
}

bool ParseProcNet(const char* path, InodeStates* out) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string text;
  char buf[64 * 1024];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) {
    text.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  // "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ..."
  std::size_t pos = text.find('\n');
  while (pos != std::string::npos && pos + 1 < text.size()) {
    const char* p = text.c_str() + pos + 1;
    char* end = nullptr;
    int field = 0;
    int state = 0;
    std::uint64_t inode = 0;
    while (*p != '\n' && *p != '\0' && field <= 9) {
      while (*p == ' ') ++p;
      const char* token = p;
      while (*p != ' ' && *p != '\n' && *p != '\0') ++p;
      if (field == 3) state = static_cast<int>(std::strtol(token, &end, 16));
      if (field == 9) inode = std::strtoull(token, &end, 10);
      ++field;
    }
    if (field > 9) (*out)[inode] = state;
    pos = text.find('\n', pos + 1);
  }
  return true;
}

void RaiseFdLimit() {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);
}

std::uint64_t InodeOf(int fd) {
  struct stat st {};
  fstat(fd, &st);
  return st.st_ino;
}

}  // namespace

int main(int argc, char** argv) {
  const int want_fds = argc > 1 ? std::atoi(argv[1]) : 10000;
  const int want_sockets = argc > 2 ? std::atoi(argv[2]) : 5000;
  RaiseFdLimit();

  // --- 1. reconcile ---
  std::vector<int> fds;
  while (static_cast<int>(fds.size()) < want_fds) {
    switch (fds.size() % 4) {
      case 0:
        fds.push_back(open("/dev/null", O_RDONLY | O_CLOEXEC));
        break;
      case 1: {
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) {
          fds.push_back(p[0]);
          fds.push_back(p[1]);
        }
        break;
      }
      case 2:
        fds.push_back(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        break;
      default:
        fds.push_back(eventfd(0, EFD_CLOEXEC));
        break;
    }
    if (fds.back() < 0) {
      std::perror("open");
      return 1;
    }
  }
  double first = 0, steady = 0;
  for (int i = 0; i < 5; ++i) {  // a fresh table each time: every fd is new
    leakprobe::FdTable table;
    first += leakprobe::ReconcileFds(table).seconds / 5;
    if (i == 4) {
      steady = Median(9, [&] { leakprobe::ReconcileFds(table); });
    }
  }
  std::printf("reconcile, %zu open fds: first pass %.2f ms, steady pass %.2f ms\n",
              fds.size(), first * 1e3, steady * 1e3);
  {
    leakprobe::FdTable table;
    leakprobe::ReconcileFds(table);
    const double summary = Median(9, [&] { leakprobe::SummarizeFds(table); });
    std::printf("scrape-time fd summary, %zu records: %.2f ms\n", table.OpenFds().size(),
                summary * 1e3);
  }
  for (int fd : fds) close(fd);

  // --- 2. TCP state of N sockets ---
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 4096) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("listen");
    return 1;
  }
  std::vector<int> socks;
  while (static_cast<int>(socks.size()) < want_sockets) {
    const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("connect");
      return 1;
    }
    socks.push_back(c);
    socks.push_back(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  }
  std::vector<std::uint64_t> inodes;
  for (int fd : socks) inodes.push_back(InodeOf(fd));

  std::size_t found = 0;
  const double per_fd = Median(9, [&] {
    found = 0;
    for (int fd : socks) found += leakprobe::TcpStateOf(fd) != 0;
  });
  std::printf("TCP state per fd (TCP_INFO), %zu sockets: %.2f ms (%zu resolved)\n",
              socks.size(), per_fd * 1e3, found);
  const double details = Median(9, [&] {
    for (int fd : socks) leakprobe::ResolveSocket(fd, FdKind::kTcp);
  });
  std::printf("  with addresses (getsockname, getpeername, TCP_INFO): %.2f ms\n",
              details * 1e3);
  {
    leakprobe::FdTable table;
    for (int fd : socks) table.RecordOpen(fd, FdKind::kTcp, 0);
    const double refresh = Median(9, [&] { leakprobe::RefreshTcpStates(table); });
    std::printf("  RefreshTcpStates over the table (what the sampler runs): %.2f ms\n",
                refresh * 1e3);
  }

  std::size_t netns = 0;
  const double netlink = Median(9, [&] {
    InodeStates states;
    DumpNetlink(AF_INET, &states);
    DumpNetlink(AF_INET6, &states);
    netns = states.size();
    found = 0;
    for (auto ino : inodes) found += states.count(ino);
  });
  std::printf(
      "sock_diag netlink dump: %.2f ms (%zu sockets in the namespace, %zu ours)\n",
      netlink * 1e3, netns, found);
  const double procnet = Median(9, [&] {
    InodeStates states;
    ParseProcNet("/proc/net/tcp", &states);
    ParseProcNet("/proc/net/tcp6", &states);
    netns = states.size();
    found = 0;
    for (auto ino : inodes) found += states.count(ino);
  });
  std::printf("/proc/net/tcp{,6} parse: %.2f ms (%zu sockets, %zu ours)\n", procnet * 1e3,
              netns, found);
  for (int fd : socks) close(fd);
  close(listener);
  return 0;
}
