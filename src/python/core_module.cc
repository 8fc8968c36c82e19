// torchcachex._core: nanobind bindings of the C++ Store. A thin translation
// layer: keys and rows in, rows out as numpy arrays that own the core's
// buffers (zero-copy), the GIL released around every call into the core.
//
// Row payloads cross as raw bytes: the Python front views them with the
// right torch dtype (so bfloat16, float8 and complex need nothing from numpy).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "torchcachex/errors.h"
#include "torchcachex/store.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace torchcachex {
namespace {

PyObject* g_error = nullptr;
PyObject* g_invalid_argument = nullptr;
PyObject* g_schema_mismatch = nullptr;
PyObject* g_corrupt_file = nullptr;
PyObject* g_io_error = nullptr;
PyObject* g_closed = nullptr;

using ByteArray2D = nb::ndarray<uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using ByteArray1D = nb::ndarray<uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Keys as UTF-8 views, plus the storage that keeps them valid: the Python
// objects (whose UTF-8 buffers we view) and the decimal strings of int ids.
struct KeyBatch {
  nb::object keepalive;
  std::unique_ptr<char[]> digits;  // an int64 array's ids in decimal, back to back
  std::deque<std::string> owned;   // other ids' strings (deque: stable addresses)
  std::vector<std::string_view> views;
};

std::string_view OwnDecimal(KeyBatch& batch, long long value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return batch.owned.emplace_back(buf, end);
}

// Accepts a list/tuple of str | int (not bool), or a 1-D int64 numpy array.
KeyBatch ConvertKeys(nb::handle keys) {
  KeyBatch batch;
  if (nb::ndarray_check(keys)) {
    auto array = nb::cast<nb::ndarray<const int64_t, nb::ndim<1>, nb::device::cpu>>(keys);
    const size_t n = array.shape(0);
    constexpr size_t kMaxDigits = 20;  // "-9223372036854775808"
    batch.digits.reset(new char[std::max<size_t>(n, 1) * kMaxDigits]);
    batch.views.reserve(n);
    char* out = batch.digits.get();
    for (size_t i = 0; i < n; ++i) {
      char* end = std::to_chars(out, out + kMaxDigits, array(i)).ptr;
      batch.views.emplace_back(out, static_cast<size_t>(end - out));
      out = end;
    }
    return batch;
  }
  PyObject* seq = PySequence_Fast(keys.ptr(), "cache ids must be a list or tuple of str/int");
  if (seq == nullptr) throw nb::python_error();
  batch.keepalive = nb::steal(seq);
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  batch.views.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = items[i];
    if (PyUnicode_Check(item)) {
      Py_ssize_t size;
      const char* utf8 = PyUnicode_AsUTF8AndSize(item, &size);
      if (utf8 == nullptr) throw nb::python_error();
      batch.views.emplace_back(utf8, static_cast<size_t>(size));
    } else if (!PyBool_Check(item) && PyIndex_Check(item)) {
      nb::object index = nb::steal(PyNumber_Index(item));
      if (!index.is_valid()) throw nb::python_error();
      int overflow = 0;
      long long value = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
      if (overflow != 0) {
        batch.views.push_back(batch.owned.emplace_back(nb::cast<std::string>(nb::str(index))));
      } else {
        batch.views.push_back(OwnDecimal(batch, value));
      }
    } else {
      std::string type = nb::cast<std::string>(nb::str(nb::handle(Py_TYPE(item)).attr("__name__")));
      throw nb::type_error(("cache id at position " + std::to_string(i) + " has unsupported type '" +
                            type + "': use str or int ids (or a 1-D integer tensor)")
                               .c_str());
    }
  }
  return batch;
}

std::vector<int64_t> ToShape(nb::handle shape) {
  std::vector<int64_t> out;
  for (nb::handle dim : shape) out.push_back(nb::cast<int64_t>(dim));
  return out;
}

