"""DDP training on cached features; the script ``torchrun`` runs for test_ddp.py.

    python -m torch.distributed.run --nproc_per_node=2 --master_port=29500 \\
        tests/python/ddp_train.py --mode all --cache-dir /tmp/cache --out /tmp/ddp.json

A small frozen conv extractor (plain torch) is wrapped in CacheModuleDecorator;
a synthetic dataset with stable ids is split by a DistributedSampler that
reshuffles every epoch (``set_epoch``); a DDP-wrapped linear classifier trains
on the (cached) features over the gloo backend on CPU. At the end of every epoch
each rank runs ``backend.flush()``, ``dist.barrier()``, ``backend.refresh()``.

Modes:
  single  the seed's Pattern 3: writer_rank=0, current_rank=RANK. Only rank 0
          writes to disk; other ranks keep their own results in their hot cache.
  all     writer_rank="all": every rank persists its own results into its own
          segment range (its own writer id), with no coordination.

Rank 0 writes one JSON file (``--out``) holding, per rank and per epoch: hits,
misses, hit rate, samples the extractor computed, and the ids seen; per rank:
writer id, rows written, segments loaded, and a check that cached features
equal the extractor's; plus the segment files of the cache.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator

MODULE_ID = "ddp_conv_features_v1"
CLASSES = 4


class SyntheticImages(Dataset):
    """Sample ``i`` is a 3x16x16 image drawn from a generator seeded with ``i``: stable ids."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        generator = torch.Generator().manual_seed(1000 + i)
        image = torch.randn(3, 16, 16, generator=generator)
        return {"image": image, "label": i % CLASSES, "cache_ids": i}


class ConvExtractor(nn.Module):
    """A small frozen conv feature extractor: (B, 3, 16, 16) -> (B, 32). Counts computed samples."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.requires_grad_(False)
        self.eval()
        self.computed = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.computed += x.shape[0]
        return self.body(x)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["single", "all"], required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--out", required=True, help="JSON file written by rank 0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    dist.init_process_group(backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)

    backend = ArrowIPCCacheBackend(
        args.cache_dir,
        MODULE_ID,
        lru_size=4096,  # a non-writing rank keeps all its own results in RAM
        writer_rank=0 if args.mode == "single" else "all",
        current_rank=int(os.getenv("RANK", 0)),  # as in the examples guide's Pattern 3
    )
    assert backend.current_rank == rank
    extractor = ConvExtractor()
    features = CacheModuleDecorator(extractor, backend, enabled=True, enforce_stateless=True)
    classifier = DistributedDataParallel(nn.Linear(32, CLASSES))
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1)

    dataset = SyntheticImages(args.samples)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)

    epochs = []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a different split of the samples every epoch
        before = backend.stats()
        computed_before = extractor.computed
        ids, losses = [], []
        for batch in loader:
            f = features(batch["image"], cache_ids=batch["cache_ids"])
            loss = nn.functional.cross_entropy(classifier(f), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ids.extend(batch["cache_ids"].tolist())
            losses.append(loss.item())
        after = backend.stats()
        hits = after["hits"] - before["hits"]
        misses = after["misses"] - before["misses"]
        # End of epoch: make this rank's rows durable, wait for every rank,
        # then load the segments the other ranks wrote.
        backend.flush()
        dist.barrier()
        loaded = backend.refresh()
        epochs.append({
            "epoch": epoch,
            "samples": len(ids),
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / max(1, hits + misses),
            "computed": extractor.computed - computed_before,
            "ids": ids,
            "segments_loaded_by_refresh": loaded,
            "entries_after_refresh": backend.stats()["entries"],
            "mean_loss": sum(losses) / len(losses),
        })

    # Cached features (served from disk/hot cache) equal freshly computed ones
    # (up to float rounding: the reference is computed in one batch of all samples).
    all_ids = list(range(args.samples))
    images = torch.stack([dataset[i]["image"] for i in all_ids])
    cached = backend.lookup_batch(all_ids)
    reference = extractor.body(images)
    found = cached.found.tolist()
    served = [i for i in all_ids if found[i]]
    max_diff = None
    if served:
        rows = backend.get_batch(served)[0]
        max_diff = max(float((row - reference[i]).abs().max()) for i, row in zip(served, rows))
    # DDP kept the classifier replicas identical.
    weights = [torch.zeros_like(classifier.module.weight) for _ in range(world)]
    dist.all_gather(weights, classifier.module.weight.detach())
    replicas_equal = all(torch.equal(w, weights[0]) for w in weights)

    stats = backend.stats()
    report = {
        "rank": rank,
        "persist": backend.persist,
        "writer_id": stats["writer_id"],
        "rows_written": stats["rows_written"],
        "segments": stats["segments"],
        "entries": stats["entries"],
        "all_found_at_end": all(found),
        "found_at_end": sum(found),
        "max_abs_diff_vs_extractor": max_diff,
        "replicas_equal": replicas_equal,
        "epochs": epochs,
    }
    reports = [None] * world
    dist.all_gather_object(reports, report)
    backend.close()
    dist.barrier()
    if rank == 0:
        segments_dir = os.path.join(args.cache_dir, MODULE_ID, "segments")
        result = {
            "mode": args.mode,
            "world_size": world,
            "samples": args.samples,
            "segment_files": sorted(os.listdir(segments_dir)),
            "ranks": reports,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    # Every rank tears the gloo group down together, so that none destroys it and
    # exits while another still uses it (the suspected cause of two intermittent
    # aborts, "terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
