"""Shared fixtures and helpers for the torchcachex Python tests."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from typing import Callable, List

import pytest
import torch
from torch import nn

from torchcachex import ArrowIPCCacheBackend


class Recorder(nn.Module):
    """Wraps a function of a batch; records every call's batch size.

    ``calls`` counts forward calls, ``rows`` lists the batch size of each call and
    ``seen`` collects the first column of every input row (tests put the sample
    number there, so they can tell which samples the module computed).
    """

    def __init__(self, fn: Callable[[torch.Tensor], object]):
        super().__init__()
        self.fn = fn
        self.calls = 0
        self.rows: List[int] = []
        self.seen: List[int] = []

    def forward(self, x: torch.Tensor):
        self.calls += 1
        self.rows.append(x.shape[0])
        self.seen.extend(int(v) for v in x[:, 0].tolist())
        return self.fn(x)


class FrozenLinear(nn.Module):
    """A deterministic, frozen feature extractor: x -> x @ W^T + b (float32).

    ``calls`` counts forward calls; ``seen`` lists the sample numbers computed.
    """

    def __init__(self, in_features: int = 4, out_features: int = 3, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(in_features, out_features)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(out_features, in_features, generator=generator))
            self.linear.bias.copy_(torch.randn(out_features, generator=generator))
        self.requires_grad_(False)
        self.calls = 0
        self.seen: List[int] = []

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The output, computed row by row independently of the batch size (bit-exact)."""
        return (x.unsqueeze(1) * self.linear.weight).sum(-1) + self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.seen.extend(int(v) for v in x[:, 0].tolist())
        return self.reference(x)


def inputs_for(ids: List[int], features: int = 4) -> torch.Tensor:
    """Deterministic inputs for sample ids: row i starts with ids[i]."""
    rows = [[float(i)] + [float((i * 7 + k) % 11) / 3.0 for k in range(1, features)] for i in ids]
    return torch.tensor(rows, dtype=torch.float32)


@pytest.fixture
def make_backend(tmp_path):
    """Factory of backends under ``tmp_path``; closes them at teardown."""
    created: List[ArrowIPCCacheBackend] = []

    def make(module_id: str = "features_v1", **kwargs) -> ArrowIPCCacheBackend:
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        backend = ArrowIPCCacheBackend(module_id=module_id, **kwargs)
        created.append(backend)
        return backend

    yield make
    for backend in created:
        backend.close()


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (same environment); fails the test on error."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True if two tensors have the same dtype, shape and bytes (NaN payloads included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(a.reshape(-1).contiguous().view(torch.uint8),
                       b.reshape(-1).contiguous().view(torch.uint8))


def random_tensor(dtype: torch.dtype, *shape: int, seed: int = 0) -> torch.Tensor:
    """Random bit patterns of ``dtype`` (NaNs with payloads included for floats)."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    numel = math.prod(shape)
    raw = torch.randint(0, 256, (numel * dtype.itemsize,), dtype=torch.uint8, generator=generator)
    return raw.view(dtype).reshape(shape)
