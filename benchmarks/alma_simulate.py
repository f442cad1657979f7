"""Benchmark: simulated ALMA cubes per second, against the CASA route (simobserve + tclean).

CASA is not a Python dependency of mlsky, so its figure is the one measured once on this
machine for the reference cubes of ``alma_casa_reference``: about 45 s for one 64 x 128 x 128
cube, ``simobserve`` (with ``tsys-atm`` noise) plus ``tclean(niter=0)``. The comparison is per
voxel, since the paper's training cubes (128 x 256 x 256) are 8 times larger.

It also prints what a set costs per cube at the paper's shape -- seconds, disk in shards and as
FITS, memory per worker against :func:`~mlsky.alma.sim.dataset.estimate_memory` -- and, with
``--dask``, the throughput of a Dask ``LocalCluster`` of the same number of workers.

    python benchmarks/alma_simulate.py [--cubes 8] [--workers N] [--dask]

On a machine shared with other work the numbers are noisy.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import numpy as np

from mlsky.alma.sim.dataset import estimate_memory, make_dataset
from mlsky.alma.sim.simulate import random_cube

#: Seconds CASA 6.7 took for one 64 x 128 x 128 reference cube on this machine (simobserve + tclean).
CASA_SECONDS_PER_CUBE = 45.0
CASA_SHAPE = (64, 128, 128)
SHAPE = (128, 256, 256)


def _worker_peak_mb(shard_size: int) -> float:
    """Peak resident memory (MB) of a fresh process that simulates and writes one shard."""
    from mlsky.alma.sim.dataset import _plan, _simulate_shard
    from mlsky.alma.sim.uv import ObservationConfig

    with tempfile.TemporaryDirectory() as out, mp.get_context("spawn").Pool(1) as pool:
        shard = _plan(shard_size, 0, shard_size, (1.0, 0.0, 0.0))[0]
        return pool.apply(_simulate_shard, ((out, shard, 0, SHAPE, ObservationConfig(), False),))["peak_mb"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=8, help="cubes timed in one process")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes for the data-set run")
    parser.add_argument("--dask", action="store_true", help="also time a Dask LocalCluster of --workers workers")
    args = parser.parse_args(argv)

    random_cube(0, shape=SHAPE)  # the set-up's gridded weights are computed once per process
    start = time.perf_counter()
    for seed in range(1, args.cubes + 1):
        random_cube(seed, shape=SHAPE)
    per_cube = (time.perf_counter() - start) / args.cubes
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)

    n_set = args.cubes * args.workers
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        manifest = make_dataset(n_set, out, seed=0, workers=args.workers, shape=SHAPE, shard_size=args.cubes // 2 or 1,
                                progress=False)
        set_seconds = time.perf_counter() - start
        shard_mb = sum(os.path.getsize(os.path.join(out, s["file"])) for s in manifest["shards"]) / 1e6
    dask_seconds = None
    if args.dask:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            make_dataset(n_set, out, seed=0, workers=args.workers, shape=SHAPE, shard_size=args.cubes // 2 or 1,
                         progress=False, scheduler="local")
            dask_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        files = random_cube(1, shape=SHAPE).to_fits(os.path.join(out, "cube"))
        fits_mb = sum(os.path.getsize(f) for f in files) / 1e6

    worker_mb = _worker_peak_mb(8)

    voxels, casa_voxels = np.prod(SHAPE), np.prod(CASA_SHAPE)
    casa_per_voxel = CASA_SECONDS_PER_CUBE / casa_voxels
    ours_per_voxel = per_cube / voxels
    print(f"mlsky, one process: {1 / per_cube:.2f} cubes/s at {SHAPE} ({per_cube:.3f} s per cube, "
          f"{ours_per_voxel:.2e} s/voxel), peak memory {rss_mb:.0f} MB")
    print(f"mlsky make_dataset, {args.workers} workers: {n_set / set_seconds:.2f} cubes/s incl. writing "
          f"{shard_mb / n_set:.1f} MB of float16 shards per cube")
    if dask_seconds is not None:
        print(f"mlsky make_dataset on a Dask LocalCluster of {args.workers} workers: {n_set / dask_seconds:.2f} cubes/s")
    print(f"per cube at {SHAPE}: {per_cube:.2f} s to simulate (one process), {shard_mb / n_set:.1f} MB in shards, "
          f"{fits_mb:.1f} MB as FITS (float32 dirty, sky, beam) + ECSV")
    print(f"peak memory per worker (fresh process, one shard of 8 cubes at {SHAPE}): {worker_mb:.0f} MB "
          f"(estimate_memory: {estimate_memory(SHAPE, 8) / 1e6:.0f} MB)")
    print(f"CASA simobserve + tclean (measured once): {CASA_SECONDS_PER_CUBE:.0f} s per {CASA_SHAPE} cube "
          f"({casa_per_voxel:.2e} s/voxel), i.e. {CASA_SECONDS_PER_CUBE * voxels / casa_voxels:.0f} s at {SHAPE}")
    print(f"ratio per voxel, one process vs CASA: {casa_per_voxel / ours_per_voxel:.0f}x (target >= 100x)")
    print(f"ratio per voxel, {args.workers} workers with I/O vs CASA: "
          f"{casa_per_voxel / (set_seconds / n_set / voxels):.0f}x")


if __name__ == "__main__":
    main()
