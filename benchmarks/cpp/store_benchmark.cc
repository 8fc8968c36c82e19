// Microbenchmarks of the torchcachex engine (Google Benchmark).
//
//   cmake -S . -B build/bench -DTORCHCACHEX_BUILD_BENCHMARKS=ON \
//         -DTORCHCACHEX_BUILD_PYTHON=OFF -DTORCHCACHEX_BUILD_TESTS=OFF
//   cmake --build build/bench --target store_benchmark
//   build/bench/store_benchmark --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// What is measured (keys are decimal strings, as the Python front sends
// integer ids; rows are float32 tensors of `row_bytes` bytes):
//
//   BM_HashKey            XXH64 of one key                               ns/key
//   BM_IndexFind          KeyIndex::Find of a present key (1M entries)   ns/key
//   BM_GetBatchHits       Store::GetBatch, every key a hit, random keys,
//                         rows in flushed segments of a reopened store    ns/row
//   BM_Gather             CopyTensorCell of pre-located rows into one
//                         dense buffer (the copy part of GetBatch)        ns/row
//   BM_MemcpyGather       plain memcpy of rows at the same random offsets
//                         (the physical floor for BM_Gather)              ns/row
//   BM_Encode             format::WriteSegment of a 2048-row table into a
//                         memory sink (preallocated buffer, memcpy)       bytes/s
//   BM_Memcpy             memcpy of the same number of bytes              bytes/s
//   BM_Decode             format::ParseSegment of that file (in memory)   ns/segment, rows/s
//   BM_SegmentOpen        Segment::Open: mmap + parse + validate a
//                         2048-row segment file (page cache warm)        ns/segment
//   BM_OpenStore          Store::Open of a flushed 1M-entry cache          ms, ns/entry
//   BM_Put                Store::Put of 1024 new rows, async writer,
//                         default options (segment files written on the
//                         writer thread, fsync included)                 ns/row
//
// Every benchmark uses one thread. Caches live in a temporary directory
// (TMPDIR or /tmp, override with TORCHCACHEX_BENCH_DIR) removed at exit.
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "format/ipc_reader.h"
#include "format/ipc_writer.h"
#include "index/key_index.h"
#include "store/batch_view.h"
#include "store/pending_batch.h"
#include "store/segment.h"
#include "torchcachex/store.h"
#include "util/hash.h"

namespace torchcachex {
namespace {

namespace fs = std::filesystem;

// ----------------------------------------------------------------- helpers

// The benchmark's scratch directory, removed at exit.
class ScratchDir {
 public:
  static const std::string& Path() {
    static ScratchDir dir;
    return dir.path_;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }

 private:
  ScratchDir() {
    const char* base = getenv("TORCHCACHEX_BENCH_DIR");
    std::string parent = base ? base : fs::temp_directory_path().string();
    std::string tmpl = parent + "/tcx_store_benchmark_XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    path_ = tmpl;
  }
  std::string path_;
};

std::string Decimal(int64_t value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, end);
}

Schema FloatSchema() {
  Schema schema;
  schema.output_structure = "tensor";
  schema.leaves.push_back({"", LeafKind::kTensor, DType::kFloat32});
  return schema;
}

// Keys "first" .. "first + count - 1" and their views.
struct KeySet {
  std::vector<std::string> keys;
  std::vector<std::string_view> views;
  KeySet(int64_t first, int64_t count) {
    keys.reserve(count);
    for (int64_t k = first; k < first + count; ++k) keys.push_back(Decimal(k));
    views.assign(keys.begin(), keys.end());
  }
};

// Dense float32 rows of `row_bytes` bytes each; row r starts with value r.
struct DenseRows {
  std::vector<float> values;
  LeafRows leaf;
  DenseRows(int64_t count, size_t row_bytes, int64_t first = 0) {
    const size_t dim = row_bytes / sizeof(float);
    values.resize(static_cast<size_t>(count) * dim);
    for (int64_t r = 0; r < count; ++r) {
      for (size_t j = 0; j < dim; ++j) values[r * dim + j] = static_cast<float>(first + r) + 1e-3f * j;
    }
    leaf.is_dense = true;
    leaf.base = reinterpret_cast<const std::byte*>(values.data());
    leaf.row_bytes = leaf.row_stride = row_bytes;
    leaf.shape = {static_cast<int64_t>(dim)};
  }
};

// Random positions in [0, n).
std::vector<int64_t> RandomPositions(size_t count, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, n - 1);
  std::vector<int64_t> out(count);
  for (auto& p : out) p = dist(rng);
  return out;
}

