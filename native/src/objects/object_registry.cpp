// The registry of tracked resource owners (see
// leakprobe/objects/object_registry.h).
#include "leakprobe/objects/object_registry.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"

namespace leakprobe {

ObjectRegistry::ObjectRegistry(std::size_t max_types, const StackTable* stacks)
    : max_types_(std::max<std::size_t>(max_types, 1)), stacks_(stacks) {
  const TrackerLock lock(&mu_);
  types_.reserve(max_types_);
  types_.push_back(Type{kOverflowTypeName});
}

ObjectRegistry& ObjectRegistry::Instance() {
  static ObjectRegistry* const registry = [] {
    auto* r = new ObjectRegistry();
    RegisterForkLock(ForkStage::kObjects, r->mutex());
    return r;
  }();
  return *registry;
}

ObjectTypeId ObjectRegistry::RegisterType(std::string_view name) {
  name = name.substr(0, kMaxNameBytes);
  const TrackerLock lock(&mu_);
  for (std::size_t i = 1; i < types_.size(); ++i) {
    if (types_[i].name == name) return static_cast<ObjectTypeId>(i);
  }
  if (types_.size() >= max_types_) {
    ++type_overflows_;
    return kOverflowType;
  }
  types_.push_back(Type{std::string(name)});
  return static_cast<ObjectTypeId>(types_.size() - 1);
}

std::string ObjectRegistry::TypeName(ObjectTypeId type) const {
  const TrackerLock lock(&mu_);
  return type < types_.size() ? types_[type].name : std::string(kOverflowTypeName);
}

void ObjectRegistry::Start(std::size_t max_records, std::size_t top_sites) noexcept {
  max_records_.store(max_records, std::memory_order_relaxed);
  top_sites_.store(top_sites, std::memory_order_relaxed);
  enabled_.store(true, std::memory_order_release);
}

std::vector<void*> ObjectRegistry::Stop() {
  enabled_.store(false, std::memory_order_release);
  std::vector<void*> handles;
  const TrackerLock lock(&mu_);
  for (std::size_t t = 0; t < types_.size(); ++t) {
    Type& type = types_[t];
    for (std::uint32_t i = type.head; i != kNil; i = records_[i].next) {
      handles.push_back(records_[i].handle);
    }
    type = Type{std::move(type.name)};
  }
  type_overflows_ = 0;
  // Give the memory back: a stopped registry costs nothing.
  std::vector<Record>().swap(records_);
  free_ = kNil;
  absl::flat_hash_map<const void*, std::uint32_t>().swap(index_);
  absl::flat_hash_map<std::uint64_t, std::uint64_t>().swap(site_live_);
  last_site_ = nullptr;
  next_site_sweep_ = kMinSiteSweep;
  live_records_.store(0, std::memory_order_relaxed);
  return handles;
}

ObjectRegistry::AddResult ObjectRegistry::Add(ObjectTypeId type, void* handle,
                                              StackId stack,
                                              std::int64_t now_ns) noexcept {
  if (!enabled()) return AddResult::kDisabled;
  const TrackerLock lock(&mu_);
  if (type >= types_.size()) type = kOverflowType;
  Type& t = types_[type];
  std::uint32_t index = kNil;
  bool keyed = false;
  try {
    const auto [slot, fresh] = index_.try_emplace(handle, kNil);
    if (!fresh) return AddResult::kDuplicate;
    keyed = true;
    ++t.created;
    if (index_.size() - 1 >= max_records_.load(std::memory_order_relaxed)) {
      index_.erase(slot);
      ++t.dropped;
      return AddResult::kDropped;
    }
    index = free_;
    if (index == kNil) {
      if (records_.size() >= kNil) throw std::bad_alloc();
      records_.push_back(Record{});
      index = static_cast<std::uint32_t>(records_.size() - 1);
    } else {
      free_ = records_[index].prev;
    }
    slot->second = index;  // before AddSiteLocked, which may allocate
    AddSiteLocked(SiteKey(type, stack));
  } catch (...) {  // out of memory: the tables stay as they were
    if (keyed) index_.erase(handle);
    if (index != kNil) {
      records_[index].prev = free_;
      free_ = index;
    }
    ++t.errors;
    return AddResult::kError;
  }
  // Creation order within a type, even if a caller's clock read raced.
  if (t.tail != kNil) now_ns = std::max(now_ns, records_[t.tail].created_ns);
  records_[index] = Record{handle, now_ns, next_sequence_++, stack, type, t.tail, kNil};
  if (t.tail != kNil) {
    records_[t.tail].next = index;
  } else {
    t.head = index;
  }
  t.tail = index;
  ++t.live;
  live_records_.fetch_add(1, std::memory_order_relaxed);
  return AddResult::kAdded;
}

void ObjectRegistry::AddSiteLocked(std::uint64_t key) {
  if (last_site_ != nullptr && last_site_key_ == key) {
    ++*last_site_;
    return;
  }
  auto found = site_live_.find(key);
  if (found == site_live_.end()) {
    last_site_ = nullptr;  // the insert (and a sweep) may move every entry
    if (site_live_.size() >= next_site_sweep_) {
      absl::erase_if(site_live_, [](const auto& entry) { return entry.second == 0; });
      next_site_sweep_ = std::max(kMinSiteSweep, 2 * site_live_.size());
    }
    found = site_live_.emplace(key, 0).first;
  }
  ++found->second;
  last_site_key_ = key;
  last_site_ = &found->second;
}

void ObjectRegistry::CountDropped(ObjectTypeId type) noexcept {
  const TrackerLock lock(&mu_);
  Type& t = types_[type < types_.size() ? type : kOverflowType];
  ++t.created;
  ++t.dropped;
}

void ObjectRegistry::CountError(ObjectTypeId type) noexcept {
  const TrackerLock lock(&mu_);
  ++types_[type < types_.size() ? type : kOverflowType].errors;
}

void ObjectRegistry::RemoveLocked(std::uint32_t index, Index::iterator found) {
  Record& r = records_[index];
  Type& t = types_[r.type];
  if (r.prev != kNil) {
    records_[r.prev].next = r.next;
  } else {
    t.head = r.next;
  }
  if (r.next != kNil) {
    records_[r.next].prev = r.prev;
  } else {
    t.tail = r.prev;
  }
  --t.live;
  index_.erase(found);
  const std::uint64_t key = SiteKey(r.type, r.stack);
  if (last_site_ != nullptr && last_site_key_ == key) {
    if (*last_site_ > 0) --*last_site_;
  } else if (const auto site = site_live_.find(key);
             site != site_live_.end() && site->second > 0) {
    --site->second;
  }
  r.handle = nullptr;
  r.prev = free_;
  r.next = kNil;
  free_ = index;
  live_records_.fetch_sub(1, std::memory_order_relaxed);
}

bool ObjectRegistry::Close(const void* handle) noexcept {
  const TrackerLock lock(&mu_);
  const auto it = index_.find(handle);
  if (it == index_.end()) return false;
  const std::uint32_t index = it->second;
  ++types_[records_[index].type].closed;
  RemoveLocked(index, it);
  return true;
}

bool ObjectRegistry::Collected(const void* handle) noexcept {
  const TrackerLock lock(&mu_);
  const auto it = index_.find(handle);
  if (it == index_.end()) return false;
  const std::uint32_t index = it->second;
  Type& type = types_[records_[index].type];
  ++type.collected_open;
  CountCollectedSite(&type, records_[index].stack);
  RemoveLocked(index, it);
  return true;
}

void ObjectRegistry::CountCollectedSite(Type* type, StackId stack) noexcept {
  for (auto& [id, count] : type->collected_sites) {
    if (id == stack) {
      ++count;
      return;
    }
  }
  if (type->collected_sites.size() >= kMaxCollectedSites) {
    ++type->collected_sites_overflow;
    return;
  }
  try {
    // One allocation per type, ever (until Stop).
    type->collected_sites.reserve(kMaxCollectedSites);
    type->collected_sites.emplace_back(stack, 1);
  } catch (...) {  // out of memory: counted, without its site
    ++type->collected_sites_overflow;
  }
}

std::optional<ObjectRecord> ObjectRegistry::Find(const void* handle) const {
  const TrackerLock lock(&mu_);
  const auto it = index_.find(handle);
  if (it == index_.end()) return std::nullopt;
  const Record& r = records_[it->second];
  return ObjectRecord{r.type, r.stack, r.created_ns, r.sequence};
}

std::vector<void*> ObjectRegistry::LiveHandles(ObjectTypeId type,
                                               std::size_t limit) const {
  std::vector<void*> out;
  const TrackerLock lock(&mu_);
  if (type >= types_.size()) return out;
  for (std::uint32_t i = types_[type].head; i != kNil && out.size() < limit;
       i = records_[i].next) {
    out.push_back(records_[i].handle);
  }
  return out;
}

bool ObjectRegistry::Tracked(const void* handle) const {
  const TrackerLock lock(&mu_);
  return index_.contains(handle);
}

std::vector<std::uint64_t> ObjectRegistry::LiveCounts() const {
  std::vector<std::uint64_t> live;
  const TrackerLock lock(&mu_);
  live.reserve(types_.size());
  for (const Type& t : types_) live.push_back(t.live);
  return live;
}

std::vector<std::pair<std::string, std::int64_t>> ObjectRegistry::LiveChangesSince(
    const std::vector<std::uint64_t>& before) const {
  std::vector<std::pair<std::string, std::int64_t>> changes;
  const TrackerLock lock(&mu_);
  for (std::size_t id = 0; id < types_.size(); ++id) {
    const std::uint64_t was = id < before.size() ? before[id] : 0;
    if (types_[id].live != was) {
      changes.emplace_back(types_[id].name, static_cast<std::int64_t>(types_[id].live) -
                                                static_cast<std::int64_t>(was));
    }
  }
  return changes;
}

ObjectSummary ObjectRegistry::Summary(std::int64_t now_ns) const {
  ObjectSummary summary;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> sites;  // (SiteKey, live)
  // Per type: (stack, collected while open), then the overflow count.
  std::vector<std::vector<std::pair<StackId, std::uint64_t>>> collected;
  std::vector<std::uint64_t> collected_overflow;
  {
    const TrackerLock lock(&mu_);
    summary.types.reserve(types_.size());
    for (const Type& t : types_) {
      ObjectTypeSummary s;
      s.name = t.name;
      s.live = t.live;
      s.created = t.created;
      s.closed = t.closed;
      s.collected_open = t.collected_open;
      s.dropped = t.dropped;
      s.errors = t.errors;
      collected.push_back(t.collected_sites);
      collected_overflow.push_back(t.collected_sites_overflow);
      if (t.head != kNil) {
        s.oldest_age_seconds = static_cast<double>(std::max<std::int64_t>(
                                   now_ns - records_[t.head].created_ns, 0)) /
                               1e9;
      }
      summary.types.push_back(std::move(s));
    }
    for (const auto& entry : site_live_) {
      if (entry.second > 0) sites.push_back(entry);
    }
    summary.records = index_.size();
    summary.type_overflows = type_overflows_;
    summary.memory_bytes = MemoryBytesLocked();
  }
  summary.max_records = max_records_.load(std::memory_order_relaxed);
  // Sites by text per type (stacks that share their attribution site are
  // one site), outside the registry's lock: SiteOf takes the stack table's.
  const StackTable& table = stacks_ != nullptr ? *stacks_ : StackTable::Instance();
  std::vector<absl::flat_hash_map<std::string, std::uint64_t>> by_site(
      summary.types.size());
  for (const auto& [key, live] : sites) {
    const auto type = static_cast<std::size_t>(key >> 32);
    if (type < by_site.size()) {
      by_site[type][table.SiteOf(static_cast<StackId>(key))] += live;
    }
  }
  const std::size_t top = top_sites_.load(std::memory_order_relaxed);
  for (std::size_t t = 0; t < by_site.size(); ++t) {
    std::vector<ObjectSite>& out = summary.types[t].top_sites;
    for (auto& [site, live] : by_site[t]) out.push_back(ObjectSite{site, live});
    std::sort(out.begin(), out.end(), [](const ObjectSite& a, const ObjectSite& b) {
      return a.live != b.live ? a.live > b.live : a.site < b.site;
    });
    if (out.size() > top) out.resize(top);
  }
  // Collected-open sites the same way; a site's stack is the one that
  // contributed most to it.
  for (std::size_t t = 0; t < collected.size() && t < summary.types.size(); ++t) {
    std::vector<ObjectCollectedSite> out;
    absl::flat_hash_map<std::string, std::size_t> at;  // site -> index in out
    std::vector<std::uint64_t> best;                   // the stack's own count
    for (const auto& [stack, count] : collected[t]) {
      std::string site = table.SiteOf(stack);
      const auto [it, added] = at.emplace(site, out.size());
      if (added) {
        out.push_back(ObjectCollectedSite{std::move(site), 0, stack});
        best.push_back(count);
      } else if (count > best[it->second]) {
        best[it->second] = count;
        out[it->second].stack = stack;
      }
      out[it->second].collected_open += count;
    }
    if (collected_overflow[t] > 0) {
      out.push_back(ObjectCollectedSite{kCollectedSitesOverflowName,
                                        collected_overflow[t], kEmptyStack});
    }
    std::sort(out.begin(), out.end(),
              [](const ObjectCollectedSite& a, const ObjectCollectedSite& b) {
                return a.collected_open != b.collected_open
                           ? a.collected_open > b.collected_open
                           : a.site < b.site;
              });
    if (out.size() > top) out.resize(top);
    summary.types[t].collected_open_sites = std::move(out);
  }
  return summary;
}

std::vector<ObjectRecord> ObjectRegistry::Records() const {
  std::vector<ObjectRecord> out;
  const TrackerLock lock(&mu_);
  out.reserve(index_.size());
  for (const Type& t : types_) {
    for (std::uint32_t i = t.head; i != kNil; i = records_[i].next) {
      const Record& r = records_[i];
      out.push_back(ObjectRecord{r.type, r.stack, r.created_ns, r.sequence});
    }
  }
  return out;
}

std::size_t ObjectRegistry::MemoryBytes() const {
  const TrackerLock lock(&mu_);
  return MemoryBytesLocked();
}

std::size_t ObjectRegistry::MemoryBytesLocked() const {
  // abseil's flat tables: one control byte and one slot per bucket.
  std::size_t bytes =
      sizeof(*this) + records_.capacity() * sizeof(Record) +
      types_.capacity() * sizeof(Type) +
      index_.capacity() * (1 + sizeof(std::pair<const void*, std::uint32_t>)) +
      site_live_.capacity() * (1 + sizeof(std::pair<std::uint64_t, std::uint64_t>));
  for (const Type& t : types_) {
    if (t.name.capacity() > 15) bytes += t.name.capacity() + 1;
    bytes += t.collected_sites.capacity() * sizeof(std::pair<StackId, std::uint64_t>);
  }
  return bytes;
}

}  // namespace leakprobe
