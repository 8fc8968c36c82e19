"""Advanced usage: five real-world caching patterns, one function each.

1. K-fold cross-validation: one cache shared by every fold.
2. DDP single writer: only the writer rank persists; other ranks keep their
   results in their hot cache and pick up the writer's segments with refresh().
3. Multiple models sharing one cached feature extractor.
4. Complex outputs: dicts with tensors of several dtypes (bfloat16 included)
   and JSON metadata; tuple outputs.
5. Progressive enrichment: the cache grows across runs; each run computes only
   what is new.

Usage::

    python examples/advanced_usage.py                   # everything, in a temp dir
    python examples/advanced_usage.py --pattern ddp     # one pattern
    python examples/advanced_usage.py --cache-dir /tmp/tcx-advanced   # keep the caches

Each pattern prints how many samples were served from the cache ("hits") and
how many the frozen module actually computed. With ``--cache-dir`` the caches
are kept, so running the script again shows every pattern served from disk.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator

NUM_CLASSES = 4
FEATURE_DIM = 64


# ----------------------------------------------------------------------------- shared pieces


class FrozenExtractor(nn.Module):
    """A small frozen conv net (3x32x32 -> 64) that counts the samples it computes.

    ``computed`` is how often the expensive module really ran; everything else
    came from the cache.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # same weights every run: cached features stay valid
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, FEATURE_DIM, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.requires_grad_(False)
        self.eval()
        self.computed = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.computed += x.shape[0]
        return self.body(x)


