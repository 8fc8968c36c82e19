#include "store/segment_opener.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include "torchcachex/errors.h"

namespace torchcachex {

SegmentOpener::SegmentOpener(size_t count, size_t threads, size_t lookahead, OpenFn open)
    : count_(count), lookahead_(std::max<size_t>(lookahead, 1)), open_(std::move(open)),
      opened_(count), ready_(count, false) {
  if (threads <= 1) return;
  helpers_.reserve(threads);
  try {
    for (size_t t = 0; t < threads; ++t) {
      helpers_.emplace_back([this] {
        pthread_setname_np(pthread_self(), "tcx-opener");  // shows in top, perf and py-spy
        Work();
      });
    }
  } catch (...) {  // no thread could be started: stop those that were
    Stop();
    throw;
  }
}

SegmentOpener::~SegmentOpener() { Stop(); }

void SegmentOpener::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (std::thread& helper : helpers_) helper.join();
  helpers_.clear();
}

SegmentOpener::Opened SegmentOpener::OpenOne(size_t i) {
  Opened opened;
  try {
    opened.segment = open_(i);
  } catch (const Error& e) {
    opened.error = e.what();
  }
  return opened;
}

void SegmentOpener::Work() {
  std::unique_lock lock(mu_);
  while (true) {
    changed_.wait(lock, [&] {
      return stopping_ || failure_ || next_to_open_ >= count_ ||
             next_to_open_ < next_to_return_ + lookahead_;
    });
    if (stopping_ || failure_ || next_to_open_ >= count_) return;
    const size_t i = next_to_open_++;
    lock.unlock();
    Opened opened;
    std::exception_ptr failure;
    try {
      opened = OpenOne(i);
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    if (failure) {
      if (!failure_) failure_ = failure;
    } else {
      opened_[i] = std::move(opened);
      ready_[i] = true;
    }
    changed_.notify_all();
  }
}

SegmentOpener::Opened SegmentOpener::Next() {
  std::unique_lock lock(mu_);
  const size_t i = next_to_return_;
  if (i >= count_) throw InvalidArgumentError("SegmentOpener::Next called past the end");
  if (helpers_.empty()) {
    ++next_to_return_;
    lock.unlock();
    return OpenOne(i);
  }
  changed_.wait(lock, [&] { return failure_ || ready_[i]; });
  if (failure_) std::rethrow_exception(failure_);
  ++next_to_return_;
  changed_.notify_all();  // room for one more file ahead
  return std::move(opened_[i]);
}

}  // namespace torchcachex
