#include "leakprobe/runtime/table_map.h"

namespace leakprobe {
namespace detail {

__thread TableReserve* tls_table_reserve __attribute__((tls_model("initial-exec"))) =
    nullptr;

void* TableAllocate(std::size_t bytes) {
  if (void* p = ::operator new(bytes, std::nothrow)) return p;
  if (TableReserve* reserve = tls_table_reserve) {
    if (void* p = reserve->Take(bytes)) return p;
  }
  throw std::bad_alloc();
}

}  // namespace detail

bool TableReserve::Hold(std::size_t bytes) noexcept {
  if (memory_ != nullptr && bytes_ >= bytes) return true;
  Release();
  memory_ = ::operator new(bytes, std::nothrow);
  if (memory_ == nullptr) return false;
  bytes_ = bytes;
  return true;
}

void* TableReserve::Take(std::size_t bytes) noexcept {
  if (memory_ == nullptr || bytes > bytes_) return nullptr;
  void* p = memory_;
  memory_ = nullptr;
  bytes_ = 0;
  return p;  // freed by the map with operator delete, like its own blocks
}

void TableReserve::Release() noexcept {
  ::operator delete(memory_);
  memory_ = nullptr;
  bytes_ = 0;
}

}  // namespace leakprobe
