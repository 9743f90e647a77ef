// The process-wide trend state (see leakprobe/trend/trend_state.h).
#include "leakprobe/trend/trend_state.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <iterator>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "leakprobe/fd/fd_kind.h"
#include "leakprobe/objects/containers_summary.h"
#include "leakprobe/objects/object_summary.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/fork.h"

namespace leakprobe::trend {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kMiB = 1024.0 * 1024.0;
// The series' key prefixes of the fd attribution series.
constexpr std::string_view kFdSitePrefix = "site:";
constexpr std::string_view kFdOwnerPrefix = "owner:";
constexpr std::string_view kCollectedOpenSuffix = ":collected_open";
// The tracked type whose live objects are the process's threads (the
// threading adapter's), for thread/total's site.
constexpr std::string_view kThreadType = "threading.Thread";
// The pool rows' states that count connections in use: a pool runs out when
// they reach its limit (SQLAlchemy's checked_out; httpcore's and urllib3's
// active).
constexpr std::string_view kPoolInUseStates[] = {"checked_out", "active"};
// The pool series that name a site: SQLAlchemy's checked-out connections
// are tracked objects of this type (the adapter's), whose top creation site
// is where connections are checked out.
constexpr std::string_view kSqlalchemyPoolPrefix = "sqlalchemy:";
constexpr std::string_view kCheckedOutType = "sqlalchemy.PoolProxiedConnection";
// The suffixes of the work series' keys (<kind>:<name><suffix>).
constexpr std::string_view kWorkFdsSuffix = ":fds";
constexpr std::string_view kWorkObjectsSuffix = ":objects";

std::string_view Strip(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const std::size_t first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kSpace) - first + 1);
}

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    lines.push_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

bool ParseNumber(std::string_view text, double* out) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return ec == std::errc() && ptr == end;
}

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

}  // namespace

std::string_view UnitName(Resource resource) {
  switch (resource) {
    case Resource::kRss:
    case Resource::kHeap:
    case Resource::kNativeHeap:
      return "bytes";
    case Resource::kFd:
      return "fds";
    case Resource::kObject:
      return "objects";
    case Resource::kContainer:
      return "entries";
    case Resource::kThread:
      return "threads";
    case Resource::kPool:
      return "connections";
    case Resource::kWork:
      return "units";  // Judge names the key's unit: fds or objects
  }
  return "?";
}

ResourceParamTable DefaultResourceParams(std::uint64_t heap_sample_bytes,
                                         std::uint64_t native_sample_bytes) {
  ResourceParamTable table{};
  auto at = [&table](Resource r) -> ResourceParams& {
    return table[static_cast<std::size_t>(r)];
  };
  at(Resource::kRss) = {16 * kMiB, 0.05};
  const auto heap_unit = static_cast<double>(heap_sample_bytes);
  at(Resource::kHeap) = {8.0 * heap_unit, 0.05, heap_unit};
  at(Resource::kNativeHeap) = {16 * kMiB, 0.05, static_cast<double>(native_sample_bytes)};
  at(Resource::kFd) = {3, 0};
  at(Resource::kObject) = {3, 0};
  at(Resource::kThread) = {3, 0};
  at(Resource::kContainer) = {20, 0};
  at(Resource::kPool) = {3, 0};
  at(Resource::kWork) = {3, 0};
  return table;
}

TrendParams ParamsFor(const TrendConfig& config, Resource resource) {
  const TrendParams defaults;
  TrendParams params;
  const double interval = config.interval_seconds;
  const double scaled =
      defaults.min_window_seconds * (interval / 10.0) * (interval / 10.0);
  params.min_window_seconds =
      std::min(defaults.min_window_seconds, std::max({10.0, 12.0 * interval, scaled}));
  params.min_points = defaults.min_points;
  params.warmup_seconds = config.warmup_seconds;
  const ResourceParams& effect = config.params[static_cast<std::size_t>(resource)];
  params.min_growth = effect.min_growth;
  params.min_relative_growth = effect.min_relative_growth;
  params.sampling_unit = effect.sampling_unit;
  return params;
}

std::optional<double> ParseCgroupMemoryMax(std::string_view text) {
  text = Strip(text);
  double bytes = 0;
  if (text.empty() || text == "max" || !ParseNumber(text, &bytes) || bytes <= 0) {
    return std::nullopt;
  }
  return bytes;
}

