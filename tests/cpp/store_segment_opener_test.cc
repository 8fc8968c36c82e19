// SegmentOpener: files come back in list order, each opened once, with at
// most `lookahead` opened ahead of the consumer; unreadable files are
// reported per file and any other failure ends the open. Named store_* so the
// ThreadSanitizer build (scripts/sanitize.sh tsan) runs it.
#include "store/segment_opener.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "torchcachex/errors.h"

namespace torchcachex {
namespace {

// Every file is "unreadable" with its position as the error, so the order in
// which Next returns them is visible.
struct CountingOpen {
  explicit CountingOpen(size_t count) : opens(count) {
    for (auto& n : opens) n = 0;
  }
  std::vector<std::atomic<int>> opens;
  std::atomic<size_t> returned{0};
  std::atomic<size_t> most_ahead{0};  // max of i - returned over all opens

  std::unique_ptr<Segment> operator()(size_t i) {
    ++opens[i];
    const size_t ahead = i - returned.load();
    size_t seen = most_ahead.load();
    while (ahead > seen && !most_ahead.compare_exchange_weak(seen, ahead)) {
    }
    throw CorruptFileError(std::to_string(i));
  }
};

void ExpectInOrderOnce(size_t count, size_t threads, size_t lookahead) {
  CountingOpen open(count);
  {
    SegmentOpener opener(count, threads, lookahead, [&](size_t i) { return open(i); });
    for (size_t i = 0; i < count; ++i) {
      SegmentOpener::Opened opened = opener.Next();
      EXPECT_EQ(opened.segment, nullptr);
      EXPECT_EQ(opened.error, std::to_string(i));
      open.returned = i + 1;
    }
    EXPECT_THROW(opener.Next(), InvalidArgumentError);
  }
  for (size_t i = 0; i < count; ++i) EXPECT_EQ(open.opens[i].load(), 1) << i;
  // File i may be opened once i - lookahead files have been returned.
  EXPECT_LE(open.most_ahead.load(), lookahead);
}

TEST(SegmentOpenerTest, ReturnsEveryFileOnceInOrderWithBoundedLookahead) {
  ExpectInOrderOnce(/*count=*/500, /*threads=*/4, /*lookahead=*/3);
  ExpectInOrderOnce(/*count=*/500, /*threads=*/8, /*lookahead=*/64);
}

TEST(SegmentOpenerTest, WithoutHelpersNextOpensEachFileItself) {
  ExpectInOrderOnce(/*count=*/20, /*threads=*/1, /*lookahead=*/4);
}

TEST(SegmentOpenerTest, AFailureOtherThanAnUnreadableFileEndsTheOpen) {
  std::atomic<int> opens{0};
  SegmentOpener opener(1000, 4, 16, [&](size_t i) -> std::unique_ptr<Segment> {
    ++opens;
    if (i == 5) throw std::runtime_error("out of memory");
    throw CorruptFileError("unreadable");
  });
  // Results before file 5 may or may not come first; file 5's never does,
  // nor any later one.
  size_t returned = 0;
  EXPECT_THROW(
      {
        for (; returned < 1000; ++returned) EXPECT_EQ(opener.Next().error, "unreadable");
      },
      std::runtime_error);
  EXPECT_LE(returned, 5u);
  EXPECT_LT(opens.load(), 1000);  // the helpers stopped opening
}

TEST(SegmentOpenerTest, AnEmptyListOpensNothing) {
  SegmentOpener opener(0, 8, 16, [](size_t) -> std::unique_ptr<Segment> {
    ADD_FAILURE() << "nothing to open";
    return nullptr;
  });
  EXPECT_THROW(opener.Next(), InvalidArgumentError);
}

}  // namespace
}  // namespace torchcachex
