"""Every mistake a user can make gets a clear exception that says what to do."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FrozenLinear, Recorder, inputs_for

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator


@pytest.mark.parametrize(
    "module_id", ["", ".", "..", "a/b", "../escape", "a\\b", "tab\there", "nul\x00", "del\x7f"]
)
def test_bad_module_ids_are_rejected_with_advice(tmp_path, module_id):
    with pytest.raises(ValueError, match="resnet50_imagenet_v1"):
        ArrowIPCCacheBackend(tmp_path, module_id)
    assert not any(tmp_path.iterdir())  # nothing was created


@pytest.mark.parametrize("module_id", [None, 5, b"bytes"])
def test_non_str_module_ids_are_rejected(tmp_path, module_id):
    with pytest.raises(TypeError, match="module_id"):
        ArrowIPCCacheBackend(tmp_path, module_id)


def test_good_module_ids_are_accepted(tmp_path):
    for module_id in ("resnet50_imagenet_v1", "bert-base.v2", "a..b", "ünïcode"):
        ArrowIPCCacheBackend(tmp_path, module_id).close()


@pytest.mark.parametrize(
    "kwargs", [{"lru_size": -1}, {"flush_every": 0}, {"max_workers": 0}, {"flush_every": 1.5}]
)
def test_bad_sizes_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ArrowIPCCacheBackend(tmp_path, "m_v1", **kwargs)


def test_cache_dir_of_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="cache_dir"):
        ArrowIPCCacheBackend(42, "m_v1")


def test_cache_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        ArrowIPCCacheBackend(blocker, "m_v1")


_READ_ONLY_CHECK = """
import sys
import torch
from torchcachex import ArrowIPCCacheBackend
cache_dir = sys.argv[1]
with ArrowIPCCacheBackend(cache_dir, "m_v1") as reader:  # reading needs no write access
    assert len(reader) == 2 and reader.lookup_batch([0, 1]).all_found
    try:
        reader.put_batch_outputs([5], torch.ones(1, 3))
        reader.flush()
    except OSError as exc:
        assert "not writable" in str(exc), exc
    else:
        raise AssertionError("a write to a read-only cache succeeded")
    assert reader.lookup_batch([0, 1]).all_found
with ArrowIPCCacheBackend(cache_dir, "m_v1", current_rank=1) as non_writer:
    non_writer.put_batch_outputs([5], torch.ones(1, 3))  # kept in memory only
    assert non_writer.lookup_batch([5]).all_found
try:
    ArrowIPCCacheBackend(cache_dir, "other_v1")
except OSError as exc:
    assert "not writable" in str(exc), exc
else:
    raise AssertionError("created a cache in a read-only directory")
print("ok")
"""


def test_read_only_cache_dir(tmp_path):
    """A read-only cache can be read; writes fail with advice instead of corrupting it."""
    cache_dir = tmp_path / "ro"
    with ArrowIPCCacheBackend(cache_dir, "m_v1") as backend:
        backend.put_batch_outputs([0, 1], torch.ones(2, 3))
    command = [sys.executable, "-c", _READ_ONLY_CHECK, str(cache_dir)]
    if os.geteuid() == 0:  # root ignores permissions unless it drops its capabilities
        capsh = shutil.which("capsh")
        if capsh is None:
            pytest.skip("running as root without capsh: file permissions would be ignored")
        command = [capsh, "--drop=cap_dac_override,cap_dac_read_search,cap_fowner", "--",
                   "-c", shlex.join(command)]
    paths = [cache_dir, *cache_dir.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
    with ArrowIPCCacheBackend(cache_dir, "m_v1") as backend:
        assert len(backend) == 2


@pytest.mark.parametrize(
    "ids,match",
    [
        ([1.5, 2.5], "index 0 has unsupported type float"),
        (["a", None], "index 1 has unsupported type NoneType"),
        ([True, False], "bool"),
        (["a", b"b"], "index 1 has unsupported type bytes"),
        (torch.tensor([1.0, 2.0]), "integer dtype"),
        (torch.tensor([True, False]), "integer dtype"),
        (np.array([0.5, 1.5]), "float64"),
        ({"a", "b"}, "got set"),
        ("ab", "got str"),
        (7, "got int"),
    ],
)
def test_unsupported_id_types(make_backend, ids, match):
    backend = make_backend()
    with pytest.raises(TypeError, match=match):
        backend.lookup_batch(ids)
    cached = CacheModuleDecorator(FrozenLinear(), backend)
    with pytest.raises(TypeError, match=match):
        cached(inputs_for([0, 1]), cache_ids=ids)


def test_two_dimensional_id_tensor(make_backend):
    with pytest.raises(ValueError, match="1-D"):
        make_backend().lookup_batch(torch.zeros(2, 2, dtype=torch.long))


def test_wrong_number_of_ids(make_backend):
    cached = CacheModuleDecorator(FrozenLinear(), make_backend())
    with pytest.raises(ValueError, match=r"got 2 cache ids for a batch of 3 samples"):
        cached(inputs_for([0, 1, 2]), cache_ids=[0, 1])


def test_missing_ids(make_backend):
    cached = CacheModuleDecorator(FrozenLinear(), make_backend())
    with pytest.raises(ValueError, match="cache_ids="):
        cached(inputs_for([0, 1]))
    with pytest.raises(ValueError, match="cache_ids"):
        cached({"x": inputs_for([0, 1])})


def test_output_not_batched_along_dim_0(make_backend):
    backend = make_backend()
    cached = CacheModuleDecorator(Recorder(lambda x: x.sum()), backend)
    with pytest.raises(ValueError, match="batched along dim 0"):
        cached(inputs_for([0, 1]), cache_ids=[0, 1])
    cached = CacheModuleDecorator(Recorder(lambda x: x.t()), make_backend("transposed_v1"))
    with pytest.raises(ValueError, match=r"shape \(4, 2\).*2 cache ids"):
        cached(inputs_for([0, 1]), cache_ids=[0, 1])
    assert len(backend) == 0


def test_outputs_that_cannot_be_flattened(make_backend):
    cached = CacheModuleDecorator(Recorder(lambda x: {0: x}), make_backend())
    with pytest.raises(TypeError, match="str keys"):
        cached(inputs_for([0]), cache_ids=[0])
    cached = CacheModuleDecorator(Recorder(lambda x: x.to_sparse()), make_backend("sparse_v1"))
    with pytest.raises(TypeError, match="strided"):
        cached(inputs_for([0]), cache_ids=[0])


def test_non_finite_floats_in_metadata_need_pickle(make_backend):
    backend = make_backend()
    with pytest.raises(TypeError, match="allow_pickle=True"):
        backend.put_batch_outputs([0], {"x": torch.ones(1), "meta": {"score": float("inf")}})


def test_put_batch_needs_a_mapping_of_consistent_samples(make_backend):
    backend = make_backend()
    with pytest.raises(TypeError, match="mapping"):
        backend.put_batch([torch.ones(2)])
    with pytest.raises(ValueError, match="different output structure"):
        backend.put_batch({"a": torch.ones(2), "b": (torch.ones(2),)})
    with pytest.raises(ValueError, match="dtype"):
        backend.put_batch({"a": torch.ones(2), "b": torch.ones(2, dtype=torch.float64)})
    assert len(backend) == 0


def test_decorator_needs_a_module(make_backend):
    with pytest.raises(TypeError, match="nn.Module"):
        CacheModuleDecorator(lambda x: x, make_backend())