nb::tuple FromShape(const std::vector<int64_t>& shape) {
  nb::list out;
  for (int64_t dim : shape) out.append(dim);
  return nb::tuple(out);
}

// A numpy uint8 array owning `bytes` (moved onto the heap, freed with the array).
nb::object OwnedArray1D(std::vector<std::byte>&& bytes) {
  auto* holder = new std::vector<std::byte>(std::move(bytes));
  nb::capsule owner(holder, [](void* p) noexcept { delete static_cast<std::vector<std::byte>*>(p); });
  size_t shape[1] = {holder->size()};
  return nb::cast(nb::ndarray<nb::numpy, uint8_t, nb::ndim<1>>(
      reinterpret_cast<uint8_t*>(holder->data()), 1, shape, owner));
}

// Moves the dense buffer of `leaf` into a capsule, for an array that takes
// ownership of it (zero-copy; released to the pool with the array).
std::pair<std::byte*, nb::capsule> TakeDenseBuffer(LeafResult& leaf) {
  std::byte* data = leaf.dense.get();
  auto* holder = new OutputBuffer(std::move(leaf.dense));
  return {data, nb::capsule(holder, [](void* p) noexcept { delete static_cast<OutputBuffer*>(p); })};
}

// The dense rows of `leaf` as a (n, row_bytes) uint8 numpy array that takes
// ownership of the buffer (zero-copy).
nb::object DenseToPython(LeafResult& leaf, size_t n) {
  auto [data, owner] = TakeDenseBuffer(leaf);
  size_t shape[2] = {n, leaf.row_bytes};
  return nb::cast(
      nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>>(reinterpret_cast<uint8_t*>(data), 2, shape, owner));
}

// The numpy dtype laid out like `dtype` that torch.from_numpy maps back to
// it; nullopt where numpy has none (bfloat16, float8, complex32) or torch
// supports it only partly (unsigned integers wider than 8 bits).
std::optional<nb::dlpack::dtype> NumpyDTypeOf(DType dtype) {
  using Code = nb::dlpack::dtype_code;
  auto make = [](Code code, int bits) {
    return nb::dlpack::dtype{static_cast<uint8_t>(code), static_cast<uint8_t>(bits), 1};
  };
  switch (dtype) {
    case DType::kFloat16: return make(Code::Float, 16);
    case DType::kFloat32: return make(Code::Float, 32);
    case DType::kFloat64: return make(Code::Float, 64);
    case DType::kInt8: return make(Code::Int, 8);
    case DType::kInt16: return make(Code::Int, 16);
    case DType::kInt32: return make(Code::Int, 32);
    case DType::kInt64: return make(Code::Int, 64);
    case DType::kUInt8: return make(Code::UInt, 8);
    case DType::kBool: return make(Code::Bool, 8);
    case DType::kComplex64: return make(Code::Complex, 64);
    case DType::kComplex128: return make(Code::Complex, 128);
    default: return std::nullopt;
  }
}

// The dense rows of a tensor leaf of `dtype` as a (n, *shape) numpy array of
// that dtype (zero-copy), or where numpy lacks the dtype as DenseToPython's
// (n, row_bytes) uint8 array.
nb::object TypedDenseToPython(LeafResult& leaf, DType dtype, size_t n) {
  const std::optional<nb::dlpack::dtype> numpy_dtype = NumpyDTypeOf(dtype);
  if (!numpy_dtype) return DenseToPython(leaf, n);
  auto [data, owner] = TakeDenseBuffer(leaf);
  std::vector<size_t> shape{n};
  for (int64_t d : leaf.shape) shape.push_back(static_cast<size_t>(d));
  return nb::cast(nb::ndarray<nb::numpy>(data, shape.size(), shape.data(), owner, nullptr, *numpy_dtype));
}

