// leakprobe/objects/object_summary.h — the objects section of the snapshot:
// per tracked type (an application's or a library's resource owner), the
// live instances, the creations, closes and collections while still open,
// the oldest live instance's age, the creation sites holding the most
// live instances and those whose instances were collected while open. Plain values,
// copied out of the ObjectRegistry (leakprobe/objects/object_registry.h) at one moment.
//
//   ObjectSummary s = ObjectRegistry::Instance().Summary();
//   for (const ObjectTypeSummary& t : s.types) use(t.name, t.live);
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace leakprobe {

// The type that registrations beyond the registry's type cap get.
inline constexpr const char* kOverflowTypeName = "[type table full]";

struct ObjectSite {
  std::string site;  // "path:line in function", "<native>", "[stack table full]"
  std::uint64_t live = 0;
};

// The creation sites of the instances collected while open: a type's
// registry keeps at most ObjectRegistry::kMaxCollectedSites creation
// stacks; collections from stacks beyond them count under
// kCollectedSitesOverflowName (with no stack).
inline constexpr const char* kCollectedSitesOverflowName = "[site table full]";

struct ObjectCollectedSite {
  std::string site;  // "path:line in function", "<native>", kCollectedSitesOverflowName
  std::uint64_t collected_open = 0;
  // The stack (StackTable id) that contributed most to this site: stack
  // ids are never retired, so it names its frames for good. kEmptyStack
  // (0) for the overflow entry.
  std::uint32_t stack = 0;
};

struct ObjectTypeSummary {
  std::string name;                   // "httpx.Client", "app.clients.AIClient"
  std::uint64_t live = 0;             // tracked instances alive and not closed
  std::uint64_t created = 0;          // creations seen (dropped ones included)
  std::uint64_t closed = 0;           // tracked instances closed
  std::uint64_t collected_open = 0;   // tracked instances collected while open
  std::uint64_t dropped = 0;          // creations not tracked: the record cap
  std::uint64_t errors = 0;           // creations that could not be tracked
  double oldest_age_seconds = 0;      // of the oldest live instance; 0 if none
  std::vector<ObjectSite> top_sites;  // by live instances, descending
  // By instances collected while open, descending; at most top_sites.
  std::vector<ObjectCollectedSite> collected_open_sites;
};

struct ObjectSummary {
  std::vector<ObjectTypeSummary> types;  // by registration order
  std::uint64_t records = 0;             // live records, all types
  std::uint64_t max_records = 0;         // the record cap
  std::uint64_t type_overflows = 0;      // registrations beyond the type cap
  std::size_t memory_bytes = 0;          // the registry's own tables
};

}  // namespace leakprobe
