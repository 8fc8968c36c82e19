"""Basic usage: cache a frozen feature extractor while training a classifier.

This is Pattern 1 of the examples README. A small frozen convolutional network
(standing in for a pretrained backbone) turns 3x64x64 images into 256-dim
features; a linear classifier is trained on those features for a few epochs.

* The first epoch of the first run computes every feature and writes it to the
  cache; the later epochs are served from the cache.
* Running the script again reuses the cache on disk: even its first epoch is
  all hits, and the script compares its time with the first run's.

Usage::

    python examples/basic_usage.py                  # cache in examples/cache
    python examples/basic_usage.py --cache-dir /tmp/tcx
    python examples/basic_usage.py                  # run again: 100% cache hits

Everything is synthetic and seeded (no downloads), so the extractor's weights
and the images are the same on every run, which is what makes the cached
features valid across runs. With a real pretrained model, bump ``MODULE_ID``
whenever the weights or the preprocessing change (README pitfall 2).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Dict

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator

# A stable, versioned id: the cache of this module lives in <cache_dir>/<MODULE_ID>.
MODULE_ID = "toy_convnet_64px_v1"
NUM_CLASSES = 10
FEATURE_DIM = 256
TIMINGS_FILE = "basic_usage_timings.json"


class FrozenConvNet(nn.Module):
    """A small convolutional feature extractor (3x64x64 -> 256), frozen.

    It plays the role of an expensive pretrained backbone: a few milliseconds
    per sample on a CPU, and no trainable parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),  # 32x32
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),  # 16x16
            nn.ReLU(),
            nn.Conv2d(128, FEATURE_DIM, 3, stride=2, padding=1),  # 8x8
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.eval()
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class SyntheticImages(Dataset):
    """Seeded random images with a class-dependent colour shift.

    Each item is ``{"images": (3, 64, 64) float32, "sample_ids": int, "labels": int}``.
    ``sample_ids`` is the dataset index: stable across runs (README pitfall 1);
    the default collate turns a batch of them into a LongTensor.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(NUM_CLASSES, (num_samples,), generator=gen)
        class_colours = torch.randn(NUM_CLASSES, 3, 1, 1, generator=gen)
        self.images = torch.randn(num_samples, 3, 64, 64, generator=gen) + class_colours[self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> Dict[str, object]:
        return {"images": self.images[idx], "sample_ids": idx, "labels": int(self.labels[idx])}


def load_timings(path: Path) -> Dict[str, float]:
    """The timings of earlier runs, or an empty dict on the first run."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def percent(part: int, whole: int) -> str:
    """``part/whole`` as a percentage, rounded down so that "100%" means every single one."""
    if whole == 0:
        return "n/a"
    return f"{math.floor(1000 * part / whole) / 10:g}%"


def run_label(run: int) -> str:
    """"First run", "Second run", ... for the summary line."""
    return {1: "First run", 2: "Second run", 3: "Third run"}.get(run, f"Run {run}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(__file__).resolve().parent / "cache",
        help="cache directory (default: examples/cache next to this script)",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)  # same extractor weights on every run
    dataset = SyntheticImages(args.num_samples)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    extractor = FrozenConvNet()
    classifier = nn.Linear(FEATURE_DIM, NUM_CLASSES)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    timings_path = args.cache_dir / TIMINGS_FILE
    timings = load_timings(timings_path)
    run = int(timings.get("runs", 0)) + 1
    print(f"{run_label(run)} -- cache: {args.cache_dir / MODULE_ID}")

    epoch_times, epoch_hits = [], []
    with ArrowIPCCacheBackend(cache_dir=str(args.cache_dir), module_id=MODULE_ID, lru_size=4096) as backend:
        cached_extractor = CacheModuleDecorator(extractor, backend, enabled=True, enforce_stateless=True)
        print(f"cache holds {len(backend)} samples before training")

        for epoch in range(1, args.epochs + 1):
            before = backend.stats()
            start = time.perf_counter()
            correct = total = 0
            loss_sum = 0.0
            for batch in loader:
                # Cache lookup by stable ids; only the misses run the extractor.
                features = cached_extractor(batch["images"], cache_ids=batch["sample_ids"])
                logits = classifier(features)
                loss = criterion(logits, batch["labels"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(logits)
                correct += int((logits.argmax(1) == batch["labels"]).sum())
                total += len(logits)
            backend.flush()  # persist the epoch's new features (README pitfall 3)
            elapsed = time.perf_counter() - start

            after = backend.stats()
            hits = after["hits"] - before["hits"]
            lookups = hits + after["misses"] - before["misses"]
            epoch_times.append(elapsed)
            epoch_hits.append((hits, lookups))
            print(
                f"epoch {epoch}: {elapsed:6.2f} s  cache hits {hits:5d}/{lookups} "
                f"({percent(hits, lookups):>6s})  loss {loss_sum / total:.3f}  "
                f"accuracy {100.0 * correct / total:.1f}%"
            )
        stats = backend.stats()
        print(f"cache: {stats['entries']} samples in {stats['segments']} segment(s)")

    hit_pct = percent(*epoch_hits[0])
    first = timings.get("first_run_epoch1_s")
    if first is None:
        print(
            f"{run_label(run)}: epoch 1 took {epoch_times[0]:.2f} s and filled the cache "
            f"({hit_pct} cache hits). Run the script again to reuse it."
        )
        timings["first_run_epoch1_s"] = epoch_times[0]
    else:
        speedup = first / epoch_times[0]
        print(
            f"{run_label(run)}: epoch 1 took {epoch_times[0]:.2f} s vs {first:.2f} s on the first run "
            f"({speedup:.{0 if speedup >= 10 else 1}f}x faster), {hit_pct} cache hits"
        )
    timings.update(runs=run, previous_run_epoch1_s=epoch_times[0], previous_run_epoch1_hit_pct=hit_pct)
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")


if __name__ == "__main__":
    main()
