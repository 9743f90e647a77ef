// peers.h — one scrape target for every leakprobe process of a host or pod.
//
// The processes configured with the same port form a group: the one that
// holds the port (the "holder") serves, at each scrape, its own series and
// those of every other process of the group, each series labelled with the
// `pid` and `role` of the process it comes from. The others ("peers") each
// listen on a private channel: an abstract Unix socket named
// "leakprobe-<uid>-<port>-<pid>" (no file, no port; the kernel removes the
// name when the process exits, even on SIGKILL), answering a connection with
// their own families, encoded (EncodeFamilies), and closing it. The holder
// finds its peers in /proc/net/unix, connects to all of them at once and
// merges what they send under one deadline. Both ends check the other's uid
// (SO_PEERCRED): only processes of the same user (or root) exchange series.
//
//   PeerServer server(9464, [] { return EncodeFamilies(collector.CollectOwn()); });
//   PeerFetch fetched = FetchPeers(9464, getpid(), std::chrono::seconds(2));
//
// Thread-safety: FetchPeers and the codec functions are reentrant; a
// PeerServer serves connections one at a time on its own thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "prometheus/metric_family.h"

namespace leakprobe::prometheus_exporter {

// The role label of this process (e.g. "main", "gunicorn-worker"), set by
// the Python side; "main" until set. Thread-safe.
void SetProcessRole(std::string role);
std::string ProcessRole();

// Adds the labels pid and role to every metric of `families`.
void AddProcessLabels(std::vector<prometheus::MetricFamily>* families, pid_t pid,
                      const std::string& role);

// The private wire format between peer and holder (same build on both ends):
// a magic word, then per family its name, help, type and metrics (labels and
// value). Counter, gauge and untyped families only (the collector's kinds).
std::string EncodeFamilies(const std::vector<prometheus::MetricFamily>& families);
// False (and `out` unchanged) when `data` is not a complete encoding.
bool DecodeFamilies(std::string_view data, std::vector<prometheus::MetricFamily>* out);

// Appends `from`'s metrics to the family of the same name in `into`, or the
// family itself when `into` has none. A family whose type differs from the
// one in `into` is dropped; returns how many were.
int MergeFamilies(std::vector<prometheus::MetricFamily>* into,
                  std::vector<prometheus::MetricFamily> from);

// The abstract socket name (without its leading NUL) of `pid` in a group.
std::string PeerSocketName(uid_t uid, int group_port, pid_t pid);
// The pids whose peer sockets of `group_port` and `uid` are listening, from
// the text of /proc/net/unix; sorted, without duplicates.
std::vector<pid_t> ParsePeerPids(std::string_view proc_net_unix, uid_t uid,
                                 int group_port);
// The pids of this user's processes listening in `group_port`'s group now.
std::vector<pid_t> GroupPids(int group_port);

// What one collection from the peers gave.
struct PeerFetch {
  std::vector<prometheus::MetricFamily> families;  // merged, labelled by each peer
  int listed = 0;     // peers found in /proc/net/unix (without the caller)
  int collected = 0;  // peers whose families were merged
  // Failures, by reason: could not connect, did not answer before the
  // deadline, sent more than kMaxPeerBytes or a malformed encoding, belongs
  // to another user, or sent a family whose type conflicts.
  int connect_failed = 0;
  int timed_out = 0;
  int malformed = 0;
  int foreign = 0;
  int conflicts = 0;
};

inline constexpr std::size_t kMaxPeerBytes = std::size_t{16} << 20;
inline constexpr int kMaxPeers = 256;

// Collects the families of every peer of `group_port` but `self`, all
// connections in parallel, until each has answered or `deadline` passed.
// Never throws for a peer's fault; throws std::bad_alloc only.
PeerFetch FetchPeers(int group_port, pid_t self, std::chrono::milliseconds deadline);

// The peer side: listens on this process's abstract socket of the group and
// answers every connection with render()'s bytes. render() runs on the
// server's own thread, never holding a lock of the caller.
class PeerServer {
 public:
  using Render = std::function<std::string()>;

  // Throws leakprobe::Error when the socket cannot be made.
  PeerServer(int group_port, Render render);
  ~PeerServer();  // stops and joins the thread

  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  int group_port() const { return group_port_; }
  int connections_served() const { return served_.load(std::memory_order_relaxed); }

  // Child side of fork: closes the inherited sockets (async-signal-safe,
  // close() only); the object is leaked by the caller, it has no thread here.
  void AbandonAfterFork() noexcept;

 private:
  void Run();
  void Answer(int fd);

  int group_port_;
  Render render_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd written by the destructor
  std::atomic<int> served_{0};
  std::thread thread_;
};

}  // namespace leakprobe::prometheus_exporter