nb::object LeafToPython(LeafResult& leaf, LeafKind kind, size_t n) {
  if (leaf.is_dense) return nb::make_tuple("dense", DenseToPython(leaf, n), FromShape(leaf.shape));
  nb::list rows;
  for (size_t i = 0; i < n; ++i) {
    if (leaf.rows.empty() || !leaf.rows[i]) {
      rows.append(nb::none());
    } else if (kind == LeafKind::kBlob) {
      rows.append(nb::bytes(reinterpret_cast<const char*>(leaf.rows[i]->data()), leaf.rows[i]->size()));
    } else {
      rows.append(nb::make_tuple(OwnedArray1D(std::move(*leaf.rows[i])), FromShape(leaf.shapes[i])));
    }
  }
  return nb::make_tuple(kind == LeafKind::kBlob ? "blob" : "ragged", rows);
}

// Python-side handle: the Store plus what the bindings need to remember.
struct PyStore {
  std::unique_ptr<Store> store;

  Store& get() {
    if (!store) throw ClosedError("the cache is closed; open a new backend to use it again");
    return *store;
  }
};

// Looks the keys of `batch` up with the GIL released. Returns the result and
// the schema as read after the lookup (a schema, once set, never goes away).
std::pair<GetResult, std::optional<Schema>> LookUp(PyStore& s, const KeyBatch& batch) {
  Store& store = s.get();
  GetResult result;
  {
    nb::gil_scoped_release release;
    result = store.GetBatch(batch.views);
  }
  return {std::move(result), store.schema()};
}

// Whether the keys of `batch` (converted from `keys`) are pairwise distinct.
bool KeysDistinct(nb::handle keys, const KeyBatch& batch) {
  if (nb::ndarray_check(keys)) {
    // int64 ids: inserted into an open-addressing set at load <= 1/2, O(n)
    // whatever their order (sorting a shuffled batch of 256 took 6 us).
    auto array = nb::cast<nb::ndarray<const int64_t, nb::ndim<1>, nb::device::cpu>>(keys);
    const size_t n = array.shape(0);
    int bits = 1;
    while ((size_t{1} << bits) < 2 * n) ++bits;
    const size_t mask = (size_t{1} << bits) - 1;
    std::vector<int64_t> slots(mask + 1);
    std::vector<uint8_t> used(mask + 1, 0);
    for (size_t i = 0; i < n; ++i) {
      const int64_t id = array(i);
      size_t slot = static_cast<size_t>((static_cast<uint64_t>(id) * 0x9E3779B97F4A7C15ull) >> (64 - bits));
      while (used[slot]) {
        if (slots[slot] == id) return false;
        slot = (slot + 1) & mask;
      }
      used[slot] = 1;
      slots[slot] = id;
    }
    return true;
  }
  std::vector<std::string_view> views = batch.views;
  std::sort(views.begin(), views.end());
  return std::adjacent_find(views.begin(), views.end()) == views.end();
}

// Whether `rows` is C-contiguous (dimensions of size 1 may have any stride).
bool IsCContiguous(const nb::ndarray<nb::ro, nb::device::cpu>& rows) {
  int64_t expected = 1;  // in elements
  for (size_t d = rows.ndim(); d-- > 0;) {
    if (rows.shape(d) != 1 && rows.stride(d) != expected) return false;
    expected *= static_cast<int64_t>(rows.shape(d));
  }
  return true;
}

// The general (found: bool array, leaves) result of get_batch_fast.
nb::tuple GetResultToPython(GetResult& result, const std::optional<Schema>& schema, size_t n) {
  auto* found = new uint8_t[std::max<size_t>(n, 1)];
  std::copy(result.found.begin(), result.found.end(), found);
  nb::capsule owner(found, [](void* p) noexcept { delete[] static_cast<uint8_t*>(p); });
  size_t shape[1] = {n};
  nb::object found_array =
      nb::cast(nb::ndarray<nb::numpy, bool, nb::ndim<1>>(reinterpret_cast<bool*>(found), 1, shape, owner));
  nb::list leaves;
  for (size_t l = 0; l < result.leaves.size(); ++l) {
    leaves.append(LeafToPython(result.leaves[l], schema->leaves[l].kind, n));
  }
  return nb::make_tuple(found_array, leaves);
}

