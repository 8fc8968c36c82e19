// Returning freed heap memory to the operating system; faulting pages in ahead of use.
#pragma once

#include <cstddef>

namespace torchcachex {

// Asks the C library to give freed heap pages back to the OS (glibc's
// malloc_trim; a no-op elsewhere). A long fill allocates and frees segment-
// sized buffers between long-lived objects, and glibc otherwise keeps the
// freed pages: 1M rows of 2 KB left ~220 MB of free heap resident, against
// ~45 MB when trimmed every few segments. Costs tens of microseconds.
void ReleaseFreeHeapMemory();

// Has the kernel fault in, writable, the whole pages within [data, data +
// bytes) (madvise MADV_POPULATE_WRITE; a no-op where unsupported). One call
// instead of a page fault per 4 KB on first write: for a 4 MB buffer here,
// 0.8-1.1 ms against 1.3-2.5 ms. Contents are unchanged (fresh pages are zero).
void PopulateForWrite(void* data, size_t bytes);

}  // namespace torchcachex
