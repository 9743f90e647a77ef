// leakprobe/runtime/table_map.h — hash maps for the tables that hooks insert
// into (heap blocks and stacks, the stack table's indexes), whose inserts
// either succeed or change nothing, even when memory runs out.
//
//   TableMap<std::uintptr_t, Block> blocks_;
//   TableReserve blocks_reserve_;
//   ReservedInsert insert(&blocks_reserve_, blocks_);
//   if (!insert.ok()) return Drop();        // out of memory: nothing changed
//   blocks_.emplace(key, block);            // a growth draws on the reserve
//
// Why: abseil's flat_hash_map is not exception-safe when it grows (the
// Debian 20220623 raw_hash_set::resize stores the new capacity, then
// allocates: a std::bad_alloc there leaves a map whose capacity and arrays
// disagree). Catching the exception is not enough, so the allocation must
// not fail inside the map: a TableReserve holds, ahead of each insert,
// memory for the map's next growth, and TableAllocator falls back on it
// when the allocator has nothing. When even the reserve cannot be had,
// ReservedInsert says so and the caller drops what it wanted to insert.
//
// Cost: a compare per insert; one extra allocation per growth of a map (the
// reserve for the next one, mostly untouched pages).
// Thread-safety: a TableReserve is protected by the lock of its map; the
// fallback pointer is per thread.
#pragma once

#include <cstddef>
#include <functional>
#include <new>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace leakprobe {

class TableReserve;

namespace detail {

// The reserve the current thread's ReservedInsert may draw on, or null.
extern __thread TableReserve* tls_table_reserve
    __attribute__((tls_model("initial-exec")));

// operator new (nothrow), then the current reserve; std::bad_alloc when
// both are out (never inside a ReservedInsert that is ok()).
void* TableAllocate(std::size_t bytes);

}  // namespace detail

template <class T>
struct TableAllocator {
  using value_type = T;
  TableAllocator() noexcept = default;
  template <class U>
  TableAllocator(const TableAllocator<U>& /*other*/) noexcept {}  // NOLINT: rebinding
  T* allocate(std::size_t n) {
    return static_cast<T*>(detail::TableAllocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t /*n*/) noexcept { ::operator delete(p); }
  template <class U>
  bool operator==(const TableAllocator<U>& /*other*/) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const TableAllocator<U>& /*other*/) const noexcept {
    return false;
  }
};

// absl::flat_hash_map with its default hash and equality (heterogeneous
// lookup of string keys included) and the reserve-backed allocator.
template <class K, class V>
using TableMap = absl::flat_hash_map<K, V, absl::container_internal::hash_default_hash<K>,
                                     absl::container_internal::hash_default_eq<K>,
                                     TableAllocator<std::pair<const K, V>>>;

// Memory for one growth of one map.
class TableReserve {
 public:
  TableReserve() = default;
  ~TableReserve() { Release(); }
  TableReserve(const TableReserve&) = delete;
  TableReserve& operator=(const TableReserve&) = delete;

  // Holds enough for the next growth of `map`; false when it cannot.
  template <class Map>
  bool Cover(const Map& map) noexcept {
    using Slot = typename Map::value_type;
    // abseil grows a capacity c to 2c + 1 (0 to 1); the backing array holds
    // a control byte per slot, 16 more, alignment padding and the slots.
    const std::size_t next = 2 * map.capacity() + 1;
    return Hold(next * (sizeof(Slot) + 1) + 32 + alignof(Slot));
  }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  friend void* detail::TableAllocate(std::size_t bytes);
  bool Hold(std::size_t bytes) noexcept;
  void* Take(std::size_t bytes) noexcept;
  void Release() noexcept;

  void* memory_ = nullptr;
  std::size_t bytes_ = 0;
};

// One insert into a TableMap: covers its next growth, and lets the map draw
// on the reserve while the scope lives. Insert only when ok().
class ReservedInsert {
 public:
  template <class Map>
  ReservedInsert(TableReserve* reserve, const Map& map) noexcept
      : ok_(reserve->Cover(map)), previous_(detail::tls_table_reserve) {
    if (ok_) detail::tls_table_reserve = reserve;
  }
  ~ReservedInsert() { detail::tls_table_reserve = previous_; }
  ReservedInsert(const ReservedInsert&) = delete;
  ReservedInsert& operator=(const ReservedInsert&) = delete;

  bool ok() const noexcept { return ok_; }

 private:
  const bool ok_;
  TableReserve* const previous_;
};

}  // namespace leakprobe