std::string KindName(LeafKind kind) { return kind == LeafKind::kTensor ? "tensor" : "blob"; }

// A message for Python. Messages may quote bytes of damaged files, which
// need not be UTF-8: those are shown as \xNN escapes instead of failing.
nb::str MessageToPython(std::string_view message) {
  PyObject* text = PyUnicode_DecodeUTF8(message.data(), static_cast<Py_ssize_t>(message.size()),
                                        "backslashreplace");
  if (text == nullptr) throw nb::python_error();
  return nb::steal<nb::str>(text);
}

// `messages` as a list of str.
nb::list MessagesToPython(const std::vector<std::string>& messages) {
  nb::list out;
  for (const std::string& message : messages) out.append(MessageToPython(message));
  return out;
}

nb::object SchemaToPython(const std::optional<Schema>& schema) {
  if (!schema) return nb::none();
  nb::list leaves;
  for (const LeafSpec& leaf : schema->leaves) {
    leaves.append(nb::make_tuple(leaf.name, KindName(leaf.kind),
                                 leaf.kind == LeafKind::kTensor ? std::string(TorchName(leaf.dtype)) : ""));
  }
  nb::dict out;
  out["leaves"] = leaves;
  out["output_structure"] = schema->output_structure;
  out["structure"] = schema->structure;
  return out;
}

Schema SchemaFromPython(nb::handle leaves, const std::string& output_structure,
                        const std::string& structure) {
  Schema schema;
  schema.output_structure = output_structure;
  schema.structure = structure;
  for (nb::handle item : leaves) {
    auto [name, kind, dtype] = nb::cast<std::tuple<std::string, std::string, std::string>>(item);
    LeafSpec leaf;
    leaf.name = name;
    if (kind == "tensor") {
      leaf.kind = LeafKind::kTensor;
      auto parsed = DTypeFromTorchName(dtype);
      if (!parsed) throw InvalidArgumentError("unsupported tensor dtype '" + dtype + "'");
      leaf.dtype = *parsed;
    } else if (kind == "blob") {
      leaf.kind = LeafKind::kBlob;
    } else {
      throw InvalidArgumentError("leaf kind must be 'tensor' or 'blob', not '" + kind + "'");
    }
    schema.leaves.push_back(std::move(leaf));
  }
  return schema;
}

// Converts put_batch leaves; `keepalive` holds the Python objects viewed.
std::vector<LeafRows> LeavesFromPython(nb::handle leaves, size_t n, std::vector<nb::object>& keepalive) {
  std::vector<LeafRows> out;
  for (nb::handle item : leaves) {
    nb::tuple tuple = nb::cast<nb::tuple>(item);
    std::string kind = nb::cast<std::string>(tuple[0]);
    LeafRows rows;
    if (kind == "dense") {
      auto array = nb::cast<ByteArray2D>(tuple[1]);
      keepalive.push_back(nb::borrow(tuple[1]));
      if (array.shape(0) != n) {
        throw InvalidArgumentError("dense leaf has " + std::to_string(array.shape(0)) + " rows for " +
                                   std::to_string(n) + " keys");
      }
      rows.is_dense = true;
      rows.base = reinterpret_cast<const std::byte*>(array.data());
      rows.row_stride = array.shape(1);
      rows.row_bytes = array.shape(1);
      rows.shape = ToShape(tuple[2]);
    } else if (kind == "ragged") {
      for (nb::handle row : tuple[1]) {
        nb::tuple pair = nb::cast<nb::tuple>(row);
        auto array = nb::cast<ByteArray1D>(pair[0]);
        keepalive.push_back(nb::borrow(pair[0]));
        rows.rows.emplace_back(reinterpret_cast<const std::byte*>(array.data()), array.shape(0));
        rows.shapes.push_back(ToShape(pair[1]));
      }
    } else if (kind == "blob") {
      for (nb::handle row : tuple[1]) {
        if (!PyBytes_Check(row.ptr())) throw nb::type_error("blob rows must be bytes");
        keepalive.push_back(nb::borrow(row));
        rows.rows.emplace_back(reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(row.ptr())),
                               static_cast<size_t>(PyBytes_GET_SIZE(row.ptr())));
      }
    } else {
      throw InvalidArgumentError("leaf kind must be 'dense', 'ragged' or 'blob', not '" + kind + "'");
    }
    out.push_back(std::move(rows));
  }
  return out;
}