std::optional<double> ParseMemTotal(std::string_view meminfo) {
  for (std::string_view line : Lines(meminfo)) {
    constexpr std::string_view kName = "MemTotal:";
    if (!line.starts_with(kName)) continue;
    line = Strip(line.substr(kName.size()));
    const bool kib = line.ends_with("kB");
    if (kib) line = Strip(line.substr(0, line.size() - 2));
    double value = 0;
    if (!ParseNumber(line, &value) || value <= 0) return std::nullopt;
    return kib ? value * 1024 : value;
  }
  return std::nullopt;
}

std::optional<std::string> ParseCgroupV2Path(std::string_view proc_self_cgroup) {
  for (std::string_view line : Lines(proc_self_cgroup)) {
    if (line.starts_with("0::")) return std::string(Strip(line.substr(3)));
  }
  return std::nullopt;
}

double MemoryLimitBytes() {
  if (const auto cgroup = ReadSmallFile("/proc/self/cgroup")) {
    if (const auto path = ParseCgroupV2Path(*cgroup)) {
      if (const auto max = ReadSmallFile("/sys/fs/cgroup" + *path + "/memory.max")) {
        if (const auto bytes = ParseCgroupMemoryMax(*max)) return *bytes;
      }
    }
  }
  if (const auto meminfo = ReadSmallFile("/proc/meminfo")) {
    if (const auto bytes = ParseMemTotal(*meminfo)) return *bytes;
  }
  return kInf;
}

namespace {

// What one sample measured: the series' values, and what the site and limit
// rules need.
struct Fed {
  std::vector<std::pair<SeriesKey, double>> values;
  std::optional<std::string> heap_top_site;
  std::optional<std::string> native_top_site;
  std::optional<std::string> fd_top_site;
  absl::flat_hash_map<std::string, std::string> object_top_site;  // type -> site
  // type -> the site whose instances were most often collected while open
  absl::flat_hash_map<std::string, std::string> object_collected_site;
  absl::flat_hash_map<std::string, double> container_maxsize;  // name -> maxsize
  absl::flat_hash_map<std::string, double> pool_limit;  // "<library>:<pool>" -> limit
  std::uint64_t dropped_pool_samples = 0;               // beyond kMaxPoolSeries
  double rss = -1;                                      // bytes; -1: unknown
  double fds_open = -1;   // open fds of the process; -1: unknown
  double max_fds = kInf;  // RLIMIT_NOFILE soft
  double memory_limit = kInf;
};

using KeySet = absl::flat_hash_set<std::pair<Resource, std::string>>;

bool IsSiteKey(Resource resource, std::string_view key) {
  return (resource == Resource::kHeap && key != "total") ||
         (resource == Resource::kFd && key.starts_with(kFdSitePrefix));
}

class Feeder {
 public:
  Feeder(const std::vector<SeriesKey>& known, Fed* fed) : fed_(fed) {
    for (const SeriesKey& key : known) known_.insert({key.resource, key.key});
  }

  // Always recorded.
  void Add(Resource resource, std::string key, double value) {
    added_.insert({resource, key});
    fed_->values.push_back({{resource, std::move(key)}, value});
  }
  // Recorded once it has been non-zero: a series starts at its first use.
  void AddOnceUsed(Resource resource, std::string key, double value) {
    if (value > 0 || known_.contains(std::make_pair(resource, key))) {
      Add(resource, std::move(key), value);
    }
  }
  // A site series (heap/<site>, fd/site:<site>): appended after every other
  // series, so that when the store nears its cap the totals, kinds, types
  // and containers come first; at most kMaxSiteSeries per resource are ever
  // created (the top sites change over a long run: each change would make a
  // series that the store keeps for good).
  void AddSite(Resource resource, std::string key, double value) {
    const auto id = std::make_pair(resource, key);
    if (!known_.contains(id)) {
      std::size_t& created = site_series_[static_cast<std::size_t>(resource)];
      if (created == 0) {
        for (const auto& [r, k] : known_) {
          if (r == resource && IsSiteKey(r, k)) ++created;
        }
      }
      if (created >= kMaxSiteSeries) return;
      ++created;
    }
    added_.insert(id);
    sites_.push_back({{resource, std::move(key)}, value});
  }
  // A pool series, recorded once it has been non-zero; at most
  // kMaxPoolSeries are ever created (the others' samples are counted).
  void AddPool(std::string key, double value) {
    const auto id = std::make_pair(Resource::kPool, key);
    if (!known_.contains(id)) {
      if (value <= 0) return;
      if (pool_series_ < 0) {
        pool_series_ = 0;
        for (const auto& [r, k] : known_) pool_series_ += r == Resource::kPool ? 1 : 0;
      }
      if (pool_series_ >= static_cast<std::ptrdiff_t>(kMaxPoolSeries)) {
        ++fed_->dropped_pool_samples;
        return;
      }
      ++pool_series_;
      known_.insert(id);
    }
    Add(Resource::kPool, std::move(key), value);
  }
  // Moves the site series behind the others.
  void Finish() {
    for (auto& value : sites_) fed_->values.push_back(std::move(value));
    sites_.clear();
  }

