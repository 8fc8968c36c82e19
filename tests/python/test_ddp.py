"""DDP under ``torchrun --nproc_per_node=2`` (gloo, CPU) with a DistributedSampler.

Each test launches ``tests/python/ddp_train.py`` through ``torch.distributed.run``
(``--standalone``: a free rendezvous port on localhost), reads the JSON report
rank 0 writes, prints the hit rate per rank per epoch (``pytest -s`` shows it)
and checks it against what the mode promises:

* ``writer_rank="all"``: every rank persists its own results into its own
  segment range; after the end-of-epoch ``flush()``/barrier/``refresh()`` every
  rank serves every sample, so from epoch 2 on every rank hits 100% although
  ``set_epoch`` reshuffles the split.
* Pattern 3 (``writer_rank=0``, ``current_rank`` from ``RANK``): only rank 0
  writes. Rank 1 keeps what it computed in its hot cache and reads rank 0's
  segments, so it hits 100% from epoch 2; rank 0 never sees what rank 1
  computed and recomputes (then persists) it: its misses in an epoch are
  exactly the samples it has not computed itself before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_train.py")
WORLD = 2
SAMPLES = 96
EPOCHS = 3


def _torchrun(mode: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{mode}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={WORLD}", str(SCRIPT),
        "--mode", mode, "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
        "--epochs", str(EPOCHS), "--samples", str(SAMPLES),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    report = json.loads(out.read_text())
    assert report["world_size"] == WORLD and [r["rank"] for r in report["ranks"]] == list(range(WORLD))
    return report


def _print_hit_rates(report: dict) -> None:
    print(f"\nDDP mode {report['mode']!r}, {WORLD} ranks, {SAMPLES} samples, DistributedSampler(shuffle=True)")
    for r in report["ranks"]:
        cells = ", ".join(f"epoch {e['epoch'] + 1}: {e['hits']}/{e['samples']} = {e['hit_rate']:.0%}"
                          for e in r["epochs"])
        print(f"  rank {r['rank']} (writer id {r['writer_id']}): {cells}")


def _check_common(report: dict) -> None:
    seen_per_epoch = []
    for r in report["ranks"]:
        assert r["replicas_equal"]  # DDP kept the classifier replicas in sync
        assert r["max_abs_diff_vs_extractor"] is not None and r["max_abs_diff_vs_extractor"] < 1e-5
        for e in r["epochs"]:
            assert e["samples"] == SAMPLES // WORLD
            assert len(set(e["ids"])) == e["samples"]
            assert e["hits"] + e["misses"] == e["samples"]  # one lookup per sample
            assert e["computed"] == e["misses"]  # only the misses ran the extractor
    for epoch in range(EPOCHS):
        ids = [set(r["epochs"][epoch]["ids"]) for r in report["ranks"]]
        assert set().union(*ids) == set(range(SAMPLES))  # the sampler covers the dataset
        seen_per_epoch.append(ids)
    # The sampler reshuffles: a rank's share changes from epoch to epoch.
    assert seen_per_epoch[0][0] != seen_per_epoch[1][0]
    assert all(r["epochs"][0]["hits"] == 0 for r in report["ranks"])  # fresh cache


def _segment_ranges(report: dict) -> set:
    names = report["segment_files"]
    assert names and all(n.startswith("segment_") and n.endswith(".arrow") for n in names), names
    return {int(n[len("segment_"):-len(".arrow")]) // 1_000_000_000 for n in names}


def test_ddp_all_ranks_write_every_rank_hits_everything_from_epoch_2(tmp_path):
    report = _torchrun("all", tmp_path)
    _print_hit_rates(report)
    _check_common(report)
    ranks = report["ranks"]
    assert sorted(r["writer_id"] for r in ranks) == list(range(WORLD))  # one writer id each
    assert _segment_ranges(report) == set(range(WORLD))  # one segment range each
    assert sum(r["rows_written"] for r in ranks) == SAMPLES  # nothing computed twice
    for r in ranks:
        assert r["persist"]
        assert r["rows_written"] == SAMPLES // WORLD
        assert r["all_found_at_end"] and r["entries"] == SAMPLES
        assert r["epochs"][0]["entries_after_refresh"] == SAMPLES  # after epoch 1: everything
        for e in r["epochs"][1:]:
            assert e["hit_rate"] == 1.0 and e["computed"] == 0, (r["rank"], e["epoch"])


def test_ddp_pattern3_single_writer_behaves_as_documented(tmp_path):
    report = _torchrun("single", tmp_path)
    _print_hit_rates(report)
    _check_common(report)
    rank0, rank1 = report["ranks"]
    # Only rank 0 writes: one writer id, one segment range.
    assert rank0["persist"] and rank0["writer_id"] == 0
    assert not rank1["persist"] and rank1["writer_id"] == -1 and rank1["rows_written"] == 0
    assert _segment_ranges(report) == {0}

    computed_by = [set(), set()]  # what each rank computed so far
    for epoch in range(EPOCHS):
        e0, e1 = rank0["epochs"][epoch], rank1["epochs"][epoch]
        # Rank 0 reads only what it computed (and persisted) itself.
        assert e0["misses"] == len(set(e0["ids"]) - computed_by[0]), epoch
        # Rank 1 reads rank 0's segments plus its own hot cache.
        assert e1["misses"] == len(set(e1["ids"]) - computed_by[0] - computed_by[1]), epoch
        computed_by[0] |= set(e0["ids"])
        computed_by[1] |= set(e1["ids"])
        if epoch >= 1:
            assert e1["hit_rate"] == 1.0
    # The reshuffle makes rank 0 recompute what rank 1 computed in epoch 1:
    # the single writer does NOT make every later epoch fast on every rank.
    assert rank0["epochs"][1]["hit_rate"] < 1.0
    assert rank0["rows_written"] == len(computed_by[0])
    assert rank0["found_at_end"] == len(computed_by[0])
    # Rank 1's own results never reached the disk: only rank 0's did.
    assert rank1["found_at_end"] == len(computed_by[0] | computed_by[1])


# ------------------------------------------------------------- the API, in-process


@pytest.mark.parametrize("writer_rank, current_rank, persist", [
    (0, None, True),     # single process: writes
    ("all", None, True),
    (0, 0, True),        # Pattern 3: the writer rank
    (0, 1, False),       # Pattern 3: another rank
    (2, 2, True),
    ("all", 0, True),
    ("all", 7, True),
])
def test_writer_rank_decides_who_persists(tmp_path, writer_rank, current_rank, persist):
    from torchcachex import ArrowIPCCacheBackend

    with ArrowIPCCacheBackend(tmp_path / "c", "m_v1", writer_rank=writer_rank,
                              current_rank=current_rank) as backend:
        assert backend.persist is persist
        assert backend.writer_rank == writer_rank


@pytest.mark.parametrize("writer_rank, error", [
    ("ALL", ValueError), ("0", ValueError), ("", ValueError), (-1, ValueError),
    (1.0, TypeError), (True, TypeError), (None, TypeError),
])
def test_writer_rank_rejects_other_values(tmp_path, writer_rank, error):
    from torchcachex import ArrowIPCCacheBackend

    with pytest.raises(error, match="writer_rank"):
        ArrowIPCCacheBackend(tmp_path / "c", "m_v1", writer_rank=writer_rank, current_rank=0)


def test_all_writers_in_one_process_claim_distinct_ids_and_survive_pickling(tmp_path):
    import pickle

    import torch

    from torchcachex import ArrowIPCCacheBackend

    ranks = [ArrowIPCCacheBackend(tmp_path / "c", "m_v1", writer_rank="all", current_rank=r)
             for r in range(3)]
    for r, backend in enumerate(ranks):
        backend.put_batch_outputs([10 * r, 10 * r + 1], torch.full((2, 3), float(r)))
        backend.flush()
    assert sorted(b.stats()["writer_id"] for b in ranks) == [0, 1, 2]
    for backend in ranks:
        backend.refresh()
        assert len(backend) == 6
    copy = pickle.loads(pickle.dumps(ranks[1]))
    assert copy.writer_rank == "all" and copy.current_rank == 1 and copy.persist
    assert len(copy) == 6
    copy.close()
    for backend in ranks:
        backend.close()