void SetPerRowCounters(benchmark::State& state, int64_t rows_per_iteration, size_t row_bytes) {
  state.SetItemsProcessed(state.iterations() * rows_per_iteration);
  state.SetBytesProcessed(state.iterations() * rows_per_iteration * static_cast<int64_t>(row_bytes));
  state.counters["ns_per_row"] = benchmark::Counter(
      static_cast<double>(rows_per_iteration), benchmark::Counter::kIsIterationInvariantRate |
                                                   benchmark::Counter::kInvert);
}

// A flushed cache of `entries` rows of `row_bytes`, reopened (rows live in
// memory-mapped segments, as in a second training run). Built once per shape.
Store& PersistedStore(int64_t entries, size_t row_bytes) {
  static std::map<std::pair<int64_t, size_t>, std::unique_ptr<Store>> stores;
  auto key = std::make_pair(entries, row_bytes);
  auto it = stores.find(key);
  if (it != stores.end()) return *it->second;
  const std::string module_id = "bench_" + Decimal(entries) + "_" + Decimal(static_cast<int64_t>(row_bytes));
  {
    auto store = Store::Open(ScratchDir::Path(), module_id, Options{});
    store->EnsureSchema(FloatSchema());
    constexpr int64_t kChunk = 65536;
    for (int64_t first = 0; first < entries; first += kChunk) {
      const int64_t count = std::min(kChunk, entries - first);
      KeySet keys(first, count);
      DenseRows rows(count, row_bytes, first);
      store->Put(keys.views, std::span(&rows.leaf, 1));
    }
    store->Close();
  }
  auto store = Store::Open(ScratchDir::Path(), module_id, Options{});
  return *(stores[key] = std::move(store));
}

// ------------------------------------------------------------ hashing, index

void BM_HashKey(benchmark::State& state) {
  KeySet keys(1'000'000, 4096);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(HashKey(keys.views[i]));
    i = (i + 1) & 4095;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HashKey);