  // A known series of a top-site list (keys starting with `prefix`) absent
  // from a list shorter than its N holds nothing now: 0. From a full list,
  // its value is unknown: nothing.
  void ZeroAbsent(Resource resource, std::string_view prefix, std::size_t list_size,
                  std::size_t top_n) {
    if (list_size >= top_n) return;
    for (const auto& [r, key] : known_) {
      if (r != resource || !key.starts_with(prefix) ||
          added_.contains(std::make_pair(r, key))) {
        continue;
      }
      if (resource == Resource::kHeap && key == "total") continue;
      sites_.push_back({{r, key}, 0});
    }
  }

 private:
  Fed* fed_;
  KeySet known_;
  KeySet added_;
  std::vector<std::pair<SeriesKey, double>> sites_;
  std::array<std::size_t, kResourceCount> site_series_{};  // 0: not counted yet
  std::ptrdiff_t pool_series_ = -1;                        // -1: not counted yet
};

void CollectValues(const Snapshot& s, const TrendConfig& config,
                   const std::vector<SeriesKey>& known, Fed* fed) {
  Feeder feed(known, fed);
  fed->memory_limit = config.memory_limit_bytes;
  if (s.process.ok) {
    feed.Add(Resource::kRss, "total", s.process.resident_memory_bytes);
    feed.Add(Resource::kThread, "total", static_cast<double>(s.process.threads));
    fed->rss = s.process.resident_memory_bytes;
  }
  if (s.process.open_fds >= 0) fed->fds_open = static_cast<double>(s.process.open_fds);
  if (s.process.max_fds >= 0) fed->max_fds = static_cast<double>(s.process.max_fds);
  if (s.heap && s.heap->enabled) {
    feed.Add(Resource::kHeap, "total", s.heap->live_bytes);
    for (const HeapSite& site : s.heap->top_sites) {
      feed.AddSite(Resource::kHeap, site.site, site.live_bytes);
    }
    feed.ZeroAbsent(Resource::kHeap, "", s.heap->top_sites.size(), config.heap_top_sites);
    if (!s.heap->top_sites.empty()) fed->heap_top_site = s.heap->top_sites.front().site;
  }
  if (s.native && s.native->enabled) {
    // The malloc family only: anonymous mappings are exact and rarely grow
    // without the heap (they are in the memory components).
    feed.Add(Resource::kNativeHeap, "total", s.native->live_bytes);
    if (!s.native->top_sites.empty()) {
      fed->native_top_site = s.native->top_sites.front().site;
    }
  }
  if (s.fd) {
    double total = 0;
    for (std::size_t k = 0; k < kFdKindCount; ++k) {
      const auto open = static_cast<double>(s.fd->open[k]);
      total += open;
      feed.AddOnceUsed(Resource::kFd, FdKindName(static_cast<FdKind>(k)), open);
    }
    feed.Add(Resource::kFd, "total", total);
    if (fed->fds_open < 0) fed->fds_open = total;
    for (const FdSite& site : s.fd->top_sites) {
      feed.AddSite(Resource::kFd, std::string(kFdSitePrefix) + site.site,
                   static_cast<double>(site.open_fds));
    }
    feed.ZeroAbsent(Resource::kFd, kFdSitePrefix, s.fd->top_sites.size(),
                    config.fd_top_sites);
    if (!s.fd->top_sites.empty()) fed->fd_top_site = s.fd->top_sites.front().site;
    for (const FdOwnerCount& owner : s.fd->owners) {
      feed.AddOnceUsed(Resource::kFd, std::string(kFdOwnerPrefix) + owner.owner,
                       static_cast<double>(owner.OpenFds()));
    }
  }
  if (s.objects) {
    for (const ObjectTypeSummary& t : s.objects->types) {
      if (t.name == kOverflowTypeName && t.created == 0 && t.errors == 0) continue;
      // From the first creation on: a type with churn has a flat series.
      if (t.created > 0) feed.Add(Resource::kObject, t.name, static_cast<double>(t.live));
      feed.AddOnceUsed(Resource::kObject, t.name + std::string(kCollectedOpenSuffix),
                       static_cast<double>(t.collected_open));
      if (!t.top_sites.empty()) fed->object_top_site[t.name] = t.top_sites.front().site;
      // The top real site: the overflow entry names no line.
      for (const ObjectCollectedSite& site : t.collected_open_sites) {
        if (site.site != kCollectedSitesOverflowName) {
          fed->object_collected_site[t.name] = site.site;
          break;
        }
      }
    }
  }
  for (const ContainerSize& c : s.containers.containers) {
    feed.Add(Resource::kContainer, c.name, static_cast<double>(c.size));
    if (c.maxsize >= 0) fed->container_maxsize[c.name] = static_cast<double>(c.maxsize);
  }
  for (const PoolConnections& p : s.containers.pools) {
    if (std::find(std::begin(kPoolInUseStates), std::end(kPoolInUseStates), p.state) ==
        std::end(kPoolInUseStates)) {
      continue;
    }
    std::string key = p.library + ":" + p.pool;
    if (p.limit >= 0) fed->pool_limit[key] = static_cast<double>(p.limit);
    feed.AddPool(std::move(key), static_cast<double>(p.connections));
  }
  // Per unit of work: what its runs left behind, summed. Fds from the
  // first run on (a clean unit's series is flat at 0); objects once used.
  for (const WorkUnit& w : s.containers.work) {
    if (w.runs == 0) continue;
    const std::string prefix = w.kind + ":" + w.name;
    feed.Add(Resource::kWork, prefix + std::string(kWorkFdsSuffix),
             static_cast<double>(w.retained_fds));
    feed.AddOnceUsed(Resource::kWork, prefix + std::string(kWorkObjectsSuffix),
                     static_cast<double>(w.retained_objects));
  }
  feed.Finish();
}

// The limit a series is shown against, and the one its time to exhaustion is
// computed against (the series' own value at which the resource runs out).
std::pair<double, double> Limits(const SeriesKey& key, double last, const Fed& fed) {
  switch (key.resource) {
    case Resource::kRss:
      return {fed.memory_limit, fed.memory_limit};
    case Resource::kHeap:
    case Resource::kNativeHeap:
      if (fed.rss >= 0 && std::isfinite(fed.memory_limit)) {
        return {fed.memory_limit, last + std::max(0.0, fed.memory_limit - fed.rss)};
      }
      return {fed.memory_limit, fed.memory_limit};
    case Resource::kFd:
      if (std::isfinite(fed.max_fds) && fed.fds_open >= 0) {
        return {fed.max_fds, last + std::max(0.0, fed.max_fds - fed.fds_open)};
      }
      return {fed.max_fds, fed.max_fds};
    case Resource::kContainer:
      if (const auto it = fed.container_maxsize.find(key.key);
          it != fed.container_maxsize.end()) {
        return {it->second, it->second};
      }
      return {kInf, kInf};
    case Resource::kPool:
      if (const auto it = fed.pool_limit.find(key.key); it != fed.pool_limit.end()) {
        return {it->second, it->second};
      }
      return {kInf, kInf};
    case Resource::kObject:
    case Resource::kThread:
    case Resource::kWork:
      break;
  }
  return {kInf, kInf};
}

SeriesVerdict Judge(const SeriesKey& key, const std::vector<Point>& points,
                    const TrendConfig& config, const Fed& fed) {
  SeriesVerdict out;
  out.resource = key.resource;
  out.key = key.key;
  out.unit = std::string(UnitName(key.resource));
  if (key.resource == Resource::kWork) {
    out.unit = key.key.ends_with(kWorkFdsSuffix) ? "fds" : "objects";
  }
  TrendParams params = ParamsFor(config, key.resource);
  // Warm-up is the process's: a series that began later is not warmed up again.
  if (!points.empty()) {
    params.warmup_seconds = std::max(0.0, config.warmup_seconds - points.front().t);
  }
  const double last = points.empty() ? 0 : points.back().v;
  const auto [shown, against] = Limits(key, last, fed);
  out.limit = shown;
  out.verdict = Evaluate(std::span<const Point>(points), params, against);
  return out;
}

// The fastest-growing suspected series of `resource` whose key starts with
// `prefix` (heap sites: every key but "total"), as its site; when none is
// suspected, the fastest-growing one that has a verdict (a total can be
// flagged before any one site is: the largest site, the fallback after
// this, is often start-up code that never grows).
std::optional<std::string> FastestSite(const std::vector<SeriesVerdict>& series,
                                       Resource resource, std::string_view prefix) {
  const SeriesVerdict* best = nullptr;
  const SeriesVerdict* growing = nullptr;
  for (const SeriesVerdict& s : series) {
    if (s.resource != resource || !s.key.starts_with(prefix)) continue;
    if (resource == Resource::kHeap && s.key == "total") continue;
    const double slope = s.verdict.slope_per_second;
    if (s.verdict.suspected) {
      if (best == nullptr || slope > best->verdict.slope_per_second) best = &s;
    } else if (s.verdict.reason != Reason::kWarmup && slope > 0 &&
               (growing == nullptr || slope > growing->verdict.slope_per_second)) {
      growing = &s;
    }
  }
  if (best == nullptr) best = growing;
  if (best == nullptr) return std::nullopt;
  return best->key.substr(prefix.size());
}

std::optional<std::string> TopObjectSite(const Fed& fed, std::string_view type) {
  const auto it = fed.object_top_site.find(std::string(type));
  if (it == fed.object_top_site.end()) return std::nullopt;
  return it->second;
}

void PickSites(const Fed& fed, std::vector<SeriesVerdict>* series) {
  const std::optional<std::string> heap_site = FastestSite(*series, Resource::kHeap, "");
  const std::optional<std::string> fd_site =
      FastestSite(*series, Resource::kFd, kFdSitePrefix);
  for (SeriesVerdict& s : *series) {
    const std::string_view key = s.key;
    switch (s.resource) {
      case Resource::kHeap:
        s.site = key == "total" ? (heap_site ? heap_site : fed.heap_top_site) : s.key;
        break;
      case Resource::kFd:
        if (key.starts_with(kFdSitePrefix)) {
          s.site = std::string(key.substr(kFdSitePrefix.size()));
        } else if (key.starts_with(kFdOwnerPrefix)) {
          s.site = TopObjectSite(fed, key.substr(kFdOwnerPrefix.size()));
        } else {
          s.site = fd_site ? fd_site : fed.fd_top_site;
        }
        break;
      case Resource::kObject:
        if (key.ends_with(kCollectedOpenSuffix)) {
          // Collected instances are gone: their sites are counted apart.
          const auto it = fed.object_collected_site.find(
              std::string(key.substr(0, key.size() - kCollectedOpenSuffix.size())));
          if (it != fed.object_collected_site.end()) s.site = it->second;
        } else {
          s.site = TopObjectSite(fed, key);
        }
        break;
      case Resource::kThread:
        s.site = TopObjectSite(fed, kThreadType);
        break;
      case Resource::kPool:
        if (key.starts_with(kSqlalchemyPoolPrefix)) {
          s.site = TopObjectSite(fed, kCheckedOutType);
        }
        break;
      case Resource::kNativeHeap:
        s.site = fed.native_top_site;
        break;
      case Resource::kRss:
      case Resource::kContainer:
      case Resource::kWork:
        break;
    }
  }
}

}  // namespace

