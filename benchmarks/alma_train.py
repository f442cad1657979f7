"""Benchmark: ALMA training throughput from shards, one process against 2-process DDP, in one run.

A small set is simulated into shards (``mlsky.alma.sim.dataset.make_dataset``); then, in fresh
processes of one CPU thread each, every rank streams its shards
(:mod:`mlsky.alma.finder.data`), builds the three networks' inputs and trains Blobs Finder,
Deep GRU and one ResNet of the battery for one epoch (:func:`mlsky.alma.finder.train.fit_network`).
Cubes per second is the set's training cubes over the slowest rank's time, from reading the
first shard to the last optimiser step. The network sizes are those of ``--scale``.

    python benchmarks/alma_train.py [--cubes 32] [--shape 64 128 128] [--scale laptop]

On a machine shared with other work the numbers are noisy; run it twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def _epoch(rank: int, world: int, port: int, folder: str, scale: str, times) -> None:
    """One rank: stream its shards, build the inputs, one epoch of each network; report seconds."""
    import torch.distributed as dist

    from mlsky.alma.finder import distributed
    from mlsky.alma.finder.data import data_shape, stream_cubes
    from mlsky.alma.finder.models import create_model
    from mlsky.alma.finder.train import BLOBS_LOSSES, fit_network, training_plan, training_sets

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    shape = data_shape(folder)
    plan = dataclasses.replace(training_plan(scale), shape=shape, input_size=-(-max(shape[1:]) // 16) * 16)
    distributed.barrier()
    start = time.perf_counter()
    sets = training_sets(stream_cubes(folder, "train", rank=rank, world_size=world), plan, np.random.default_rng(rank))
    torch.manual_seed(0)
    common = dict(epochs=1, progress=False, checkpoint=None)
    fit_network(create_model("blobs_finder", input_size=plan.input_size), *sets.blobs, BLOBS_LOSSES[plan.blobs_loss],
                batch_size=plan.batch_size, augment=True, **common)
    fit_network(create_model("deep_gru", hidden=plan.gru_hidden), *sets.gru, F.binary_cross_entropy, batch_size=64,
                **common)
    xr, yr = sets.battery
    fit_network(create_model("resnet18", width=plan.resnet_width, out_features=1), xr, yr["flux"], F.smooth_l1_loss,
                batch_size=32, **common)
    seconds = time.perf_counter() - start
    times[rank] = seconds
    distributed.shutdown()


def _run(world: int, folder: str, scale: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    times = torch.multiprocessing.get_context("spawn").Manager().dict()
    torch.multiprocessing.spawn(_epoch, args=(world, port, folder, scale, times), nprocs=world)
    return max(times.values())


def main(argv: list[str] | None = None) -> None:
    from mlsky.alma.sim.dataset import make_dataset, read_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=32, help="training cubes (default 32)")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], help="cube shape (default 64 128 128)")
    parser.add_argument("--scale", default="laptop", choices=["ci", "laptop", "paper"], help="network sizes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        make_dataset(args.cubes, folder, seed=0, shape=tuple(args.shape), shard_size=4, fractions=(1.0, 0.0, 0.0),
                     progress=False)
        n = sum(len(s["cubes"]) for s in read_manifest(folder)["shards"])
        one = _run(1, folder, args.scale)
        two = _run(2, folder, args.scale)
    print(f"{n} training cubes of {tuple(args.shape)}, networks at scale {args.scale!r}, one epoch of Blobs Finder, "
          f"Deep GRU and one ResNet, on {os.cpu_count()} CPU cores (1 thread per process)")
    print(f"1 process:            {n / one:.2f} cubes/s ({one:.1f} s)")
    print(f"2-process DDP (gloo): {n / two:.2f} cubes/s ({two:.1f} s), speed-up {one / two:.2f}x")


if __name__ == "__main__":
    main()
