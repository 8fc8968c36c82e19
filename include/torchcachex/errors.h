// Exceptions thrown by the core. Each message says what went wrong and what
// to do about it; the Python bindings map each class to a Python exception.
#pragma once

#include <stdexcept>
#include <string>

namespace torchcachex {

// Base class of every error the core throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The caller passed something invalid (bad module_id, mismatched lengths...).
class InvalidArgumentError : public Error {
 public:
  using Error::Error;
};

// The output being stored does not match the cache's schema.
class SchemaMismatchError : public Error {
 public:
  using Error::Error;
};

// A file on disk is malformed (truncated, corrupt, not Arrow IPC...).
class CorruptFileError : public Error {
 public:
  using Error::Error;
};

// The operating system refused an I/O operation (disk full, read-only...).
class IOError : public Error {
 public:
  using Error::Error;
};

// The store was used after Close().
class ClosedError : public Error {
 public:
  using Error::Error;
};

}  // namespace torchcachex
