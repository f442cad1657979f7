"""Tests of ALMA training sets at scale: one writer per folder, shard checksums, Dask, FITS export."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from mlsky.alma.sim.dataset import (
    BadShardError,
    FolderLockedError,
    folder_lock,
    iter_cubes,
    load_shard,
    make_dataset,
    read_manifest,
)

KW = dict(shape=(8, 32, 32), shard_size=2, progress=False)


def _flip_a_bit(path, offset=-100):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_second_writer_is_refused_and_a_dead_writers_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "set"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom mlsky.alma.sim.dataset import folder_lock\n"
         f"with folder_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=rf"being written by another process \(pid {holder.pid} "):
            make_dataset(4, out, seed=0, workers=1, **KW)
        assert not (out / "manifest.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed writer's lock file still names it, but the system released its lock.
    assert f"pid {holder.pid}" in (out / ".mlsky-writer.lock").read_text()
    make_dataset(4, out, seed=0, workers=1, shape=(8, 32, 32), shard_size=2, progress=True)
    assert f"taking over the lock of a writer that is no longer running (pid {holder.pid}" in capsys.readouterr().err
    assert read_manifest(out)["complete"]


def test_one_process_cannot_write_a_folder_twice(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(FolderLockedError, match="already being written by this process"):
            make_dataset(2, tmp_path, seed=0, workers=1, **KW)
    make_dataset(2, tmp_path, seed=0, workers=1, **KW)  # released


def test_manifest_holds_checksums_and_resume_regenerates_damaged_shards(tmp_path, capsys):
    out = tmp_path / "set"
    manifest = make_dataset(6, out, seed=2, workers=1, **KW)
    entries = manifest["shards"]
    assert all(len(e["sha256"]) == 64 and e["bytes"] == (out / e["file"]).stat().st_size for e in entries)
    good = {e["file"]: (out / e["file"]).read_bytes() for e in entries}
    truncated, flipped = entries[0]["file"], entries[1]["file"]
    (out / truncated).write_bytes(good[truncated][:1000])
    _flip_a_bit(out / flipped)
    # Bit flips count as complete by their content alone: only the checksum sees them.
    make_dataset(6, out, seed=2, workers=1, shape=(8, 32, 32), shard_size=2, progress=True)
    err = capsys.readouterr().err
    assert f"{flipped}: does not match its sha256" in err
    for name, raw in good.items():
        assert (out / name).read_bytes() == raw
    assert not list(out.glob("*.part")) and not list(out.glob(".*.part"))


def test_loading_names_a_bad_shard_or_skips_it(tmp_path, capsys):
    out = tmp_path / "set"
    manifest = make_dataset(6, out, seed=2, workers=1, **KW)
    entry = manifest["shards"][1]
    _flip_a_bit(out / entry["file"])
    with pytest.raises(BadShardError, match=rf"{entry['file']}: its sha256 does not match the manifest") as err:
        load_shard(out, entry["file"], entry["sha256"])
    assert err.value.file == entry["file"]
    with pytest.raises(BadShardError, match=entry["file"]):
        list(iter_cubes(out, "train"))
    cubes = list(iter_cubes(out, "train", skip_bad=True))
    assert len(cubes) == sum(len(e["cubes"]) for e in manifest["shards"] if e["split"] == "train") - len(entry["cubes"])
    assert f"skipped: {out / entry['file']}" in capsys.readouterr().err
    (out / entry["file"]).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BadShardError, match="not a complete mlsky shard"):
        load_shard(out, entry["file"])


def test_cubes_read_back_from_shards_are_simulated_cubes(tmp_path):
    from mlsky.alma.finder.cube import as_cube
    from mlsky.alma.sim.dataset import cube_seed
    from mlsky.alma.sim.simulate import random_cube

    out = tmp_path / "set"
    make_dataset(2, out, seed=4, workers=1, fractions=(1.0, 0.0, 0.0), **KW)
    cube = next(iter_cubes(out, "train"))
    direct = random_cube(cube_seed(4, 0), shape=(8, 32, 32))
    np.testing.assert_allclose(cube.dirty, direct.dirty, rtol=2e-3, atol=2e-3 * np.abs(direct.dirty).max())
    assert cube.header["BMAJ"] == pytest.approx(direct.header["BMAJ"], rel=1e-6)
    np.testing.assert_allclose(cube.noise_rms_per_channel, direct.noise_rms_per_channel, rtol=1e-6)
    assert list(cube.truth["x"]) == pytest.approx(list(direct.truth["x"]))
    assert as_cube(cube).data.shape == (8, 32, 32)


def test_dask_local_cluster_writes_the_same_bytes(tmp_path):
    pytest.importorskip("distributed")
    make_dataset(5, tmp_path / "mp", seed=3, workers=2, **KW)
    make_dataset(5, tmp_path / "dask", seed=3, workers=2, scheduler="local", **KW)
    names = sorted(p.name for p in (tmp_path / "mp").iterdir() if p.name != ".mlsky-writer.lock")
    assert names == sorted(p.name for p in (tmp_path / "dask").iterdir() if p.name != ".mlsky-writer.lock")
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "mp", tmp_path / "dask", names, shallow=False)
    assert (mismatch, errors) == ([], []) and "manifest.json" in match


def test_unreachable_scheduler_is_a_clear_error_within_the_timeout(tmp_path, capsys):
    import socket
    import time

    from mlsky.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    rc = main(["alma", "simulate", "--n", "2", "--out", str(tmp_path / "set"), "--shape", "8", "32", "32",
               "--scheduler", f"tcp://127.0.0.1:{port}", "--timeout", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and time.perf_counter() - start < 20
    assert f"the Dask scheduler tcp://127.0.0.1:{port} did not answer within 2 s" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "set").exists()


def test_cli_refuses_a_file_for_out_and_a_shape_beyond_memory(tmp_path, capsys):
    from mlsky.cli import main

    file = tmp_path / "a_file"
    file.write_text("x")
    assert main(["alma", "simulate", "--n", "2", "--out", str(file), "--quiet"]) == 2
    assert f"{file} is a file, not a folder" in capsys.readouterr().err
    assert main(["alma", "simulate", "--n", "2", "--out", str(tmp_path / "big"), "--shape", "4096", "4096", "4096",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "need about 1.1e+04 GB per worker" in err and "lower --shape" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "big").exists()


def test_fits_while_simulating_and_export_of_one_cube(tmp_path, capsys):
    from mlsky.cli import main

    out = tmp_path / "set"
    assert main(["alma", "simulate", "--n", "3", "--out", str(out), "--shape", "8", "32", "32", "--shard-size", "2",
                 "--workers", "1", "--fits", "--quiet"]) == 0
    with fits.open(out / "fits" / "cube_000001_dirty.fits") as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert data.shape == (8, 32, 32) and header["BUNIT"] == "Jy/beam" and header["BMAJ"] > 0
    wcs = WCS(header)
    assert wcs.has_celestial and wcs.wcs.spec == 2 and wcs.wcs.ctype[2] == "FREQ"
    assert fits.getheader(out / "fits" / "cube_000001_sky.fits")["BUNIT"] == "Jy/pixel"
    truth = Table.read(out / "fits" / "cube_000001_truth.ecsv")
    assert len(truth) >= 1 and truth.meta["noise_rms"] > 0
    assert main(["alma", "export", str(out), "--index", "1", "--out", str(tmp_path / "k1")]) == 0
    exported = fits.getdata(tmp_path / "k1_dirty.fits")
    # The shard keeps float16 mJy: three significant digits.
    np.testing.assert_allclose(exported, data, atol=2e-3 * np.abs(data).max())
    assert fits.getheader(tmp_path / "k1_dirty.fits")["BMAJ"] == pytest.approx(header["BMAJ"])
    capsys.readouterr()
    assert main(["alma", "export", str(out), "--index", "1", "--out", str(tmp_path / "k1")]) == 2
    assert "k1_dirty.fits exists; pass --overwrite" in capsys.readouterr().err
    assert main(["alma", "export", str(out), "--index", "7"]) == 2
    assert "has no cube 7" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert "peak_memory_mb" not in manifest and manifest["complete"]
