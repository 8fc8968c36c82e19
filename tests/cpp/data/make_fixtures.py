"""Writes the pyarrow-produced Arrow IPC fixtures read by tests/cpp/ipc_codec_test.cc.

Run from anywhere: python tests/cpp/data/make_fixtures.py
The expected values in ipc_codec_test.cc mirror the tables built here; change both together.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

HERE = os.path.dirname(os.path.abspath(__file__))


def write(name, schema, batches, options=None):
    path = os.path.join(HERE, name)
    with pa.OSFile(path, "wb") as sink:
        with ipc.new_file(sink, schema, options=options) as writer:
            for batch in batches:
                writer.write_batch(batch)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def two_batches():
    # The original torchcachex single-tensor layout, written in two batches.
    schema = pa.schema(
        [
            pa.field("key", pa.string()),
            pa.field("data", pa.list_(pa.float32()), metadata={"torch_dtype": "torch.float32"}),
            pa.field("shape", pa.list_(pa.int64())),
        ],
        metadata={"output_structure": "tensor", "torch_dtype": "torch.float32"},
    )
    b1 = pa.record_batch(
        [
            pa.array(["a", "bb", "ccc"], pa.string()),
            pa.array([[1.0, 2.0], [3.5], []], pa.list_(pa.float32())),
            pa.array([[2], [1], [0]], pa.list_(pa.int64())),
        ],
        schema=schema,
    )
    b2 = pa.record_batch(
        [
            pa.array(["d", "e"], pa.string()),
            pa.array([[4.0, 5.0, 6.0], [-7.25]], pa.list_(pa.float32())),
            pa.array([[3], [1, 1]], pa.list_(pa.int64())),
        ],
        schema=schema,
    )
    write("pyarrow_two_batches.arrow", schema, [b1, b2])


def large_with_nulls():
    schema = pa.schema(
        [
            pa.field("key", pa.large_string()),
            pa.field("data", pa.large_list(pa.float64())),
            pa.field("blob", pa.large_binary()),
        ]
    )
    batch = pa.record_batch(
        [
            pa.array(["k0", None, "k2", "k3"], pa.large_string()),
            pa.array([[0.5], [], None, [1.0, 2.0]], pa.large_list(pa.float64())),
            pa.array([b"\x00\x01", None, b"", b"xyz"], pa.large_binary()),
        ],
        schema=schema,
    )
    write("pyarrow_large_nulls.arrow", schema, [batch])


PRIMITIVES = [
    ("int8", pa.int8(), np.int8),
    ("int16", pa.int16(), np.int16),
    ("int32", pa.int32(), np.int32),
    ("int64", pa.int64(), np.int64),
    ("uint8", pa.uint8(), np.uint8),
    ("uint16", pa.uint16(), np.uint16),
    ("uint32", pa.uint32(), np.uint32),
    ("uint64", pa.uint64(), np.uint64),
    ("float16", pa.float16(), np.float16),
    ("float32", pa.float32(), np.float32),
    ("float64", pa.float64(), np.float64),
]


def all_types():
    # Rows per column: [1, 2, 3], [], [4, 5]; bool: [T, F, T], [], [F]*9 + [T].
    # A second, empty batch follows.
    fields, arrays = [], []
    for name, typ, np_type in PRIMITIVES:
        values = np.array([1, 2, 3, 4, 5], dtype=np_type)
        offsets = pa.array([0, 3, 3, 5], pa.int32())
        fields.append(pa.field(name, pa.list_(typ)))
        arrays.append(pa.ListArray.from_arrays(offsets, pa.array(values, typ)))
    fields.append(pa.field("bool", pa.list_(pa.bool_())))
    arrays.append(
        pa.array([[True, False, True], [], [False] * 9 + [True]], pa.list_(pa.bool_()))
    )
    fields.append(pa.field("bin", pa.binary()))
    arrays.append(pa.array([b"\xff", b"", b"\x00\x00"], pa.binary()))
    schema = pa.schema(fields)
    batch = pa.record_batch(arrays, schema=schema)
    write("pyarrow_all_types.arrow", schema, [batch, batch.slice(0, 0)])


def empty():
    schema = pa.schema([pa.field("key", pa.string()), pa.field("data", pa.list_(pa.float32()))])
    write("pyarrow_empty.arrow", schema, [])


def unsupported():
    dictionary = pa.record_batch(
        [pa.array(["x", "y", "x"]).dictionary_encode()], names=["key"]
    )
    write("pyarrow_dictionary.arrow", dictionary.schema, [dictionary])

    plain = pa.record_batch(
        [pa.array(["x", "y"]), pa.array([[1.0], [2.0]], pa.list_(pa.float32()))],
        names=["key", "data"],
    )
    write(
        "pyarrow_compressed.arrow",
        plain.schema,
        [plain],
        options=ipc.IpcWriteOptions(compression="lz4"),
    )

    list_nulls = pa.record_batch(
        [pa.array(["x", "y"]), pa.array([[1.0, None], [2.0]], pa.list_(pa.float32()))],
        names=["key", "data"],
    )
    write("pyarrow_list_nulls.arrow", list_nulls.schema, [list_nulls])


if __name__ == "__main__":
    two_batches()
    large_with_nulls()
    all_types()
    empty()
    unsupported()
