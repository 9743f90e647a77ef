// The bounded multi-resolution series store (leakprobe/trend/series_store.h).
//
// Per series: level 0 is a ring of the last points_per_level samples; level
// i >= 1 is a ring of the last points_per_level closed buckets, each merging
// factor^i consecutive samples (min, the time of the min, max, last), plus
// the bucket being filled. Every level is fed from the samples directly, so
// the levels are independent views of the same history at growing spans.
// Rings are allocated at their full size when a level closes its first
// bucket, so a series costs what its history needs, up to the bound that
// MemoryBytes() reports and docs/trends.md measures.
#include "leakprobe/trend/series_store.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <utility>

namespace leakprobe::trend {

std::string_view ResourceName(Resource resource) {
  switch (resource) {
    case Resource::kRss:
      return "rss";
    case Resource::kHeap:
      return "heap";
    case Resource::kFd:
      return "fd";
    case Resource::kObject:
      return "object";
    case Resource::kContainer:
      return "container";
    case Resource::kThread:
      return "thread";
    case Resource::kNativeHeap:
      return "native_heap";
    case Resource::kPool:
      return "pool";
    case Resource::kWork:
      return "work";
  }
  return "unknown";
}

namespace {

// A closed bucket of level i >= 1: the minimum (and when it was seen), the
// maximum and the last value of the factor^i samples it merged.
struct Bucket {
  double t_min = 0;
  double min = 0;
  double max = 0;
  double last = 0;
};

// A fixed-capacity ring, oldest element first when read.
template <typename T>
class Ring {
 public:
  void Push(const T& item, std::size_t capacity) {
    if (items_.size() < capacity) {
      if (items_.capacity() < capacity) items_.reserve(capacity);
      items_.push_back(item);
      return;
    }
    items_[head_] = item;
    head_ = (head_ + 1) % capacity;
  }
  std::size_t size() const { return items_.size(); }
  const T& At(std::size_t i) const { return items_[(head_ + i) % items_.size()]; }
  std::size_t Bytes() const { return items_.capacity() * sizeof(T); }