TrendState& TrendState::Instance() {
  static TrendState* const state = [] {
    auto* s = new TrendState();  // leaked: the sampler may run during exit
    RegisterForkHandlers(ForkStage::kTrends, {[] { Instance().PrepareFork(); },
                                              [] { Instance().ParentAfterFork(); },
                                              [] { Instance().ChildAfterFork(); }});
    return s;
  }();
  return *state;
}

TrendState::TrendState() = default;
TrendState::~TrendState() = default;

void TrendState::Start(const TrendConfig& config) {
  TrendConfig resolved = config;
  if (resolved.memory_limit_bytes <= 0) resolved.memory_limit_bytes = MemoryLimitBytes();
  MutexLock sample_lock(&sample_mu_);
  MutexLock lock(&mu_);
  config_ = resolved;
  store_ = std::make_unique<SeriesStore>(resolved.limits);
  summary_.reset();
  dropped_pool_samples_ = 0;
  origin_ns_ = MonotonicNs();
  running_ = true;
  forked_ = false;
  ++generation_;
}

void TrendState::Stop() {
  std::unique_ptr<SeriesStore> old;
  {
    MutexLock sample_lock(&sample_mu_);
    MutexLock lock(&mu_);
    running_ = false;
    forked_ = false;
    old = std::move(store_);
    summary_.reset();
    ++generation_;
  }
}  // `old` is freed without the locks