void BM_IndexFind(benchmark::State& state) {
  const int64_t entries = state.range(0);
  KeySet keys(0, entries);
  KeyIndex index;
  KeyIndex::KeyAt key_at = [&](RowLocation loc) { return keys.views[loc.row]; };
  index.Reserve(static_cast<size_t>(entries));
  for (int64_t k = 0; k < entries; ++k) {
    index.Upsert(HashKey(keys.views[k]), keys.views[k], RowLocation{0, static_cast<uint32_t>(k)}, key_at);
  }
  const std::vector<int64_t> probes = RandomPositions(8192, entries, 1);
  size_t i = 0;
  for (auto _ : state) {
    std::string_view key = keys.views[probes[i]];
    benchmark::DoNotOptimize(index.Find(HashKey(key), key, key_at));
    i = (i + 1) & 8191;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["index_bytes_per_entry"] = static_cast<double>(index.memory_bytes()) / entries;
}
BENCHMARK(BM_IndexFind)->Arg(10'000)->Arg(1'000'000);

// ------------------------------------------------------------------ lookup

// Args: entries, row_bytes, batch.
void BM_GetBatchHits(benchmark::State& state) {
  const int64_t entries = state.range(0);
  const size_t row_bytes = static_cast<size_t>(state.range(1));
  const int64_t batch = state.range(2);
  Store& store = PersistedStore(entries, row_bytes);
  // 64 batches of random present keys, cycled.
  constexpr int kBatches = 64;
  std::vector<std::vector<std::string>> keys(kBatches);
  std::vector<std::vector<std::string_view>> batches(kBatches);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> dist(0, entries - 1);
  for (int b = 0; b < kBatches; ++b) {
    for (int64_t i = 0; i < batch; ++i) keys[b].push_back(Decimal(dist(rng)));
    batches[b].assign(keys[b].begin(), keys[b].end());
  }
  int b = 0;
  for (auto _ : state) {
    GetResult result = store.GetBatch(batches[b]);
    benchmark::DoNotOptimize(result.leaves[0].dense.get());
    b = (b + 1) % kBatches;
  }
  SetPerRowCounters(state, batch, row_bytes);
}
BENCHMARK(BM_GetBatchHits)
    ->ArgNames({"entries", "row_bytes", "batch"})
    ->Args({1'000'000, 16, 1024})
    ->Args({1'000'000, 16, 256})
    ->Args({10'000, 16, 1024})
    ->Args({65'536, 2048, 256})
    ->Args({8'192, 16384, 256});

// ------------------------------------------------------------------ gather

// A pending batch of `rows` rows of `row_bytes` (the same BatchView the
// segments use), and random rows to copy out of it.
struct GatherFixture {
  std::unique_ptr<PendingBatch> batch;
  std::vector<int64_t> rows;
  GatherFixture(int64_t count, size_t row_bytes, int64_t gather) {
    batch = std::make_unique<PendingBatch>(FloatSchema());
    KeySet keys(0, count);
    DenseRows dense(count, row_bytes);
    for (int64_t i = 0; i < count; ++i) batch->Append(keys.views[i], std::span(&dense.leaf, 1), i);
    batch->UpdateView();
    rows = RandomPositions(static_cast<size_t>(gather), count, 3);
  }
};

// Args: row_bytes, batch. 1M rows (16 B) or 64 MiB of rows to gather from.
void BM_Gather(benchmark::State& state) {
  const size_t row_bytes = static_cast<size_t>(state.range(0));
  const int64_t batch = state.range(1);
  const int64_t count = std::min<int64_t>(1'000'000, (int64_t{64} << 20) / static_cast<int64_t>(row_bytes));
  GatherFixture fixture(count, row_bytes, batch * 16);
  const LeafView& leaf = fixture.batch->view().leaves[0];
  std::vector<std::byte> out(static_cast<size_t>(batch) * row_bytes);
  int64_t offset = 0;
  for (auto _ : state) {
    for (int64_t i = 0; i < batch; ++i) {
      CopyTensorCell(leaf, fixture.rows[offset + i], out.data() + i * row_bytes);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    offset = (offset + batch) % (batch * 16);
  }
  SetPerRowCounters(state, batch, row_bytes);
}
BENCHMARK(BM_Gather)->ArgNames({"row_bytes", "batch"})->Args({16, 1024})->Args({16, 256})->Args({2048, 256})->Args({16384, 256});

void BM_MemcpyGather(benchmark::State& state) {
  const size_t row_bytes = static_cast<size_t>(state.range(0));
  const int64_t batch = state.range(1);
  const int64_t count = std::min<int64_t>(1'000'000, (int64_t{64} << 20) / static_cast<int64_t>(row_bytes));
  std::vector<std::byte> source(static_cast<size_t>(count) * row_bytes, std::byte{1});
  const std::vector<int64_t> rows = RandomPositions(static_cast<size_t>(batch) * 16, count, 3);
  std::vector<std::byte> out(static_cast<size_t>(batch) * row_bytes);
  int64_t offset = 0;
  for (auto _ : state) {
    for (int64_t i = 0; i < batch; ++i) {
      std::memcpy(out.data() + i * row_bytes, source.data() + rows[offset + i] * row_bytes, row_bytes);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    offset = (offset + batch) % (batch * 16);
  }
  SetPerRowCounters(state, batch, row_bytes);
}
BENCHMARK(BM_MemcpyGather)->ArgNames({"row_bytes", "batch"})->Args({16, 1024})->Args({16, 256})->Args({2048, 256})->Args({16384, 256});

// ---------------------------------------------------------- encode, decode

// A sealed 2048-row pending batch and its encoded file.
struct SegmentFixture {
  std::unique_ptr<PendingBatch> batch;
  std::vector<std::byte> file;
  SegmentFixture(int64_t rows, size_t row_bytes) {
    batch = std::make_unique<PendingBatch>(FloatSchema());
    KeySet keys(1'000'000, rows);
    DenseRows dense(rows, row_bytes);
    for (int64_t i = 0; i < rows; ++i) batch->Append(keys.views[i], std::span(&dense.leaf, 1), i);
    batch->UpdateView();
    file = format::EncodeSegment(batch->Table());
  }
};

// Args: rows, row_bytes.
void BM_Encode(benchmark::State& state) {
  SegmentFixture fixture(state.range(0), static_cast<size_t>(state.range(1)));
  std::vector<std::byte> sink_buffer(fixture.file.size() + 4096);
  for (auto _ : state) {
    size_t at = 0;
    const format::SegmentTable table = fixture.batch->Table();
    uint64_t bytes = format::WriteSegment(table, [&](std::span<const std::byte> piece) {
      std::memcpy(sink_buffer.data() + at, piece.data(), piece.size());
      at += piece.size();
    });
    benchmark::DoNotOptimize(bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(fixture.file.size()));
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["file_bytes"] = static_cast<double>(fixture.file.size());
}
BENCHMARK(BM_Encode)->ArgNames({"rows", "row_bytes"})->Args({2048, 16})->Args({2048, 2048})->Args({2048, 16384});

void BM_Memcpy(benchmark::State& state) {
  SegmentFixture fixture(state.range(0), static_cast<size_t>(state.range(1)));
  std::vector<std::byte> sink_buffer(fixture.file.size());
  for (auto _ : state) {
    std::memcpy(sink_buffer.data(), fixture.file.data(), fixture.file.size());
    benchmark::DoNotOptimize(sink_buffer.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(fixture.file.size()));
}
BENCHMARK(BM_Memcpy)->ArgNames({"rows", "row_bytes"})->Args({2048, 16})->Args({2048, 2048})->Args({2048, 16384});

void BM_Decode(benchmark::State& state) {
  SegmentFixture fixture(state.range(0), static_cast<size_t>(state.range(1)));
  for (auto _ : state) {
    format::ParsedSegment parsed = format::ParseSegment(fixture.file);
    benchmark::DoNotOptimize(parsed.num_rows);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(fixture.file.size()));
}
BENCHMARK(BM_Decode)->ArgNames({"rows", "row_bytes"})->Args({2048, 16})->Args({2048, 2048})->Args({2048, 16384});

void BM_SegmentOpen(benchmark::State& state) {
  SegmentFixture fixture(state.range(0), static_cast<size_t>(state.range(1)));
  const std::string path = ScratchDir::Path() + "/segment_open_" + Decimal(state.range(1)) + ".arrow";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(fixture.file.data(), 1, fixture.file.size(), f);
    std::fclose(f);
  }
  const Schema schema = FloatSchema();
  for (auto _ : state) {
    auto segment = Segment::Open(path, 0, schema);
    benchmark::DoNotOptimize(segment->num_rows());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SegmentOpen)->ArgNames({"rows", "row_bytes"})->Args({2048, 16})->Args({2048, 2048});

// -------------------------------------------------------------------- open

// Args: entries. Store::Open of a flushed cache of `entries` 16-byte rows
// (2048-row segments, page cache warm): lists, maps and validates every
// segment, verifies the key checksums and rebuilds the index.
void BM_OpenStore(benchmark::State& state) {
  const int64_t entries = state.range(0);
  PersistedStore(entries, 16);  // builds it once
  const std::string module_id = "bench_" + Decimal(entries) + "_16";
  for (auto _ : state) {
    auto store = Store::Open(ScratchDir::Path(), module_id, Options{});
    benchmark::DoNotOptimize(store->size());
    state.PauseTiming();
    store.reset();
    state.ResumeTiming();
  }
  state.counters["ns_per_entry"] = benchmark::Counter(
      static_cast<double>(entries), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_OpenStore)->ArgNames({"entries"})->Arg(1'000'000)->Unit(benchmark::kMillisecond)->UseRealTime();

// --------------------------------------------------------------------- put

// Args: row_bytes. Each iteration puts 1024 new keys; the store is reopened
// empty (outside the timing) every 256 iterations to bound disk use.
void BM_Put(benchmark::State& state) {
  const size_t row_bytes = static_cast<size_t>(state.range(0));
  constexpr int64_t kBatch = 1024;
  constexpr int64_t kPerStore = 256;
  DenseRows rows(kBatch, row_bytes);
  std::unique_ptr<Store> store;
  int generation = 0;
  int64_t next_key = 0;
  int64_t in_store = kPerStore;
  std::vector<std::string> keys(kBatch);
  std::vector<std::string_view> views(kBatch);
  for (auto _ : state) {
    if (in_store == kPerStore) {
      state.PauseTiming();
      std::string module_id = "bench_put_" + Decimal(static_cast<int64_t>(row_bytes)) + "_" + Decimal(generation);
      if (store) store->Close();
      store.reset();
      std::error_code ec;
      if (generation > 0) {
        fs::remove_all(ScratchDir::Path() + "/bench_put_" + Decimal(static_cast<int64_t>(row_bytes)) + "_" +
                           Decimal(generation - 1), ec);
      }
      ++generation;
      store = Store::Open(ScratchDir::Path(), module_id, Options{});
      store->EnsureSchema(FloatSchema());
      in_store = 0;
      state.ResumeTiming();
    }
    for (int64_t i = 0; i < kBatch; ++i) {
      keys[i] = Decimal(next_key++);
      views[i] = keys[i];
    }
    store->Put(views, std::span(&rows.leaf, 1));
    ++in_store;
  }
  if (store) store->Close();  // after the timed loop
  SetPerRowCounters(state, kBatch, row_bytes);
}
BENCHMARK(BM_Put)->ArgNames({"row_bytes"})->Arg(16)->Arg(2048)->UseRealTime();

}  // namespace
}  // namespace torchcachex

BENCHMARK_MAIN();
