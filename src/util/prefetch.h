// Prefetch: a hint to bring one cache line into every cache level ahead of
// its use (software pipelining of random accesses to index slots and key
// columns; the checksum's input stream).
//
// On x86-64 the instruction is emitted with inline asm. GCC 12 removes
// __builtin_prefetch from some inlined, guarded call sites (KeyIndex's
// PrefetchHome compiled to a bare `ret` at -O2, and at -O3 once it fetched two
// lines), silently turning a pipelined loop back into a chain of misses.
#pragma once

namespace torchcachex {

inline void Prefetch(const void* address) {
#if defined(__x86_64__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(address)));
#else
  __builtin_prefetch(address);
#endif
}

}  // namespace torchcachex
