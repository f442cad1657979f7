"""Cubes for training, streamed from a set made by ``mlsky alma simulate``.

:class:`ShardCubes` is an :class:`~torch.utils.data.IterableDataset` over the shards of one
split (``train``, ``val`` or ``test``, as the manifest assigns them). Shards are dealt out
round-robin: first to the ranks of a distributed run (:mod:`mlsky.alma.finder.distributed`),
then to the :class:`~torch.utils.data.DataLoader` workers of each rank, so every shard is read
once, by one process, and only the shards being read are in memory. Each shard's sha256 is
checked against the manifest before it is used; a bad shard stops the run with its name, or
with ``skip_bad`` is skipped and counted.

Examples
--------
>>> from mlsky.alma.finder.data import stream_cubes
>>> for cube in stream_cubes("cubes/", "train", workers=2):   # doctest: +SKIP
...     print(cube.truth.meta["cube"], cube.dirty.shape)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mlsky.alma.finder import distributed
from mlsky.alma.sim.dataset import BadShardError, DatasetError, ShardReader, check_shards, read_manifest
from mlsky.alma.sim.simulate import SimulatedCube


class ShardCubes(IterableDataset):
    """The cubes of one split of a simulated set, shard by shard (see the module's docstring).

    Parameters
    ----------
    folder
        A folder written by ``mlsky alma simulate`` (complete).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    rank, world_size
        This process's share of the shards in a distributed run.
    skip_bad
        Skip a shard that fails its checksum or cannot be read (with a message on stderr)
        instead of stopping.

    Raises
    ------
    DatasetError
        The set is incomplete, or (without ``skip_bad``) a shard is missing or of the wrong size.
    """

    def __init__(self, folder: str | Path, split: str = "train", *, rank: int = 0, world_size: int = 1,
                 skip_bad: bool = False):
        self.folder = Path(folder)
        manifest = read_manifest(folder)
        if not manifest.get("complete"):
            raise DatasetError(f"{self.folder / 'manifest.json'}: the set is incomplete; "
                               "run the same `mlsky alma simulate` command again to finish it")
        self.manifest = manifest
        self.skip_bad = skip_bad
        shards = [s for s in manifest["shards"] if s["split"] == split]
        if not shards:
            raise DatasetError(f"{self.folder}: no {split} cubes in the manifest")
        bad = check_shards(folder, manifest, split)
        if bad and not skip_bad:
            raise BadShardError(f"{self.folder / bad[0]}: missing or of the wrong size"
                                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                                + "; simulate again or pass --skip-bad", bad[0])
        if bad and rank == 0:
            print(f"{self.folder}: skipping {len(bad)} {split} shard(s) missing or of the wrong size: "
                  f"{', '.join(bad)}", file=sys.stderr)
        mine = shards[rank::world_size]
        self.dropped = [s for s in mine if s["file"] in bad]
        self.shards = [s for s in mine if s["file"] not in bad]
        self.split = split

    @property
    def n_cubes(self) -> int:
        """Cubes in this process's shards."""
        return sum(len(s["cubes"]) for s in self.shards)

    def __iter__(self) -> Iterator[SimulatedCube]:
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        reader = ShardReader(self.folder, self.manifest)
        for entry in mine:
            try:
                cubes = reader.cubes(entry)
            except BadShardError as err:
                if not self.skip_bad:
                    raise
                print(f"skipped: {err}", file=sys.stderr)
                continue
            yield from cubes


def _one(item):
    return item


def stream_cubes(folder: str | Path, split: str = "train", *, workers: int = 0, rank: int = 0,
                 world_size: int = 1, skip_bad: bool = False, limit: int | None = None) -> Iterator[SimulatedCube]:
    """Yield the cubes of a split (this rank's share), read by ``workers`` DataLoader processes.

    ``limit`` stops after that many cubes. Bad shards: see :class:`ShardCubes`.
    """
    dataset = ShardCubes(folder, split, rank=rank, world_size=world_size, skip_bad=skip_bad)
    loader = DataLoader(dataset, batch_size=None, collate_fn=_one, num_workers=workers,
                        prefetch_factor=1 if workers else None, persistent_workers=False)
    expected = dataset.n_cubes + sum(len(s["cubes"]) for s in dataset.dropped)
    seen = 0
    for cube in loader:
        if limit is not None and seen >= limit:
            return
        seen += 1
        yield cube
    if seen < expected:
        print(f"{dataset.folder}: {expected - seen} of {expected} {split} cubes skipped in bad shards", file=sys.stderr)


def data_shape(folder: str | Path) -> tuple[int, int, int]:
    """The cube shape ``(n_chan, ny, nx)`` of a simulated set."""
    return tuple(read_manifest(folder)["params"]["shape"])


def data_id(folder: str | Path) -> str:
    """An identity of a set for checkpoints: its seed, size, shape and shard checksums, hashed."""
    manifest = read_manifest(folder)
    key = json.dumps([manifest["params"], [s.get("sha256") for s in manifest["shards"]]], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]




def pipeline_data(folder: str | Path, plan, out: str | Path, *, skip_bad: bool = False,
                  workers: int = 0) -> tuple:
    """What :func:`~mlsky.alma.finder.train.train_pipeline` trains on when given a simulated set.

    Returns the plan fitted to the set's cubes (their shape; Blobs Finder's input the next
    multiple of 16 of their width), this rank's stream of training cubes, and the first
    ``plan.n_val`` validation cubes (every rank the same: the validation loss and the
    thresholds need them all). The set's identity is recorded in ``out/data.json`` by rank 0,
    and a resume on another set is refused.

    Raises
    ------
    DatasetError
        A bad set or shard, or ``out`` holds checkpoints trained on another set.
    """
    shape = data_shape(folder)
    size = -(-max(shape[1:]) // 16) * 16
    plan = dataclasses.replace(plan, shape=shape, input_size=size)
    record = Path(out) / "data.json"
    ident = dict(data=str(Path(folder).resolve()), id=data_id(folder))
    if record.is_file():
        old = json.loads(record.read_text())
        if old.get("id") != ident["id"]:
            raise DatasetError(f"{out} holds checkpoints trained on another data set ({old.get('data')}, {record}); "
                               "train into another folder")
    elif distributed.is_main():
        tmp = record.with_name(f".{record.name}.{os.getpid()}.part")
        tmp.write_text(json.dumps(ident, indent=1))
        os.replace(tmp, record)
    train = ShardCubes(folder, "train", rank=distributed.rank(), world_size=distributed.world_size(),
                       skip_bad=skip_bad)
    if train.n_cubes == 0:
        raise DatasetError(f"{folder}: rank {distributed.rank()} of {distributed.world_size()} has no training shard; "
                           "use fewer processes or smaller shards")
    cubes = stream_cubes(folder, "train", workers=workers, rank=distributed.rank(),
                         world_size=distributed.world_size(), skip_bad=skip_bad)
    val = list(stream_cubes(folder, "val", skip_bad=skip_bad, limit=plan.n_val))
    return plan, cubes, val


__all__ = ["ShardCubes", "data_id", "data_shape", "pipeline_data", "stream_cubes"]
