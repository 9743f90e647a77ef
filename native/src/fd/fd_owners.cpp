// The fd owner table (see leakprobe/fd/fd_owners.h).
#include "leakprobe/fd/fd_owners.h"

#include <utility>

#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/runtime/utf8.h"

namespace leakprobe {

namespace detail {
__thread std::uint32_t tls_fd_owner __attribute__((tls_model("initial-exec"))) = kNoOwner;
}  // namespace detail

FdOwners::FdOwners() {
  TrackerLock lock(&mu_);
  owners_.resize(2);  // kNoOwner, kOverflowOwner
  owners_[kOverflowOwner].type = kOverflowOwnerType;
}

std::uint32_t FdOwners::Intern(const std::string& type, std::uint32_t stack_id) {
  // Cut first, then made valid: a character cut in half becomes escaped
  // bytes (leakprobe/runtime/utf8.h), still valid UTF-8.
  Key key{ToValidUtf8(std::string_view(type).substr(0, kMaxTypeBytes)), stack_id};
  TrackerLock lock(&mu_);
  const auto it = index_.find(key);
  if (it != index_.end()) return it->second;
  const bool new_type = !types_.contains(key.type);
  if (owners_.size() >= kMaxOwners || (new_type && types_.size() >= kMaxTypes)) {
    ++overflows_;
    return kOverflowOwner;
  }
  const auto id = static_cast<std::uint32_t>(owners_.size());
  owners_.push_back(FdOwner{key.type, stack_id});
  try {
    if (new_type) types_.insert(key.type);
    index_.emplace(std::move(key), id);
  } catch (...) {
    owners_.pop_back();  // no owner without its index entry
    throw;
  }
  return id;
}

std::optional<FdOwner> FdOwners::Get(std::uint32_t id) const {
  if (id == kNoOwner) return std::nullopt;
  TrackerLock lock(&mu_);
  if (id >= owners_.size()) return std::nullopt;
  return owners_[id];
}

std::vector<std::string> FdOwners::Types() const {
  TrackerLock lock(&mu_);
  std::vector<std::string> out;
  out.reserve(owners_.size());
  for (const FdOwner& owner : owners_) out.push_back(owner.type);
  return out;
}

std::uint64_t FdOwners::overflows() const {
  TrackerLock lock(&mu_);
  return overflows_;
}

FdOwners& ProcessFdOwners() {
  // Leaked, like the fd table: records name owners until the process ends.
  static FdOwners* const owners = [] {
    auto* o = new FdOwners();
    RegisterForkLock(ForkStage::kFdOwners, o->mutex());
    return o;
  }();
  return *owners;
}

}  // namespace leakprobe
