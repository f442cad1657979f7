"""Training sets of simulated cubes, written in shards with a manifest.

``make_dataset(n, out, seed)`` simulates ``n`` random cubes (:func:`~mlsky.alma.sim.simulate.random_cube`)
on every core and writes them as ``.npz`` shards of float16 arrays in mJy (dirty
in mJy/beam, sky in mJy/pixel; float16 keeps three significant digits there) with their
truth tables, plus ``manifest.json``. Each cube's seed derives from ``(seed, cube index)``
alone, so the set is the same whatever the number of workers, and the train/validation/test
split is by cube. Shards are written under a temporary name and renamed when complete, so
an interrupted run is resumed by running it again: complete shards are kept.

Examples
--------
>>> from mlsky.alma.sim.dataset import make_dataset, load_shard
>>> manifest = make_dataset(4, "alma_set", seed=0, shape=(8, 32, 32), workers=1)  # doctest: +SKIP
>>> shard = load_shard("alma_set", manifest["shards"][0]["file"])                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import sys
import zipfile
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from mlsky.alma.sim.simulate import TRUTH_COLUMNS, _check_shape, random_cube
from mlsky.alma.sim.uv import ObservationConfig, channel_weights, dirty_beam

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


def cube_seed(seed: int, index: int) -> int:
    """The seed of cube ``index`` of a data set made with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> 1)