 private:
  std::vector<T> items_;
  std::size_t head_ = 0;  // oldest element once full
};

std::string IndexKey(const SeriesKey& key) {
  std::string out;
  out.reserve(key.key.size() + 1);
  out.push_back(static_cast<char>(key.resource));
  out.append(key.key);
  return out;
}

}  // namespace

struct SeriesStore::Series {
  struct Level {
    Ring<Bucket> closed;
    std::uint64_t closed_count = 0;  // buckets ever closed
    Bucket open;                     // the bucket being filled
    std::uint64_t open_samples = 0;  // samples in `open`
    std::uint64_t span = 1;          // samples per bucket: factor^i
  };
  SeriesKey key;
  Ring<Point> raw;            // level 0
  std::vector<Level> levels;  // levels 1..limits.levels-1
  std::uint64_t samples = 0;  // samples ever appended
  double last_t = -INFINITY;
};

struct SeriesStore::Index {
  std::unordered_map<std::string, std::size_t> positions;
};

SeriesStore::SeriesStore(Limits limits)
    : limits_(limits), index_(std::make_unique<Index>()) {
  limits_.points_per_level = std::max<std::size_t>(limits_.points_per_level, 2);
  limits_.factor = std::max<std::size_t>(limits_.factor, 2);
  limits_.levels = std::clamp<std::size_t>(limits_.levels, 1, 12);
}
SeriesStore::~SeriesStore() = default;
SeriesStore::SeriesStore(SeriesStore&&) noexcept = default;
SeriesStore& SeriesStore::operator=(SeriesStore&&) noexcept = default;

SeriesStore::Series* SeriesStore::Find(const SeriesKey& key) const {
  auto it = index_->positions.find(IndexKey(key));
  return it == index_->positions.end() ? nullptr : series_[it->second].get();
}

bool SeriesStore::Append(const SeriesKey& key, double t, double v) {
  if (!std::isfinite(t) || !std::isfinite(v)) {
    ++invalid_samples_;
    return false;
  }
  Series* s = Find(key);
  if (s == nullptr) {
    if (series_.size() >= limits_.max_series) {
      ++dropped_series_;
      return false;
    }
    auto created = std::make_unique<Series>();
    created->key = key;
    created->levels.resize(limits_.levels - 1);
    std::uint64_t span = 1;
    for (auto& level : created->levels) {
      span *= limits_.factor;
      level.span = span;
    }
    index_->positions.emplace(IndexKey(key), series_.size());
    s = created.get();
    series_.push_back(std::move(created));
  }
  if (t <= s->last_t) {
    ++out_of_order_;
    return false;
  }
  s->last_t = t;
  ++s->samples;
  s->raw.Push(Point{t, v}, limits_.points_per_level);
  for (auto& level : s->levels) {
    Bucket& b = level.open;
    if (level.open_samples == 0) {
      b = Bucket{t, v, v, v};
    } else {
      if (v < b.min) {
        b.min = v;
        b.t_min = t;
      }
      b.max = std::max(b.max, v);
      b.last = v;
    }
    if (++level.open_samples == level.span) {
      level.closed.Push(b, limits_.points_per_level);
      ++level.closed_count;
      level.open_samples = 0;
    }
  }
  return true;
}

std::vector<Point> SeriesStore::Points(const SeriesKey& key) const {
  std::vector<Point> out;
  const Series* s = Find(key);
  if (s == nullptr || s->samples == 0) return out;
  // Level 0 while it still holds every sample.
  if (s->samples <= limits_.points_per_level) {
    out.reserve(s->raw.size());
    for (std::size_t i = 0; i < s->raw.size(); ++i) out.push_back(s->raw.At(i));
    return out;
  }
  // Otherwise the finest level whose ring has never dropped a bucket (it
  // covers the whole history but for the bucket being filled), or the
  // coarsest when even that one has: closed buckets only, one resolution.
  const Series::Level* chosen = nullptr;
  for (const auto& level : s->levels) {
    chosen = &level;
    if (level.closed_count <= limits_.points_per_level) break;
  }
  if (chosen == nullptr) {  // a single level: the last samples
    for (std::size_t i = 0; i < s->raw.size(); ++i) out.push_back(s->raw.At(i));
    return out;
  }
  out.reserve(chosen->closed.size());
  for (std::size_t i = 0; i < chosen->closed.size(); ++i) {
    const Bucket& b = chosen->closed.At(i);
    out.push_back(Point{b.t_min, b.min});
  }
  return out;
}

std::vector<SeriesKey> SeriesStore::Keys() const {
  std::vector<SeriesKey> keys;
  keys.reserve(series_.size());
  for (const auto& s : series_) keys.push_back(s->key);
  return keys;
}

std::size_t SeriesStore::series() const { return series_.size(); }
std::uint64_t SeriesStore::dropped_series() const { return dropped_series_; }
std::uint64_t SeriesStore::out_of_order() const { return out_of_order_; }
std::uint64_t SeriesStore::invalid_samples() const { return invalid_samples_; }

std::size_t SeriesStore::MemoryBytes() const {
  std::size_t bytes = sizeof(*this) + sizeof(Index) +
                      series_.capacity() * sizeof(std::unique_ptr<Series>);
  // The index: its bucket array, one node per series (the pair, the hash
  // and the link) and the key's heap text past the small-string buffer.
  bytes += index_->positions.bucket_count() * sizeof(void*);
  for (const auto& [name, position] : index_->positions) {
    bytes += sizeof(std::pair<const std::string, std::size_t>) + 2 * sizeof(void*);
    if (name.capacity() > 15) bytes += name.capacity() + 1;
  }
  for (const auto& s : series_) {
    bytes += sizeof(Series) + s->levels.capacity() * sizeof(Series::Level);
    if (s->key.key.capacity() > 15) bytes += s->key.key.capacity() + 1;
    bytes += s->raw.Bytes();
    for (const auto& level : s->levels) bytes += level.closed.Bytes();
  }
  return bytes;
}

void SeriesStore::Clear() {
  series_.clear();
  series_.shrink_to_fit();
  index_->positions = {};
  dropped_series_ = 0;
  out_of_order_ = 0;
  invalid_samples_ = 0;
}

}  // namespace leakprobe::trend