PyObject* NewException(nb::module_& m, const char* name, PyObject* bases, const char* doc) {
  std::string qualified = std::string("torchcachex._core.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (type == nullptr) throw nb::python_error();
  m.attr(name) = nb::handle(type);
  return type;
}

void RegisterExceptions(nb::module_& m) {
  g_error = NewException(m, "Error", PyExc_RuntimeError, "Base class of torchcachex engine errors.");
  nb::tuple value_bases = nb::make_tuple(nb::handle(g_error), nb::handle(PyExc_ValueError));
  g_invalid_argument = NewException(m, "InvalidArgumentError", value_bases.ptr(), "An argument is invalid.");
  g_schema_mismatch = NewException(m, "SchemaMismatchError", value_bases.ptr(),
                                   "The output does not match the cache's schema.");
  g_corrupt_file = NewException(m, "CorruptFileError", g_error, "A cache file is malformed.");
  nb::tuple os_bases = nb::make_tuple(nb::handle(g_error), nb::handle(PyExc_OSError));
  g_io_error = NewException(m, "CacheIOError", os_bases.ptr(), "The operating system refused an I/O operation.");
  g_closed = NewException(m, "ClosedError", g_error, "The cache was used after close().");
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    auto raise = [](PyObject* type, const char* what) {
      PyErr_SetObject(type, MessageToPython(what).ptr());
    };
    try {
      std::rethrow_exception(p);
    } catch (const InvalidArgumentError& e) {
      raise(g_invalid_argument, e.what());
    } catch (const SchemaMismatchError& e) {
      raise(g_schema_mismatch, e.what());
    } catch (const CorruptFileError& e) {
      raise(g_corrupt_file, e.what());
    } catch (const IOError& e) {
      raise(g_io_error, e.what());
    } catch (const ClosedError& e) {
      raise(g_closed, e.what());
    } catch (const Error& e) {
      raise(g_error, e.what());
    }
  });
}

}  // namespace
}  // namespace torchcachex

using namespace torchcachex;