def split_cubes(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Assign cube indices to train/val/test at random (by ``seed``), in the given fractions."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1):
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng([int(seed), 7]).permutation(n)
    n_val, n_test = int(round(fractions[1] * n)), int(round(fractions[2] * n))
    n_train = n - n_val - n_test
    parts = np.split(order, [n_train, n_train + n_val])
    return {name: np.sort(part) for name, part in zip(SPLITS, parts)}


def _plan(n: int, seed: int, shard_size: int, fractions) -> list[dict]:
    shards = []
    for split, ids in split_cubes(n, seed, fractions).items():
        for k in range(0, len(ids), shard_size):
            chunk = ids[k : k + shard_size]
            shards.append(dict(file=f"{split}_{k // shard_size:05d}.npz", split=split, cubes=chunk.tolist()))
    return shards


def _simulate_shard(job: tuple) -> tuple[str, int, float]:
    out, shard, seed, shape, config = job
    dirty = np.empty((len(shard["cubes"]), *shape), np.float16)
    sky = np.empty_like(dirty)
    truths, rms = [], []
    for i, index in enumerate(shard["cubes"]):
        cube = random_cube(cube_seed(seed, index), shape=shape, config=config)
        dirty[i] = cube.dirty * 1e3
        sky[i] = cube.sky * 1e3
        truth = cube.truth[list(TRUTH_COLUMNS)]
        truth.meta.clear()
        truth["cube"] = np.full(len(truth), index, dtype=np.int64)
        truths.append(truth)
        rms.append(cube.noise_rms)
    truth = vstack(truths)
    path = Path(out) / shard["file"]
    tmp = path.with_name(path.name + ".part.npz")
    _write_npz(
        tmp,
        dict(
            dirty=dirty,
            sky=sky,
            cubes=np.asarray(shard["cubes"], np.int64),
            noise_rms_mjy=np.asarray(rms, np.float32) * 1e3,
            truth=truth.as_array(),
        ),
        # Noise does not compress: deflating the dirty cubes would cost more time than
        # it saves bytes. The sky models are mostly empty and shrink a hundredfold.
        stored=("dirty",),
    )
    tmp.replace(path)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
    return shard["file"], len(shard["cubes"]), peak_mb


def _write_npz(path: Path, arrays: dict[str, np.ndarray], stored: tuple[str, ...] = ()) -> None:
    """Write an ``.npz`` (readable by :func:`numpy.load`), deflating all members but ``stored``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            kind = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f"{name}.npy")
            info.compress_type = kind
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


def _shard_complete(path: Path, n_cubes: int) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as data:
            return len(data["cubes"]) == n_cubes
    except (OSError, ValueError, KeyError, EOFError):
        return False


def make_dataset(n: int, out: str | Path, seed: int = 0, workers: int | None = None, *,
                 shape=(128, 256, 256), config: ObservationConfig | None = None, shard_size: int = 8,
                 fractions=(0.8, 0.1, 0.1), progress: bool = True) -> dict:
    """Simulate ``n`` random cubes into shards in ``out``; resume a run that stopped.

    Parameters
    ----------
    n
        Number of cubes.
    out
        Output folder (created).
    seed
        Seed of the data set: cube ``i`` is ``random_cube(cube_seed(seed, i))``.
    workers
        Processes (default: every core).
    shape, config
        Cube shape and observation (default: the CASA reference set-up).
    shard_size
        Cubes per shard (a worker holds one shard in memory: 8 cubes of 128 x 256 x 256
        take 270 MB).
    fractions
        Train, validation and test fractions (split by cube).
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict
        The manifest (also written as ``out/manifest.json``): parameters, the beam file, and
        per shard its file, split and cube indices; ``peak_memory_mb`` per worker.

    Raises
    ------
    ValueError
        Bad sizes, or ``out`` holds a data set made with other parameters.
    """
    from tqdm.auto import tqdm

    if n < 1 or shard_size < 1:
        raise ValueError(f"n ({n}) and shard_size ({shard_size}) must be at least 1")
    shape = _check_shape(shape)
    config = config or ObservationConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(format=FORMAT_VERSION, n=int(n), seed=int(seed), shape=list(shape), shard_size=int(shard_size),
                  fractions=list(fractions), config=config.to_dict(), units=dict(dirty="mJy/beam", sky="mJy/pixel"),
                  dtype="float16")
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("params") != json.loads(json.dumps(params)):
            raise ValueError(
                f"{out} holds a data set made with other parameters ({manifest_path}); "
                "use another folder or the same parameters to resume"
            )
    shards = _plan(n, seed, shard_size, fractions)
    np.save(out / "beam.npy", dirty_beam(config, shape[1:], float(config.frequencies(shape[0])[shape[0] // 2])))
    manifest = dict(params=params, beam="beam.npy", shards=shards, complete=False)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    todo = [s for s in shards if not _shard_complete(out / s["file"], len(s["cubes"]))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    peak = []
    bar = tqdm(total=n, initial=n - sum(len(s["cubes"]) for s in todo), unit="cube", disable=not progress,
               desc=f"simulating into {out}")
    jobs = [(str(out), s, seed, shape, config) for s in todo]
    if todo:
        # Computed once here, the gridded weights reach forked workers without being redone.
        channel_weights(config, shape)
    if workers == 1:
        results = map(_simulate_shard, jobs)
        for _, count, mb in results:
            bar.update(count)
            peak.append(mb)
    else:
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers) as pool:
            for _, count, mb in pool.imap_unordered(_simulate_shard, jobs):
                bar.update(count)
                peak.append(mb)
    bar.close()
    manifest["complete"] = True
    manifest["peak_memory_mb"] = max(peak) if peak else None
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(out: str | Path) -> dict:
    """The manifest of a data set folder.

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no ``manifest.json``.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} is not a data set made by make_dataset")
    return json.loads(path.read_text())


def load_shard(out: str | Path, file: str) -> dict:
    """One shard: ``dirty`` and ``sky`` (float32, Jy/beam and Jy/pixel), ``cubes``, ``noise_rms``, ``truth``.

    ``truth`` is an astropy Table of every source of the shard with its ``cube`` index.
    """
    path = Path(out) / file
    try:
        with np.load(path) as data:
            return dict(
                dirty=data["dirty"].astype(np.float32) * 1e-3,
                sky=data["sky"].astype(np.float32) * 1e-3,
                cubes=data["cubes"],
                noise_rms=data["noise_rms_mjy"].astype(np.float64) * 1e-3,
                truth=Table(data["truth"]),
            )
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise ValueError(f"{path}: not a complete mlsky shard ({err}); delete it and run make_dataset again") from err


def iter_cubes(out: str | Path, split: str = "train"):
    """Yield ``(dirty, sky, truth)`` for every cube of a split (float32 arrays, truth Table)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    manifest = read_manifest(out)
    for shard in manifest["shards"]:
        if shard["split"] != split:
            continue
        data = load_shard(out, shard["file"])
        for i, index in enumerate(data["cubes"]):
            truth = data["truth"][data["truth"]["cube"] == index]
            yield data["dirty"][i], data["sky"][i], truth
