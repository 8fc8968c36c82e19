// Faulting pages in ahead of use.
#pragma once

#include <cstddef>

namespace torchcachex {

// Has the kernel fault in, writable, the whole pages within [data, data +
// bytes) (madvise MADV_POPULATE_WRITE; a no-op where unsupported). One call
// instead of a page fault per 4 KB on first write: for a 4 MB buffer here,
// 0.8-1.1 ms against 1.3-2.5 ms. Contents are unchanged (fresh pages are zero).
void PopulateForWrite(void* data, size_t bytes);

}  // namespace torchcachex
