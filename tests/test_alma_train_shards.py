"""Training the ALMA networks from simulated shards: streaming, resume at the right batch, DDP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlsky.alma.sim.dataset import BadShardError, make_dataset

SHAPE = (16, 32, 32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """8 training cubes in 4 shards of 2 (every cube in the train split)."""
    out = tmp_path_factory.mktemp("alma") / "set"
    make_dataset(8, out, seed=1, workers=1, shape=SHAPE, shard_size=2, fractions=(1.0, 0.0, 0.0), progress=False)
    return out


def _gru_set(folder, rank=0, world=1):
    """Deep GRU items of this rank's cubes, each cube's boxes drawn from a generator of its own index."""
    from mlsky.alma.finder.cube import as_cube
    from mlsky.alma.finder.data import stream_cubes
    from mlsky.alma.finder.train import _gru_items

    xs, ys = [], []
    for sim in stream_cubes(folder, "train", rank=rank, world_size=world):
        x, y = _gru_items(sim, np.random.default_rng(sim.truth.meta["cube"]), copies=1, cube=as_cube(sim))
        xs += x
        ys += y
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


def _fit(x, y, epochs, batch_size, checkpoint=None, loss_fn=F.binary_cross_entropy, **kw):
    from mlsky.alma.finder.models import create_model
    from mlsky.alma.finder.train import fit_network

    torch.manual_seed(0)
    model = create_model("deep_gru", hidden=8)
    fit_network(model, x, y, loss_fn, epochs=epochs, batch_size=batch_size, checkpoint=checkpoint, progress=False, **kw)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, folder, batch_size, result, die_at):
    """One rank: join a gloo group, train on its shards; rank 1 may die at a given step."""
    import torch.distributed as dist

    from mlsky.alma.finder import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y = _gru_set(folder, rank, world)
    calls = [0]

    def loss_fn(pred, target):
        calls[0] += 1
        if rank == 1 and die_at is not None and calls[0] == die_at:
            os._exit(3)  # as a killed process: no clean-up, no goodbye to the group
        return F.binary_cross_entropy(pred, target)

    try:
        with distributed.stop_cleanly():
            state = _fit(x, y, epochs=3, batch_size=batch_size, loss_fn=loss_fn, checkpoint=f"{result}.pt",
                         checkpoint_every=1)
        if rank == 0:
            torch.save(state, f"{result}.state")
    except distributed.DistributedError as err:
        with open(f"{result}.rank{rank}.err", "w") as fh:
            fh.write(str(err))
    finally:
        distributed.shutdown()


def test_two_ddp_processes_equal_one_with_the_same_effective_batch(shards, tmp_path):
    x, y = _gru_set(shards)
    one = _fit(x, y, epochs=3, batch_size=len(x))
    torch.multiprocessing.spawn(_rank, args=(2, _free_port(), str(shards), len(x), str(tmp_path / "ddp"), None),
                                nprocs=2)
    two = torch.load(tmp_path / "ddp.state")
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(two[key].numpy(), one[key].numpy(), rtol=1e-4, atol=1e-6, err_msg=key)
    # Training moved the weights: the comparison is not of two untouched models.
    torch.manual_seed(0)
    from mlsky.alma.finder.models import create_model

    untouched = create_model("deep_gru", hidden=8).state_dict()
    assert any(not torch.allclose(untouched[k], one[k]) for k in one)


def test_a_rank_that_dies_stops_the_others_with_a_message(shards, tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    port, result = _free_port(), str(tmp_path / "ddp")
    procs = [ctx.Process(target=_rank, args=(r, 2, port, str(shards), 8, result, 3)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert procs[1].exitcode == 3 and procs[0].exitcode == 0
    message = open(f"{result}.rank0.err").read()
    assert message.startswith("rank 0 of 2: another rank stopped") and "last complete checkpoint is kept" in message
    # Only complete checkpoints, nothing half-written.
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))
    from mlsky.alma.finder.models.checkpoint import read_checkpoint

    assert read_checkpoint(f"{result}.pt", "deep_gru")["extra"]["position"]["batch"] >= 1


def test_resume_after_a_kill_goes_on_from_the_next_batch(shards, tmp_path):
    x, y = _gru_set(shards)
    whole = _fit(x, y, epochs=2, batch_size=8)
    calls = [0]

    def dies_in_epoch_two(pred, target):
        calls[0] += 1
        if calls[0] == -(-len(x) // 8) + 2:  # the second batch of the second epoch
            raise KeyboardInterrupt
        return F.binary_cross_entropy(pred, target)

    checkpoint = tmp_path / "gru.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit(x, y, epochs=2, batch_size=8, checkpoint=checkpoint, loss_fn=dies_in_epoch_two, checkpoint_every=1)
    from mlsky.alma.finder.models.checkpoint import read_checkpoint

    state = read_checkpoint(checkpoint, "deep_gru")
    assert state["epoch"] == 1 and state["extra"]["position"] == {"epoch": 1, "batch": 1, "total": pytest.approx(
        state["extra"]["position"]["total"])}
    resumed = _fit(x, y, epochs=2, batch_size=8, checkpoint=checkpoint, checkpoint_every=1)
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0)


def test_streaming_splits_shards_between_ranks_and_workers(shards):
    from mlsky.alma.finder.data import ShardCubes, stream_cubes

    seen = [sim.truth.meta["cube"] for sim in stream_cubes(shards, "train", workers=2)]
    assert sorted(seen) == list(range(8))
    per_rank = [[s.truth.meta["cube"] for s in stream_cubes(shards, "train", rank=r, world_size=2)] for r in (0, 1)]
    assert not set(per_rank[0]) & set(per_rank[1]) and sorted(per_rank[0] + per_rank[1]) == list(range(8))
    assert ShardCubes(shards, "train", rank=1, world_size=2).n_cubes == 4


def test_train_data_refuses_a_bad_shard_by_name_or_skips_it(shards, tmp_path, capsys):
    import shutil

    from mlsky.alma.finder.data import stream_cubes
    from mlsky.alma.sim.dataset import read_manifest
    from mlsky.cli import main

    bad = tmp_path / "set"
    shutil.copytree(shards, bad)
    entry = read_manifest(bad)["shards"][2]
    raw = bytearray((bad / entry["file"]).read_bytes())
    raw[-200] ^= 0x10
    (bad / entry["file"]).write_bytes(bytes(raw))
    with pytest.raises(BadShardError, match=entry["file"]):
        list(stream_cubes(bad, "train"))
    assert len(list(stream_cubes(bad, "train", skip_bad=True))) == 6
    err = capsys.readouterr().err
    assert f"skipped: {bad / entry['file']}" in err and "2 of 8 train cubes skipped in bad shards" in err
    (bad / read_manifest(bad)["shards"][0]["file"]).write_bytes(b"truncated")
    assert main(["alma", "train", "--data", str(bad), "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlsky alma: error: ") and "train_00000.npz: missing or of the wrong size" in err
    assert "--skip-bad" in err and len(err.splitlines()) == 1


def test_train_data_refuses_an_unfinished_set(tmp_path, capsys):
    import json

    from mlsky.cli import main

    out = tmp_path / "set"
    make_dataset(2, out, seed=1, workers=1, shape=SHAPE, shard_size=2, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["alma", "train", "--data", str(out), "--out", str(tmp_path / "w")]) == 2
    assert "the set is incomplete" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_trains_the_pipeline_on_two_processes(tmp_path):
    folder = tmp_path / "set"
    make_dataset(12, folder, seed=0, workers=1, shape=SHAPE, shard_size=2, progress=False)
    env = dict(os.environ, MLSKY_SCALE="ci", OMP_NUM_THREADS="1")
    out = tmp_path / "weights"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
         "-m", "mlsky", "alma", "train", "--data", str(folder), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("validation: precision") == 1 and "distributed: 2 processes" in run.stdout
    # The default plan: the fully convolutional finder and the GRU (sources are measured on the cube).
    assert (out / "pipeline.json").is_file() and {p.name for p in out.glob("*.pt")} == {"blobs_finder.pt", "deep_gru.pt"}
