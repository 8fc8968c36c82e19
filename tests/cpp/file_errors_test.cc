// Resource faults at the file layer: every IOError names the path, the OS
// reason and what to do (tests/python/test_resource_faults.py covers the store).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "torchcachex/errors.h"
#include "torchcachex/store.h"
#include "util/file.h"

namespace torchcachex {
namespace {

std::filesystem::path TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("torchcachex_file_errors_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(FileErrors, CreateInADeletedDirectorySaysTheDirectoryIsGone) {
  auto dir = TempDir("deleted");
  std::filesystem::remove_all(dir);
  try {
    WritableFile::Create((dir / "segment_0.arrow.tmp").string());
    FAIL() << "created a file in a deleted directory";
  } catch (const IOError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("segment_0.arrow.tmp"), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
    EXPECT_NE(message.find("no longer exists"), std::string::npos) << message;
  }
}

TEST(FileErrors, FileSizeLimitSaysWhatToDo) {
  auto dir = TempDir("fsize");
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);  // write(2) fails with EFBIG instead
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    auto file = WritableFile::Create((dir / "big.tmp").string());
    std::vector<std::byte> data(size_t{4} << 20);
    file->Append(data);
    file->Sync();
  } catch (const IOError& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);
  std::filesystem::remove_all(dir);
  ASSERT_FALSE(message.empty()) << "writing past RLIMIT_FSIZE did not fail";
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  EXPECT_NE(message.find("file size limit"), std::string::npos) << message;
  EXPECT_NE(message.find("flush() again"), std::string::npos) << message;
}

TEST(FileErrors, CacheDirWithANulIsRejectedBeforeTouchingTheDisk) {
  auto dir = TempDir("nul");
  // The OS would cut "<dir>/a\0b" at the NUL and create "<dir>/a" instead.
  std::string cache_dir = (dir / "a").string() + std::string(1, '\0') + "b";
  EXPECT_THROW(Store::Open(cache_dir, "m_v1", Options{}), InvalidArgumentError);
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torchcachex
