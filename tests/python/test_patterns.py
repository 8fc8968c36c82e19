"""The five usage patterns of the examples README, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FrozenLinear, inputs_for, run_python
from torch import nn

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator


def _batches(ids, size):
    for start in range(0, len(ids), size):
        chunk = ids[start:start + size]
        yield {"input": inputs_for(chunk), "ids": torch.tensor(chunk)}


def test_kfold_cross_validation_computes_each_sample_once(make_backend):
    extractor = FrozenLinear()
    cached = CacheModuleDecorator(extractor, make_backend("features_v1"), enabled=True)
    samples, folds = list(range(40)), 4
    for fold in range(folds):
        val = samples[fold::folds]
        train = [s for s in samples if s not in val]
        for batch in _batches(train, 8):
            features = cached(batch["input"], cache_ids=batch["ids"])
            assert torch.equal(features, extractor.reference(batch["input"]))
        for batch in _batches(val, 8):
            cached(batch["input"], cache_ids=batch["ids"])
    # Fold 0 computed everything; folds 1..3 reused it.
    assert sorted(extractor.seen) == samples


def test_ddp_only_the_writer_rank_persists(tmp_path):
    cache_dir = tmp_path / "shared"
    ids = list(range(16))

    rank1_module = FrozenLinear()
    with ArrowIPCCacheBackend(cache_dir, "features_v1", writer_rank=0, current_rank=1) as rank1:
        cached = CacheModuleDecorator(rank1_module, rank1)
        for _ in range(2):  # epoch 2 is served from rank 1's own hot cache
            for batch in _batches(ids[8:], 4):
                cached(batch["input"], cache_ids=batch["ids"])
        rank1.flush()
    assert sorted(rank1_module.seen) == ids[8:]

    rank0_module = FrozenLinear()
    with ArrowIPCCacheBackend(cache_dir, "features_v1", writer_rank=0, current_rank=0) as rank0:
        assert len(rank0) == 0  # rank 1 wrote nothing to disk
        cached = CacheModuleDecorator(rank0_module, rank0)
        for batch in _batches(ids, 4):
            cached(batch["input"], cache_ids=batch["ids"])

    # A later epoch on any rank is served entirely from what rank 0 wrote.
    later_module = FrozenLinear()
    with ArrowIPCCacheBackend(cache_dir, "features_v1", writer_rank=0, current_rank=1) as rank1:
        cached = CacheModuleDecorator(later_module, rank1)
        for batch in _batches(ids, 4):
            out = cached(batch["input"], cache_ids=batch["ids"])
            assert torch.equal(out, later_module.reference(batch["input"]))
    assert later_module.calls == 0


def test_multiple_models_share_one_feature_cache(make_backend):
    extractor = FrozenLinear()
    cached = CacheModuleDecorator(extractor, make_backend("resnet50_features_v1"))

    class Head(nn.Module):
        def __init__(self, features: nn.Module):
            super().__init__()
            self.features = features
            self.fc = nn.Linear(3, 2)

        def forward(self, x, ids):
            return self.fc(self.features(x, cache_ids=ids))

    models = [Head(cached) for _ in range(3)]
    ids = list(range(12))
    for model in models:
        optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1)
        for batch in _batches(ids, 4):
            loss = model(batch["input"], batch["ids"]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert extractor.calls == 3  # only model A's three batches ran the extractor
    assert sorted(extractor.seen) == ids


class MultiHeadExtractor(nn.Module):
    """The seed's complex-output example."""

    def __init__(self):
        super().__init__()
        self.visual_head = nn.Linear(4, 3).requires_grad_(False)
        self.semantic_head = nn.Linear(4, 2).requires_grad_(False).half()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return {
            "visual": self.visual_head(x),
            "semantic": self.semantic_head(x.half()),
            "metadata": {"width": x.shape[-1]},
        }


def test_complex_output_structures(make_backend):
    extractor = MultiHeadExtractor()
    cached = CacheModuleDecorator(extractor, make_backend("multihead_v1"), enabled=True)
    x = inputs_for([0, 1, 2])
    computed = cached(x, cache_ids=["a", "b", "c"])
    outputs = cached(x, cache_ids=["a", "b", "c"])
    assert extractor.calls == 1
    assert list(outputs) == ["visual", "semantic", "metadata"]
    assert outputs["visual"].dtype == torch.float32 and outputs["semantic"].dtype == torch.float16
    assert torch.equal(outputs["visual"], computed["visual"])
    assert torch.equal(outputs["semantic"], computed["semantic"])
    assert outputs["metadata"] == {"width": 4}


_ENRICH = """
import json, sys
import torch
sys.path.insert(0, sys.argv[3])
from conftest import FrozenLinear, inputs_for
from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator

cache_dir, count = sys.argv[1], int(sys.argv[2])
backend = ArrowIPCCacheBackend(cache_dir, "features_v1")
extractor = FrozenLinear()
cached = CacheModuleDecorator(extractor, backend)
sums = {}
for start in range(0, count, 16):
    ids = list(range(start, min(start + 16, count)))
    out = cached(inputs_for(ids), cache_ids=[f"sample_{i}" for i in ids])
    for i, row in zip(ids, out):
        sums[i] = row.tolist()
print(json.dumps({"computed": extractor.seen, "rows": sums}))
# No explicit flush: the backend is flushed at interpreter exit.
"""


def test_progressive_enrichment_across_processes(tmp_path):
    cache_dir, here = str(tmp_path / "cache"), str(Path(__file__).parent)
    first = json.loads(run_python(_ENRICH, cache_dir, "100", here).stdout)
    second = json.loads(run_python(_ENRICH, cache_dir, "150", here).stdout)
    assert first["computed"] == list(range(100))
    assert second["computed"] == list(range(100, 150))  # only the new samples
    for i in range(100):
        assert second["rows"][str(i)] == first["rows"][str(i)]
    with ArrowIPCCacheBackend(cache_dir, "features_v1") as backend:
        assert len(backend) == 150


@pytest.mark.parametrize("async_write", [True, False])
def test_flush_at_end_of_epoch_survives_a_crash(tmp_path, async_write):
    code = """
import os, sys
import torch
from torchcachex import ArrowIPCCacheBackend
backend = ArrowIPCCacheBackend(sys.argv[1], "features_v1", async_write=sys.argv[2] == "1")
backend.put_batch_outputs(list(range(64)), torch.arange(64.0).reshape(64, 1))
backend.flush()
os._exit(0)  # a crash: no atexit, no destructors
"""
    run_python(code, str(tmp_path), "1" if async_write else "0")
    with ArrowIPCCacheBackend(tmp_path, "features_v1") as backend:
        assert len(backend) == 64
        assert backend.lookup_batch([63]).output().item() == 63.0