NB_MODULE(_core, m) {
  m.doc() = "torchcachex C++ engine: a persistent per-sample cache over Arrow IPC segments.";
  RegisterExceptions(m);
  // Engine objects still referenced when the interpreter tears down (module
  // globals, gc callbacks) are closed by the Python front's atexit handler;
  // nanobind's shutdown "leaked instance" report would only alarm users.
  nb::set_leak_warnings(false);

  nb::class_<PyStore>(m, "Store", "A cache directory cache_dir/module_id opened for reading and writing.")
      .def(
          "__init__",
          [](PyStore* self, const std::string& cache_dir, const std::string& module_id, size_t hot_cache_rows,
             size_t flush_every, size_t min_segment_bytes, bool async_write, size_t max_queued_segments,
             bool persist) {
            Options options;
            options.hot_cache_rows = hot_cache_rows;
            options.flush_every = flush_every;
            options.min_segment_bytes = min_segment_bytes;
            options.async_write = async_write;
            options.max_queued_segments = max_queued_segments;
            options.persist = persist;
            std::unique_ptr<Store> store;
            {
              nb::gil_scoped_release release;
              store = Store::Open(cache_dir, module_id, options);
            }
            new (self) PyStore{std::move(store)};
          },
          "cache_dir"_a, "module_id"_a, nb::kw_only(), "hot_cache_rows"_a = 4096, "flush_every"_a = 2048,
          "min_segment_bytes"_a = Options{}.min_segment_bytes,
          "async_write"_a = true, "max_queued_segments"_a = 2, "persist"_a = true,
          "Opens (creating if needed) the cache at cache_dir/module_id.")
      .def(
          "schema", [](PyStore& s) { return SchemaToPython(s.get().schema()); },
          "The cache schema as {'leaves': [(name, kind, dtype)], 'output_structure', 'structure'}, or None.")
      .def(
          "ensure_schema",
          [](PyStore& s, nb::handle leaves, const std::string& output_structure, const std::string& structure) {
            Schema schema = SchemaFromPython(leaves, output_structure, structure);
            nb::gil_scoped_release release;
            s.get().EnsureSchema(schema);
          },
          "leaves"_a, "output_structure"_a, "structure"_a,
          "Adopts the schema if the cache has none; raises SchemaMismatchError if it differs.")
      .def(
          "get_batch_fast",
          [](PyStore& s, nb::handle keys, bool summarize_misses) {
            const KeyBatch batch = ConvertKeys(keys);
            auto [result, schema] = LookUp(s, batch);
            const size_t n = batch.views.size();
            const std::vector<std::string> messages = s.get().TakeWarnings();
            nb::object warnings = messages.empty() ? nb::none() : nb::object(MessagesToPython(messages));
            const bool none_found = std::find(result.found.begin(), result.found.end(), 1) == result.found.end();
            if (summarize_misses && none_found && n > 0 && KeysDistinct(keys, batch)) {
              return nb::make_tuple(false, nb::none(), nb::none(), warnings);
            }
            const bool all_found = std::find(result.found.begin(), result.found.end(), 0) == result.found.end();
            if (all_found && n > 0 && result.leaves.size() == 1 && result.leaves[0].is_dense) {
              LeafResult& leaf = result.leaves[0];
              return nb::make_tuple(true, TypedDenseToPython(leaf, schema->leaves[0].dtype, n),
                                    FromShape(leaf.shape), warnings);
            }
            nb::tuple general = GetResultToPython(result, schema, n);
            return nb::make_tuple(false, general[0], general[1], warnings);
          },
          "keys"_a, "summarize_misses"_a = false,
          "Looks up keys. (True, rows, shape, warnings) when every key is found and the cache has a\n"
          "single tensor leaf whose found rows share one shape: rows is a (B, *shape) array of the leaf's\n"
          "dtype, or a (B, row_bytes) uint8 array where numpy has no such dtype (bfloat16, float8,\n"
          "complex32, uint16/32/64). With summarize_misses, when no key is found and the B > 0 keys\n"
          "are pairwise different: (False, None, None, warnings). Otherwise (False, found: bool array,\n"
          "leaves, warnings) with one item\n"
          "per schema leaf: ('dense', uint8 array (B, row_bytes), shape), ('ragged', [(uint8 array,\n"
          "shape) | None]) or ('blob', [bytes | None]). warnings: the store's new warnings (as\n"
          "take_warnings), or None.")
      .def(
          "put_dense",
          [](PyStore& s, nb::handle keys, nb::ndarray<nb::ro, nb::device::cpu> rows) {
            KeyBatch batch = ConvertKeys(keys);
            const size_t n = batch.views.size();
            if (rows.ndim() < 1 || rows.shape(0) != n || n == 0 || !IsCContiguous(rows)) return false;
            LeafRows leaf;
            leaf.is_dense = true;
            leaf.row_bytes = rows.itemsize();
            for (size_t d = 1; d < rows.ndim(); ++d) {
              leaf.shape.push_back(static_cast<int64_t>(rows.shape(d)));
              leaf.row_bytes *= rows.shape(d);
            }
            if (leaf.row_bytes == 0) return false;
            leaf.base = reinterpret_cast<const std::byte*>(rows.data());
            leaf.row_stride = leaf.row_bytes;
            Store& store = s.get();
            nb::gil_scoped_release release;
            store.Put(batch.views, std::span<const LeafRows>(&leaf, 1));
            return true;
          },
          "keys"_a, "rows"_a,
          "Adds the rows of a cache whose schema is one tensor leaf: rows is the batched output as a\n"
          "C-contiguous (B, *shape) array of the leaf's dtype (the caller checks the dtype), B = len(keys).\n"
          "Returns False, storing nothing, if rows is not such an array (then use put_batch).")
      .def(
          "put_batch",
          [](PyStore& s, nb::handle keys, nb::handle leaves) {
            KeyBatch batch = ConvertKeys(keys);
            std::vector<nb::object> keepalive;
            std::vector<LeafRows> rows = LeavesFromPython(leaves, batch.views.size(), keepalive);
            Store& store = s.get();
            nb::gil_scoped_release release;
            store.Put(batch.views, rows);
          },
          "keys"_a, "leaves"_a,
          "Adds rows: one item per schema leaf, ('dense', uint8 array (B, row_bytes), shape),\n"
          "('ragged', [(uint8 array, shape)]) or ('blob', [bytes]).")
      .def(
          "contains",
          [](PyStore& s, nb::handle key) {
            KeyBatch batch = ConvertKeys(nb::make_tuple(key));
            Store& store = s.get();
            nb::gil_scoped_release release;
            return store.Contains(batch.views[0]);
          },
          "key"_a, "True if the key is cached.")
      .def("__len__", [](PyStore& s) { return s.get().size(); }, "Number of distinct cached keys.")
      .def(
          "flush",
          [](PyStore& s) {
            Store& store = s.get();
            nb::gil_scoped_release release;
            store.Flush();
          },
          "Returns once every row put so far is durable on disk.")
      .def(
          "close",
          [](PyStore& s) {
            if (!s.store) return;
            std::unique_ptr<Store> store = std::move(s.store);
            nb::gil_scoped_release release;
            store->Close();
          },
          "Flushes and closes. Idempotent.")
      .def(
          "forget",
          [](PyStore& s) {
            // After fork() the child holds a copy of the parent's store whose
            // writer thread does not exist and whose locks may be held: it
            // must never be used or destroyed. Leak it on purpose.
            (void)s.store.release();
          },
          "Abandons this store without flushing or closing it (for a child process after fork()).")
      .def(
          "refresh",
          [](PyStore& s) {
            Store& store = s.get();
            nb::gil_scoped_release release;
            return store.Refresh();
          },
          "Loads segments written by other processes; returns how many.")
      .def(
          "stats",
          [](PyStore& s) {
            Stats st = s.get().GetStats();
            nb::dict d;
            d["entries"] = st.entries;
            d["segments"] = st.segments;
            d["pending_rows"] = st.pending_rows;
            d["hot_cache_rows"] = st.hot_cache_rows;
            d["hits"] = st.hits;
            d["misses"] = st.misses;
            d["rows_written"] = st.rows_written;
            d["bytes_written"] = st.bytes_written;
            d["write_seconds"] = static_cast<double>(st.write_ns) * 1e-9;
            d["skipped_segments"] = st.skipped_segments;
            d["writer_id"] = st.writer_id;
            d["index_bytes"] = st.index_bytes;
            return d;
          },
          "Counters of this store (entries, segments, hits, misses, bytes written...).")
      .def("take_warnings",
           [](PyStore& s) { return MessagesToPython(s.get().TakeWarnings()); },
           "Warnings gathered since the last call (skipped segments, recovered schema).")
      .def_prop_ro("path", [](PyStore& s) { return s.get().path(); }, "The cache directory (cache_dir/module_id).");
}