class ToyDataset(Dataset):
    """Seeded images with a class-dependent colour; items are {"input", "ids", "label"}."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(NUM_CLASSES, (num_samples,), generator=gen)
        colours = 2 * torch.randn(NUM_CLASSES, 3, 1, 1, generator=gen)
        self.inputs = torch.randn(num_samples, 3, 32, 32, generator=gen) + colours[self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> Dict[str, object]:
        # The dataset index is the stable cache id; collated into a LongTensor.
        return {"input": self.inputs[idx], "ids": idx, "label": int(self.labels[idx])}


def loader(dataset: Dataset, indices: Sequence[int], batch_size: int = 64,
           shuffle: bool = False) -> DataLoader:
    """A DataLoader over ``dataset[indices]``; ids are collated into a LongTensor."""
    return DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(0))


class LookupCounter:
    """Counts cache hits/misses of a backend and samples computed by an extractor over a block."""

    def __init__(self, backend: ArrowIPCCacheBackend, extractor: FrozenExtractor) -> None:
        self.backend, self.extractor = backend, extractor

    def __enter__(self) -> "LookupCounter":
        stats = self.backend.stats()
        self._hits, self._misses, self._computed = stats["hits"], stats["misses"], self.extractor.computed
        return self

    def __exit__(self, *exc_info: object) -> None:
        stats = self.backend.stats()
        self.hits = stats["hits"] - self._hits
        self.lookups = self.hits + stats["misses"] - self._misses
        self.computed = self.extractor.computed - self._computed

    def __str__(self) -> str:
        return f"{self.hits:4d}/{self.lookups:<4d} cache hits, {self.computed:4d} computed"


def run_extractor(cached: CacheModuleDecorator, batches: DataLoader) -> None:
    """Pushes every batch through the cached extractor (a feature-extraction pass)."""
    for batch in batches:
        cached(batch["input"], cache_ids=batch["ids"])


def train(logits_of: Callable[[dict], torch.Tensor], params: Iterable[nn.Parameter], batches: DataLoader,
          epochs: int = 2) -> None:
    """Trains ``params`` with cross-entropy on ``logits_of(batch)``."""
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for _ in range(epochs):
        for batch in batches:
            loss = nn.functional.cross_entropy(logits_of(batch), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@torch.no_grad()
def accuracy(logits_of: Callable[[dict], torch.Tensor], batches: DataLoader) -> float:
    correct = total = 0
    for batch in batches:
        correct += int((logits_of(batch).argmax(1) == batch["label"]).sum())
        total += len(batch["label"])
    return 100.0 * correct / max(total, 1)


def header(title: str) -> None:
    print(f"\n=== {title} ===")


# ----------------------------------------------------------------------------- 1. K-fold


def kfold_cross_validation(cache_dir: Path, num_samples: int = 500, k: int = 5) -> None:
    """One cache shared across folds: fold N reuses every feature of folds 0..N-1."""
    header(f"1. {k}-fold cross-validation (one cache for all folds)")
    dataset = ToyDataset(num_samples)
    extractor = FrozenExtractor()
    folds = [list(range(f, num_samples, k)) for f in range(k)]
    with ArrowIPCCacheBackend(cache_dir, module_id="kfold_features_v1") as backend:
        cached = CacheModuleDecorator(extractor, backend, enabled=True)

        for fold in range(k):
            train_ids = [i for f in range(k) if f != fold for i in folds[f]]
            head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

            def logits_of(batch: dict) -> torch.Tensor:
                return head(cached(batch["input"], cache_ids=batch["ids"]))

            with LookupCounter(backend, extractor) as train_count:
                train(logits_of, head.parameters(), loader(dataset, train_ids, shuffle=True), epochs=1)
            with LookupCounter(backend, extractor) as val_count:
                acc = accuracy(logits_of, loader(dataset, folds[fold]))
            backend.flush()
            print(f"fold {fold}: train {train_count} | val {val_count} | val accuracy {acc:5.1f}%")
        print(f"cache: {len(backend)} samples; the extractor ran {extractor.computed} times in total "
              f"for {k} folds x {num_samples} samples")


# ----------------------------------------------------------------------------- 2. DDP


def ddp_single_writer(cache_dir: Path, num_samples: int = 256) -> None:
    """Two ranks simulated in one process: rank 0 writes, rank 1 only reads."""
    header("2. DDP single writer (two ranks simulated in one process)")
    dataset = ToyDataset(num_samples)
    shards = [list(range(rank, num_samples, 2)) for rank in range(2)]  # like DistributedSampler
    with contextlib.ExitStack() as stack:  # closes both ranks' backends
        ranks = []
        for rank in range(2):
            # In real DDP: current_rank=int(os.environ["RANK"]), one process per rank.
            backend = stack.enter_context(ArrowIPCCacheBackend(cache_dir, module_id="ddp_features_v1",
                                                               writer_rank=0, current_rank=rank))
            extractor = FrozenExtractor()
            ranks.append((backend, extractor, CacheModuleDecorator(extractor, backend, enabled=True)))

        print("epoch 1: every rank computes its own shard")
        for rank, (backend, extractor, cached) in enumerate(ranks):
            with LookupCounter(backend, extractor) as count:
                run_extractor(cached, loader(dataset, shards[rank]))
            print(f"  rank {rank}: {count}")
        for rank, (backend, _, _) in enumerate(ranks):
            backend.flush()  # every rank may call flush; only the writer has anything to write
            stats = backend.stats()
            print(f"  rank {rank} after flush: rows_written={stats['rows_written']}, "
                  f"bytes_written={stats['bytes_written']}")
        segments_dir = Path(ranks[0][0].path) / "segments"
        print(f"  on disk: {sorted(p.name for p in segments_dir.glob('*.arrow'))}")

        backend1, extractor1, cached1 = ranks[1]
        print("epoch 2 on rank 1:")
        with LookupCounter(backend1, extractor1) as count:
            run_extractor(cached1, loader(dataset, shards[1]))
        print(f"  own shard again (served from rank 1's hot cache): {count}")
        loaded = backend1.refresh()
        print(f"  refresh() loaded {loaded} new segment(s) written by rank 0")
        with LookupCounter(backend1, extractor1) as count:
            run_extractor(cached1, loader(dataset, shards[0]))
        print(f"  rank 0's shard (read from rank 0's segments): {count}")

    with ArrowIPCCacheBackend(cache_dir, module_id="ddp_features_v1") as reopened:
        print(f"a later run opens {len(reopened)} cached samples: rank 0's {len(shards[0])} "
              f"(rank 1 persisted nothing)")


# ----------------------------------------------------------------------------- 3. multiple models


class Classifier(nn.Module):
    """A model that owns the shared cached extractor and a trainable head."""

    def __init__(self, features: CacheModuleDecorator, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, cache_ids=ids))


def multiple_models(cache_dir: Path, num_samples: int = 512) -> None:
    """Models A, B and C share one cached extractor: A fills the cache, B and C only read."""
    header("3. Multiple models sharing one cached extractor")
    dataset = ToyDataset(num_samples)
    batches = loader(dataset, range(num_samples), shuffle=True)
    extractor = FrozenExtractor()
    with ArrowIPCCacheBackend(cache_dir, module_id="shared_features_v1") as backend:
        cached = CacheModuleDecorator(extractor, backend, enabled=True)
        models = {
            "A (linear)": Classifier(cached, nn.Linear(FEATURE_DIM, NUM_CLASSES)),
            "B (MLP)": Classifier(cached, nn.Sequential(nn.Linear(FEATURE_DIM, 32), nn.ReLU(),
                                                        nn.Linear(32, NUM_CLASSES))),
            "C (deep MLP)": Classifier(cached, nn.Sequential(nn.Linear(FEATURE_DIM, 64), nn.Tanh(),
                                                             nn.Linear(64, 32), nn.Tanh(),
                                                             nn.Linear(32, NUM_CLASSES))),
        }
        for name, model in models.items():

            def logits_of(batch: dict, model: Classifier = model) -> torch.Tensor:
                return model(batch["input"], batch["ids"])

            # Only the head trains: the shared extractor's parameters are frozen.
            trainable = [p for p in model.parameters() if p.requires_grad]
            start = time.perf_counter()
            with LookupCounter(backend, extractor) as count:
                train(logits_of, trainable, batches)
            backend.flush()
            acc = accuracy(logits_of, batches)
            print(f"model {name:12s}: 2 epochs in {time.perf_counter() - start:5.2f} s, {count}, "
                  f"train accuracy {acc:5.1f}%")


# ----------------------------------------------------------------------------- 4. complex outputs


class MultiHeadExtractor(nn.Module):
    """Returns a dict: two tensors of different dtypes and JSON metadata."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.visual_head = nn.Conv2d(3, 8, 3, padding=1)
        self.semantic_head = nn.Linear(3 * 32 * 32, 16)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> Dict[str, object]:
        return {
            "visual": self.visual_head(x),                                     # float32 (B, 8, 32, 32)
            "semantic": self.semantic_head(x.flatten(1)).to(torch.bfloat16),  # bfloat16 (B, 16)
            "metadata": {"width": x.shape[-1]},                                # JSON, per sample
        }