bool TrendState::running() const {
  MutexLock lock(&mu_);
  return running_;
}

void TrendState::ClearIfForkedLocked() {
  if (!forked_) return;
  forked_ = false;
  if (store_) store_->Clear();
  summary_.reset();
  dropped_pool_samples_ = 0;
  ++generation_;
}

void TrendState::PrepareFork() {
  sample_mu_.Lock();
  mu_.Lock();
}

void TrendState::ParentAfterFork() {
  mu_.Unlock();
  sample_mu_.Unlock();
}

void TrendState::ChildAfterFork() {
  // No allocation or freeing here: the next use clears (ClearIfForkedLocked).
  if (running_) {
    forked_ = true;
    origin_ns_ = MonotonicNs();  // the child's history starts at the fork
  }
  mu_.Unlock();
  sample_mu_.Unlock();
}

bool TrendState::Sample() {
  if (!running()) return false;
  return Sample(TakeSnapshot(), MonotonicNs());
}

bool TrendState::Sample(const Snapshot& s, std::int64_t now_ns) {
  const std::int64_t started = MonotonicNs();
  MutexLock sample_lock(&sample_mu_);
  Fed fed;
  std::vector<SeriesKey> keys;
  std::vector<std::vector<Point>> histories;
  TrendConfig config;
  std::uint64_t generation = 0;
  std::uint64_t samples = 0;
  double t = 0;
  std::size_t series_count = 0;
  std::uint64_t dropped = 0;
  std::size_t memory = 0;
  {
    MutexLock lock(&mu_);
    if (!running_ || !store_) return false;
    ClearIfForkedLocked();
    config = config_;
    generation = generation_;
    samples = summary_ ? summary_->samples : 0;
    t = static_cast<double>(now_ns - origin_ns_) / 1e9;
    const std::vector<SeriesKey> known = store_->Keys();
    CollectValues(s, config, known, &fed);
    for (const auto& [key, value] : fed.values) store_->Append(key, t, value);
    keys = store_->Keys();
    histories.reserve(keys.size());
    for (const SeriesKey& key : keys) histories.push_back(store_->Points(key));
    series_count = store_->series();
    dropped_pool_samples_ += fed.dropped_pool_samples;
    dropped = store_->dropped_series() + dropped_pool_samples_;
    memory = store_->MemoryBytes();
  }

  TrendSummary summary;
  summary.interval_seconds = config.interval_seconds;
  summary.warmup_seconds = config.warmup_seconds;
  summary.samples = samples + 1;
  summary.last_sample_seconds = t;
  summary.series_count = series_count;
  summary.dropped_series = dropped;
  summary.memory_bytes = memory;
  summary.series.reserve(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    summary.series.push_back(Judge(keys[i], histories[i], config, fed));
  }
  PickSites(fed, &summary.series);
  std::stable_sort(summary.series.begin(), summary.series.end(),
                   [](const SeriesVerdict& a, const SeriesVerdict& b) {
                     return std::make_tuple(!a.verdict.suspected, a.resource, a.key) <
                            std::make_tuple(!b.verdict.suspected, b.resource, b.key);
                   });
  summary.sample_duration_seconds = SecondsSince(started);

  MutexLock lock(&mu_);
  if (!running_ || generation != generation_) return false;  // restarted meanwhile
  summary_ = std::move(summary);
  return true;
}

std::optional<TrendSummary> TrendState::Summary() const {
  MutexLock lock(&mu_);
  if (!running_) return std::nullopt;
  if (forked_ || !summary_) {
    TrendSummary empty;
    empty.interval_seconds = config_.interval_seconds;
    empty.warmup_seconds = config_.warmup_seconds;
    return empty;
  }
  return summary_;
}

std::vector<Point> TrendState::Points(Resource resource, const std::string& key) const {
  MutexLock lock(&mu_);
  if (!running_ || forked_ || !store_) return {};
  return store_->Points({resource, key});
}

}  // namespace leakprobe::trend
