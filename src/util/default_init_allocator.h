// DefaultInitAllocator: an allocator whose value-less construct() leaves
// trivial elements uninitialized, so that vector::resize() of a buffer about
// to be overwritten does not first write zeros to it.
#pragma once

#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace torchcachex {

template <typename T, typename Base = std::allocator<T>>
class DefaultInitAllocator : public Base {
  using Traits = std::allocator_traits<Base>;

 public:
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U, typename Traits::template rebind_alloc<U>>;
  };

  using Base::Base;

  template <typename U>
  void construct(U* ptr) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(ptr)) U;  // default-init: no zeroing for trivial U
  }

  template <typename U, typename... Args>
  void construct(U* ptr, Args&&... args) {
    Traits::construct(static_cast<Base&>(*this), ptr, std::forward<Args>(args)...);
  }
};

}  // namespace torchcachex