class TupleExtractor(nn.Module):
    """Returns a tuple: half-precision embeddings and an int64 code per sample."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.proj = nn.Linear(3 * 32 * 32, 32)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        embedding = self.proj(x.flatten(1))
        return embedding.half(), embedding.argmax(dim=1)


def describe(output: object) -> str:
    """A one-line summary of an output's structure, shapes and dtypes."""
    if isinstance(output, torch.Tensor):
        return f"Tensor{tuple(output.shape)} {output.dtype}"
    if isinstance(output, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in output.items()) + "}"
    if isinstance(output, tuple):
        return "(" + ", ".join(describe(v) for v in output) + ")"
    return repr(output)


def same(a: object, b: object) -> bool:
    """Exact equality of two outputs (tensors compared bit for bit, dtypes included)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def complex_outputs(cache_dir: Path, batch_size: int = 32) -> None:
    """Dict and tuple outputs round-trip exactly, dtypes (bfloat16, float16, int64) included."""
    header("4. Complex outputs (dict with bfloat16 + JSON metadata, tuple)")
    dataset = ToyDataset(batch_size)
    x, ids = dataset.inputs, torch.arange(batch_size)
    for module_id, module in (("multihead_v1", MultiHeadExtractor()), ("tuple_v1", TupleExtractor())):
        with ArrowIPCCacheBackend(cache_dir, module_id=module_id) as backend:
            computed = CacheModuleDecorator(module, backend, enabled=True)(x, cache_ids=ids)
        # A new backend on the same directory: the outputs come back from disk.
        with ArrowIPCCacheBackend(cache_dir, module_id=module_id) as backend:
            cached = CacheModuleDecorator(module, backend, enabled=True)(x, cache_ids=ids)
            hits = backend.stats()["hits"]
        print(f"{type(module).__name__}:")
        print(f"  computed: {describe(computed)}")
        print(f"  cached:   {describe(cached)}")
        print(f"  {hits}/{batch_size} served from disk, identical to the computed output "
              f"(values and dtypes): {same(computed, cached)}")

    # The seed's per-sample API: get_batch returns one output per sample, without the batch dim.
    with ArrowIPCCacheBackend(cache_dir, module_id="multihead_v1") as backend:
        results, missing = backend.get_batch([0, 1, "not-cached"])
        print(f"get_batch([0, 1, 'not-cached']): sample 0 = {describe(results[0])}; "
              f"missing positions {missing}")


# ----------------------------------------------------------------------------- 5. progressive enrichment


def progressive_enrichment(cache_dir: Path, num_samples: int = 400) -> None:
    """Run 1 caches half of the data; run 2 (a new backend, as in a new process) computes only the rest."""
    header("5. Progressive enrichment (the cache grows across runs)")
    dataset = ToyDataset(num_samples)
    half = num_samples // 2
    for run, indices in ((1, range(half)), (2, range(num_samples))):
        extractor = FrozenExtractor()
        with ArrowIPCCacheBackend(cache_dir, module_id="progressive_features_v1") as backend:
            before = len(backend)
            cached = CacheModuleDecorator(extractor, backend, enabled=True)
            with LookupCounter(backend, extractor) as count:
                run_extractor(cached, loader(dataset, indices))
            backend.flush()
            print(f"run {run}: {len(indices)} samples requested, cache held {before}: {count}; "
                  f"cache now holds {len(backend)}")


# ----------------------------------------------------------------------------- main

PATTERNS: Dict[str, Callable[[Path], None]] = {
    "kfold": kfold_cross_validation,
    "ddp": ddp_single_writer,
    "multi-model": multiple_models,
    "complex": complex_outputs,
    "progressive": progressive_enrichment,
}


def run_patterns(names: List[str], cache_dir: Path) -> None:
    for name in names:
        PATTERNS[name](cache_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the caches here (default: a temporary directory, removed at exit)")
    parser.add_argument("--pattern", choices=sorted(PATTERNS), action="append",
                        help="run only this pattern (repeatable; default: all)")
    args = parser.parse_args()
    names = args.pattern or list(PATTERNS)

    start = time.perf_counter()
    if args.cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="torchcachex-advanced-") as tmp:
            run_patterns(names, Path(tmp))
    else:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        run_patterns(names, args.cache_dir)
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
