// Using the torchcachex engine from plain C++ (no Python, no torch):
// cache 512-dim float32 features per sample id, read them back in a batch.
//
//   ./store_example [cache_dir]
//
// Run it twice: the second run finds every feature already cached.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "torchcachex/store.h"

using namespace torchcachex;

int main(int argc, char** argv) {
  const std::string cache_dir = argc > 1 ? argv[1] : "./cache_cpp_example";
  constexpr int kSamples = 1024, kDim = 512;

  auto store = Store::Open(cache_dir, "toy_features_v1", Options{});
  Schema schema;
  schema.output_structure = "tensor";
  schema.leaves.push_back({"", LeafKind::kTensor, DType::kFloat32});
  store->EnsureSchema(schema);

  std::vector<std::string> ids;
  std::vector<std::string_view> keys;
  for (int i = 0; i < kSamples; ++i) ids.push_back("sample_" + std::to_string(i));
  for (const auto& id : ids) keys.push_back(id);

  auto start = std::chrono::steady_clock::now();
  GetResult result = store->GetBatch(keys);
  std::vector<std::string_view> missing;
  for (int i = 0; i < kSamples; ++i) {
    if (!result.found[i]) missing.push_back(keys[i]);
  }
  if (!missing.empty()) {
    // "Compute" the missing features and cache them.
    std::vector<float> features(missing.size() * kDim);
    for (size_t r = 0; r < missing.size(); ++r) {
      for (int j = 0; j < kDim; ++j) features[r * kDim + j] = static_cast<float>(r) + j * 1e-3f;
    }
    LeafRows rows;
    rows.is_dense = true;
    rows.base = reinterpret_cast<const std::byte*>(features.data());
    rows.row_bytes = rows.row_stride = kDim * sizeof(float);
    rows.shape = {kDim};
    store->Put(missing, std::span(&rows, 1));
    store->Flush();  // durable from here on
  }
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  Stats stats = store->GetStats();
  std::printf("%d samples: %zu cached before this run, %zu computed now (%.2f ms)\n", kSamples,
              kSamples - missing.size(), missing.size(), ms);
  std::printf("cache at %s: %llu entries in %llu segment(s)\n", store->path().c_str(),
              static_cast<unsigned long long>(stats.entries), static_cast<unsigned long long>(stats.segments));
  store->Close();
  return 0;
}
