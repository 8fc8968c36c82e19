#include "util/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "torchcachex/errors.h"

namespace torchcachex {
namespace {

constexpr size_t kWriteBufferBytes = size_t{1} << 20;
// Appends at least this large bypass the buffer and go straight to write(2).
constexpr size_t kDirectWriteBytes = size_t{64} << 10;

[[noreturn]] void ThrowErrno(const std::string& what, const std::string& path, int err) {
  std::string message = what + " '" + path + "': " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) {
    message += " (free some space, then call flush() again: rows already flushed are intact and "
               "unflushed rows are kept in memory)";
  } else if (err == EFBIG) {
    message += " (a file size limit was hit (RLIMIT_FSIZE, `ulimit -f`, or the file system's "
               "maximum): raise it or use a smaller flush_every, then call flush() again: rows "
               "already flushed are intact and unflushed rows are kept in memory)";
  } else if (err == ENOENT && (what == "cannot create" || what == "cannot create directory")) {
    message += " (the cache directory no longer exists: was it removed while the cache was open? "
               "Rows already served from memory stay readable; recreate the directory and call "
               "flush() again, or open a new backend)";
  } else if (err == EROFS || err == EACCES || err == EPERM) {
    message += " (the cache directory is not writable: fix its permissions, choose another "
               "cache_dir, or open it on a non-writer rank to only read)";
  }
  throw IOError(message);
}

}  // namespace

std::shared_ptr<MappedFile> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowErrno("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    ThrowErrno("cannot stat", path, err);
  }
  size_t size = static_cast<size_t>(st.st_size);
  const std::byte* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      ThrowErrno("cannot mmap", path, err);
    }
    data = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  return std::shared_ptr<MappedFile>(new MappedFile(data, size));
}

void MappedFile::AdviseScatteredReads() const {
  if (data_ == nullptr) return;
  ::madvise(const_cast<std::byte*>(data_), size_, MADV_RANDOM);
}

void MappedFile::AdviseRowReads() const {
  if (data_ == nullptr) return;
  ::madvise(const_cast<std::byte*>(data_), size_, MADV_NORMAL);
  constexpr size_t kHugePageBytes = size_t{2} << 20;
  if (size_ >= kHugePageBytes) ::madvise(const_cast<std::byte*>(data_), size_, MADV_HUGEPAGE);
}

void MappedFile::Prefetch(std::span<const std::byte> bytes) const {
  if (bytes.empty()) return;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(bytes.data()) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(bytes.data() + bytes.size());
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

std::unique_ptr<WritableFile> WritableFile::Create(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) ThrowErrno("cannot create", path, errno);
  return std::unique_ptr<WritableFile>(new WritableFile(fd, path));
}

WritableFile::WritableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {
  buffer_.reserve(kWriteBufferBytes);
}

WritableFile::~WritableFile() {
  if (fd_ >= 0) ::close(fd_);
}

void WritableFile::WriteAll(const std::byte* data, size_t size) {
  constexpr size_t kWritebackBytes = size_t{1} << 20;
  while (size > 0) {
    ssize_t n = ::write(fd_, data, std::min(size, kWritebackBytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno("cannot write", path_, errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
    if (written_ - writeback_started_ >= kWritebackBytes) {
      // A hint: errors surface from fsync in Sync.
      ::sync_file_range(fd_, static_cast<off64_t>(writeback_started_),
                        static_cast<off64_t>(written_ - writeback_started_), SYNC_FILE_RANGE_WRITE);
      writeback_started_ = written_;
    }
  }
}

void WritableFile::FlushBuffer() {
  if (buffer_.empty()) return;
  WriteAll(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void WritableFile::Append(std::span<const std::byte> data) {
  if (data.size() >= kDirectWriteBytes) {
    FlushBuffer();
    WriteAll(data.data(), data.size());
    return;
  }
  if (buffer_.size() + data.size() > kWriteBufferBytes) FlushBuffer();
  buffer_.insert(buffer_.end(), data.begin(), data.end());
}

void WritableFile::Sync() {
  FlushBuffer();
  if (::fsync(fd_) != 0) ThrowErrno("cannot fsync", path_, errno);
}

void WritableFile::Close() {
  FlushBuffer();
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) ThrowErrno("cannot close", path_, errno);
}

std::unique_ptr<FileLock> FileLock::TryAcquire(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) ThrowErrno("cannot open lock file", path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return nullptr;
    ThrowErrno("cannot lock", path, err);
  }
  return std::unique_ptr<FileLock>(new FileLock(fd));
}

FileLock::~FileLock() {
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
}

std::string ReadFileToString(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowErrno("cannot open", path, errno);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ThrowErrno("cannot read", path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

namespace {
std::string ParentDirectory(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
}  // namespace

void WriteFileAtomically(const std::string& path, std::string_view contents, bool durable) {
  // Unique per process and call: concurrent writers of the same file (threads
  // or processes) must not share a temporary file.
  static std::atomic<uint64_t> counter{0};
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  RemoveFile(tmp);
  {
    auto file = WritableFile::Create(tmp);
    try {
      file->Append(std::as_bytes(std::span(contents.data(), contents.size())));
      if (durable) file->Sync();
      file->Close();
    } catch (...) {
      file.reset();
      RemoveFile(tmp);
      throw;
    }
  }
  RenameFile(tmp, path);
  if (durable) SyncDirectory(ParentDirectory(path));
}

void SyncFileAndDirectory(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowErrno("cannot open", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) ThrowErrno("cannot fsync", path, err);
  SyncDirectory(ParentDirectory(path));
}

void RenameFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) ThrowErrno("cannot rename to '" + to + "'", from, errno);
}

void RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) ThrowErrno("cannot remove", path, errno);
}

void SyncDirectory(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowErrno("cannot open directory", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) ThrowErrno("cannot fsync directory", path, err);
}

void CreateDirectories(const std::string& path) {
  if (path.empty()) return;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw IOError("'" + path + "' exists and is not a directory");
    return;
  }
  auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) CreateDirectories(path.substr(0, slash));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) ThrowErrno("cannot create directory", path, errno);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

uint64_t FileSizeOrZero(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

bool IsWritableDirectory(const std::string& path) { return ::access(path.c_str(), W_OK) == 0; }

std::vector<std::string> ListDirectory(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) ThrowErrno("cannot list directory", path, errno);
  std::vector<std::string> names;
  while (struct dirent* entry = ::readdir(dir)) {
    std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  ::closedir(dir);
  return names;
}

int64_t ModificationTimeNs(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) ThrowErrno("cannot stat", path, errno);
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

}  // namespace torchcachex
