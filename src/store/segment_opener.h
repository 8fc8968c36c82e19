// SegmentOpener: opens a list of segment files on helper threads and hands
// them to one consumer in list order, so the consumer can index file i while
// files i + 1, i + 2, ... are being opened. Opening a cache thus overlaps
// reading and validating its files (I/O-bound when the page cache is cold)
// with building the index (bound by memory latency).
//
// Invariants: at most `lookahead` files are opened beyond the last one
// returned by Next (this bounds the number of live mappings); Next returns
// the files in list order, each exactly once.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/segment.h"

namespace torchcachex {

class SegmentOpener {
 public:
  // Opens one file of the list by its position (for example Segment::Open).
  // torchcachex::Error means the file is unreadable; any other exception is
  // fatal for the whole open.
  using OpenFn = std::function<std::unique_ptr<Segment>(size_t)>;

  // One opened file: the segment, or why it is unreadable.
  struct Opened {
    std::unique_ptr<Segment> segment;
    std::string error;
  };

  // Starts opening files 0 .. count - 1 on up to `threads` helper threads
  // (none for 0 or 1: Next then opens each file itself).
  SegmentOpener(size_t count, size_t threads, size_t lookahead, OpenFn open);
  // Stops the helpers (files opened but never returned are closed).
  ~SegmentOpener();
  SegmentOpener(const SegmentOpener&) = delete;
  SegmentOpener& operator=(const SegmentOpener&) = delete;

  // The next file in list order, once opened (at most `count` calls).
  // Rethrows a fatal exception of any helper.
  Opened Next();

 private:
  void Work();
  void Stop();  // makes the helpers return, and joins them
  Opened OpenOne(size_t i);

  const size_t count_;
  const size_t lookahead_;
  const OpenFn open_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Opened> opened_;    // filled by helpers, moved out by Next
  std::vector<bool> ready_;
  size_t next_to_open_ = 0;       // guarded by mu_
  size_t next_to_return_ = 0;     // guarded by mu_
  bool stopping_ = false;         // guarded by mu_
  std::exception_ptr failure_;    // guarded by mu_
  std::vector<std::thread> helpers_;
};

}  // namespace torchcachex
