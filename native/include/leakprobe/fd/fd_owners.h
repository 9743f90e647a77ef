// leakprobe/fd/fd_owners.h — who owns an fd: the resource object (an
// httpx.Client, a SQLAlchemy engine, ...) on whose behalf it was created,
// named by the owner's type and the stack that created the owner.
//
//   const std::uint32_t id = ProcessFdOwners().Intern("httpx.Client", stack);
//   {
//     const ThreadFdOwnerScope scope(id);   // fds created on this thread
//     connect(...);                         // meanwhile carry `id`
//   }
//   ProcessFdTable().SetOwner(fd, sequence, id);   // or afterwards, by fd
//
// Owners are interned: one id per distinct (type, creation stack), at most
// kMaxOwners of them and kMaxTypes distinct types (the `owner` label of a
// metric); past either, a new pair gets kOverflowOwner ("[owner table
// full]") and is counted. Ids are never reused, so a record's owner id
// stays meaningful after the owner is gone.
//
// Thread-safety: Intern and Get take the table's lock (a fork-protocol
// stage, see leakprobe/runtime/fork.h), never taken by a hook. The
// per-thread owner is an initial-exec TLS word: one load per fd creation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "leakprobe/runtime/mutex.h"

namespace leakprobe {

// No owner.
inline constexpr std::uint32_t kNoOwner = 0;
// The owner table was full when this owner was interned.
inline constexpr std::uint32_t kOverflowOwner = 1;
inline constexpr const char* kOverflowOwnerType = "[owner table full]";

struct FdOwner {
  std::string type;            // "httpx.Client": valid UTF-8, at most kMaxTypeBytes
  std::uint32_t stack_id = 0;  // the owner's creation stack (StackTable id), 0: none
};

class FdOwners {
 public:
  static constexpr std::size_t kMaxOwners = 4096;
  static constexpr std::size_t kMaxTypes = 256;
  static constexpr std::size_t kMaxTypeBytes = 200;

  FdOwners();
  FdOwners(const FdOwners&) = delete;
  FdOwners& operator=(const FdOwners&) = delete;

  // The id of (type, stack_id); a new one if unseen. `type` is made valid
  // UTF-8 and cut to kMaxTypeBytes. Throws std::bad_alloc only.
  std::uint32_t Intern(const std::string& type, std::uint32_t stack_id);
  // The owner behind `id`; nullopt for kNoOwner and unknown ids.
  std::optional<FdOwner> Get(std::uint32_t id) const;
  // The types of every interned owner, by id (index 0: kNoOwner, "").
  std::vector<std::string> Types() const;
  // Owners that did not fit (interned as kOverflowOwner).
  std::uint64_t overflows() const;
  // For fork: the lock, registered with the fork protocol.
  Mutex* mutex() ABSL_LOCK_RETURNED(mu_) { return &mu_; }

 private:
  struct Key {
    std::string type;
    std::uint32_t stack_id;
    bool operator==(const Key& o) const {
      return stack_id == o.stack_id && type == o.type;
    }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.type, k.stack_id);
    }
  };

  mutable Mutex mu_;
  std::vector<FdOwner> owners_ ABSL_GUARDED_BY(mu_);  // by id
  absl::flat_hash_map<Key, std::uint32_t> index_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> types_ ABSL_GUARDED_BY(mu_);
  std::uint64_t overflows_ ABSL_GUARDED_BY(mu_) = 0;
};

// The process-wide owner table (created on first use, never destroyed).
FdOwners& ProcessFdOwners();

namespace detail {
extern __thread std::uint32_t tls_fd_owner __attribute__((tls_model("initial-exec")));
}  // namespace detail

// The owner that fds created on this thread are given (kNoOwner: none).
inline std::uint32_t ThreadFdOwner() noexcept { return detail::tls_fd_owner; }
// Sets it; returns the previous one (to restore: scopes nest).
inline std::uint32_t SetThreadFdOwner(std::uint32_t id) noexcept {
  const std::uint32_t previous = detail::tls_fd_owner;
  detail::tls_fd_owner = id;
  return previous;
}

class ThreadFdOwnerScope {
 public:
  explicit ThreadFdOwnerScope(std::uint32_t id) noexcept
      : previous_(SetThreadFdOwner(id)) {}
  ~ThreadFdOwnerScope() { SetThreadFdOwner(previous_); }
  ThreadFdOwnerScope(const ThreadFdOwnerScope&) = delete;
  ThreadFdOwnerScope& operator=(const ThreadFdOwnerScope&) = delete;

 private:
  const std::uint32_t previous_;
};

}  // namespace leakprobe
