// Helpers shared by the C++ tests: a temporary directory removed at scope
// exit, and the schema of a cache of single float32 tensors.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "torchcachex/schema.h"

namespace torchcachex::testing {

// A fresh directory under the system temp dir; removed with its contents
// when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tcx_test_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The schema of a cache whose output is one float32 tensor per sample.
inline Schema FloatSchema() {
  Schema schema;
  schema.output_structure = "tensor";
  schema.leaves.push_back({"", LeafKind::kTensor, DType::kFloat32});
  return schema;
}

}  // namespace torchcachex::testing
