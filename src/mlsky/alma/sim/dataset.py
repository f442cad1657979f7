"""Training sets of simulated cubes, written in shards with a manifest.

``make_dataset(n, out, seed)`` simulates ``n`` random cubes (:func:`~mlsky.alma.sim.simulate.random_cube`)
on every core, or on a Dask cluster (:mod:`mlsky.alma.sim.dask`), and writes them as ``.npz``
shards of float16 arrays in mJy (dirty in mJy/beam, sky in mJy/pixel; float16 keeps three
significant digits there) with their truth tables, plus ``manifest.json``. Each cube's seed
derives from ``(seed, cube index)`` alone, so the set is the same, byte for byte, whatever the
number of workers or the engine, and the train/validation/test split is by cube.

What makes a folder trustworthy:

- one writer at a time: the writer holds ``.mlsky-writer.lock`` (a POSIX lock on a file that
  names its pid); a second writer is refused with :class:`FolderLockedError`, and the lock of
  a writer that was killed is taken over with a message;
- no half-written files: every file is written under a unique temporary name and renamed;
- each shard's sha256 and size are in the manifest: a resume verifies them and regenerates a
  bad shard, and :func:`load_shard` refuses a shard that does not match
  (:class:`BadShardError`, naming the file).

Examples
--------
>>> from mlsky.alma.sim.dataset import make_dataset, load_shard
>>> manifest = make_dataset(4, "alma_set", seed=0, shape=(8, 32, 32), workers=1)  # doctest: +SKIP
>>> shard = load_shard("alma_set", manifest["shards"][0]["file"])                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import multiprocessing as mp
import os
import resource
import socket
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from astropy.table import Table, vstack

from mlsky.alma.sim.simulate import TRUTH_COLUMNS, SimulatedCube, _check_shape, cube_header, fit_beam, random_cube
from mlsky.alma.sim.uv import ObservationConfig, channel_weights, dirty_beam
from mlsky.config import progress_options

MANIFEST = "manifest.json"
LOCK = ".mlsky-writer.lock"
FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")
#: Working memory of a worker, bytes per voxel of one cube: the float32 dirty, sky and observed
#: cubes, the complex half-plane visibilities and noise, the gridded weights and their making,
#: and the interpreter. Measured: 1.3 GB peak for a shard of 8 cubes of 128 x 256 x 256
#: (benchmarks/alma_simulate.py), of which the shard is 0.27 GB.
WORK_BYTES_PER_VOXEL = 128


class DatasetError(ValueError):
    """A data set folder that cannot be used as asked; the message names the file."""


class FolderLockedError(DatasetError):
    """Another process is writing into the folder."""


class BadShardError(DatasetError):
    """A shard that is missing, unreadable or does not match the manifest's sha256."""

    def __init__(self, message: str, file: str):
        super().__init__(message)
        self.file = file


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


def _temp_path(path: Path) -> Path:
    """A unique temporary name beside ``path`` (two writers never share one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    return Path(tmp)


def _write_atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a unique temporary name, then rename it to ``path``."""
    tmp = _temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _simulate_shard(job: tuple) -> dict:
    """Simulate and write one shard; return its manifest entry with sha256 and size, and the peak memory."""
    out, shard, seed, shape, config, write_fits = job
    dirty = np.empty((len(shard["cubes"]), *shape), np.float16)
    sky = np.empty_like(dirty)
    truths, rms, rms_channels = [], [], []
    for i, index in enumerate(shard["cubes"]):
        cube = random_cube(cube_seed(seed, index), shape=shape, config=config)
        if write_fits:
            cube.to_fits(fits_prefix(out, index), overwrite=True)
        dirty[i] = cube.dirty * 1e3
        sky[i] = cube.sky * 1e3
        truth = cube.truth[list(TRUTH_COLUMNS)]
        truth.meta.clear()
        truth["cube"] = np.full(len(truth), index, dtype=np.int64)
        truths.append(truth)
        rms.append(cube.noise_rms)
        rms_channels.append(cube.noise_rms_per_channel)
    truth = vstack(truths)
    path = Path(out) / shard["file"]
    arrays = dict(
        dirty=dirty,
        sky=sky,
        cubes=np.asarray(shard["cubes"], np.int64),
        noise_rms_mjy=np.asarray(rms, np.float32) * 1e3,
        noise_rms_per_channel_mjy=np.asarray(rms_channels, np.float32) * 1e3,
        truth=truth.as_array(),
    )
    # Noise does not compress: deflating the dirty cubes would cost more time than it saves
    # bytes. The sky models are mostly empty and shrink a hundredfold.
    _write_atomic(path, lambda tmp: _write_npz(tmp, arrays, stored=("dirty",)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
    entry = dict(shard, sha256=file_sha256(path), bytes=path.stat().st_size)
    return dict(entry=entry, peak_mb=peak_mb)


def fits_prefix(out: str | Path, index: int) -> Path:
    """Where the FITS files of cube ``index`` go: ``out/fits/cube_IIIIII`` (+ ``_dirty.fits``...)."""
    return Path(out) / "fits" / f"cube_{int(index):06d}"


def _write_npz(path: Path, arrays: dict[str, np.ndarray], stored: tuple[str, ...] = ()) -> None:
    """Write an ``.npz`` (readable by :func:`numpy.load`), deflating all members but ``stored``.

    The members' time stamps are zipfile's fixed default, so equal arrays give equal bytes.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            kind = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f"{name}.npy")
            info.compress_type = kind
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


# --- one writer per folder -----------------------------------------------------------------

_HELD: set[str] = set()
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, quiet: bool = False) -> Iterator[Path]:
    """Hold a folder for writing: ``folder/.mlsky-writer.lock``, locked and naming this process.

    The lock is a POSIX record lock (:func:`fcntl.lockf`): the system releases it when its
    process dies, so a lock file left by a killed writer still names a pid but is not locked;
    it is taken over, with a message on stderr unless ``quiet``.

    Raises
    ------
    FolderLockedError
        Another process (or another thread of this one) holds the folder.
    """
    folder = Path(folder)
    path = folder / LOCK
    key = str(path.resolve())
    with _HELD_GUARD:
        if key in _HELD:
            raise FolderLockedError(f"{folder} is already being written by this process (lock file {path})")
        _HELD.add(key)
    fd, held = None, False
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise FolderLockedError(
                f"{folder} is being written by another process ({owner}; lock file {path}); "
                "wait for it to finish or write to another folder"
            ) from None
        held = True
        # Read through the locked descriptor: closing any other descriptor of the file would
        # release a POSIX lock.
        previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if previous and not quiet:
            print(f"{folder}: taking over the lock of a writer that is no longer running ({previous})", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        if held:
            with contextlib.suppress(OSError):
                # An empty lock file means "released cleanly": the next writer says nothing.
                os.ftruncate(fd, 0)
        if fd is not None:
            os.close(fd)
        with _HELD_GUARD:
            _HELD.discard(key)


# --- making a data set ------------------------------------------------------------------------


def estimate_memory(shape, shard_size: int) -> int:
    """Bytes one worker needs to simulate a shard: one cube's working arrays plus the shard (float16 dirty and sky)."""
    voxels = int(np.prod([int(s) for s in shape]))
    return voxels * (WORK_BYTES_PER_VOXEL + 4 * int(shard_size))


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(shape, shard_size: int, workers: int) -> int:
    """Refuse a run whose workers would need more than this machine's memory; return bytes per worker.

    Raises
    ------
    DatasetError
        With the estimate, so that the user knows what to lower.
    """
    need = estimate_memory(shape, shard_size)
    total = physical_memory()
    if total is not None and need * workers > total:
        raise DatasetError(
            f"cubes of shape {tuple(int(s) for s in shape)} in shards of {shard_size} need about "
            f"{need / 1e9:.3g} GB per worker (x {workers} workers: {need * workers / 1e9:.3g} GB), and this machine "
            f"has {total / 1e9:.3g} GB; lower --shape, --shard-size or --workers"
        )
    return need


def _config_from_dict(values: dict) -> ObservationConfig:
    # JSON turned tuples (per-channel Tsys) into lists; the configuration must stay hashable.
    return ObservationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _shard_ok(out: Path, entry: dict | None, quiet: bool) -> bool:
    """Whether a shard on disk matches its manifest entry (size and sha256)."""
    if entry is None or "sha256" not in entry:
        return False
    path = out / entry["file"]
    if not path.is_file():
        return False
    if path.stat().st_size == entry["bytes"] and file_sha256(path) == entry["sha256"]:
        return True
    if not quiet:
        print(f"{path}: does not match its sha256 in the manifest; simulating it again", file=sys.stderr)
    return False


def _write_manifest(out: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1)
    _write_atomic(out / MANIFEST, lambda tmp: tmp.write_text(text))


def make_dataset(n: int, out: str | Path, seed: int = 0, workers: int | None = None, *,
                 shape=(128, 256, 256), config: ObservationConfig | None = None, shard_size: int = 8,
                 fractions=(0.8, 0.1, 0.1), progress: bool = True, fits: bool = False,
                 scheduler: str | None = None, timeout: float = 30.0) -> dict:
    """Simulate ``n`` random cubes into shards in ``out``; resume a run that stopped.

    Parameters
    ----------
    n
        Number of cubes.
    out
        Output folder (created; must not be a file).
    seed
        Seed of the data set: cube ``i`` is ``random_cube(cube_seed(seed, i))``.
    workers
        Processes (default: every core); with ``scheduler="local"``, the Dask workers.
    shape, config
        Cube shape and observation (default: the CASA reference set-up).
    shard_size
        Cubes per shard (a worker holds one shard in memory: 8 cubes of 128 x 256 x 256
        take 270 MB, and a worker 1.3 GB in all; see :func:`estimate_memory`).
    fractions
        Train, validation and test fractions (split by cube).
    progress
        Show a tqdm progress bar (and messages on stderr).
    fits
        Also write every cube as FITS (dirty cube, sky model, beam) with its truth as ECSV,
        under ``out/fits/`` (:func:`fits_prefix`), for CARTA or DS9.
    scheduler
        ``None``: processes of this machine. A Dask scheduler address (``tcp://host:8786``)
        or ``"local"`` (a ``LocalCluster``): one Dask task per shard
        (:func:`mlsky.alma.sim.dask.run_on_dask`); the workers must see ``out``.
    timeout
        Seconds to wait for the Dask scheduler to answer.

    Returns
    -------
    dict
        The manifest (also written as ``out/manifest.json``): parameters, the beam file, and
        per shard its file, split, cube indices, sha256 and size in bytes. The returned dict
        also has ``peak_memory_mb`` per worker, which is not in the file (it changes from run
        to run, while the file is the same for the same parameters).

    Raises
    ------
    DatasetError
        Bad sizes, a run that would not fit in memory, ``out`` is a file, holds a data set made
        with other parameters, or is being written by another process; an unreachable scheduler.
    """
    from tqdm.auto import tqdm

    if n < 1 or shard_size < 1:
        raise DatasetError(f"n ({n}) and shard_size ({shard_size}) must be at least 1")
    shape = _check_shape(shape)
    config = config or ObservationConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file, not a folder: give --out a folder for the shards")
    shards = _plan(n, seed, shard_size, fractions)
    workers = max(1, min(workers or os.cpu_count() or 1, len(shards)))
    if scheduler in (None, "local"):
        check_memory(shape, shard_size, workers)
    else:
        from mlsky.alma.sim.dask import check_scheduler

        check_scheduler(scheduler, timeout)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    params = dict(format=FORMAT_VERSION, n=int(n), seed=int(seed), shape=list(shape), shard_size=int(shard_size),
                  fractions=list(fractions), config=config.to_dict(), units=dict(dirty="mJy/beam", sky="mJy/pixel"),
                  dtype="float16")
    with folder_lock(out, quiet=not progress):
        manifest_path = out / MANIFEST
        old_entries = {}
        if manifest_path.is_file():
            try:
                old = json.loads(manifest_path.read_text())
            except ValueError as err:
                raise DatasetError(f"{manifest_path} is not valid JSON ({err}); delete it to start again") from err
            if old.get("params") != json.loads(json.dumps(params)):
                raise DatasetError(
                    f"{out} holds a data set made with other parameters ({manifest_path}); "
                    "use another folder or the same parameters to resume"
                )
            old_entries = {s["file"]: s for s in old.get("shards", [])}
        beam = dirty_beam(config, shape[1:], float(config.frequencies(shape[0])[shape[0] // 2]))

        def write_beam(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.save would add ".npy" to a name
                np.save(fh, beam)

        _write_atomic(out / "beam.npy", write_beam)
        entries = {s["file"]: s for s in shards}
        todo = []
        for s in shards:
            if _shard_ok(out, old_entries.get(s["file"]), quiet=not progress) and (
                not fits or all(Path(f"{fits_prefix(out, i)}_truth.ecsv").is_file() for i in s["cubes"])):
                entries[s["file"]] = old_entries[s["file"]]
            else:
                todo.append(s)
        manifest = dict(params=params, beam="beam.npy", shards=[entries[s["file"]] for s in shards], complete=False)
        _write_manifest(out, manifest)
        bar = tqdm(total=n, initial=n - sum(len(s["cubes"]) for s in todo), unit="cube", **progress_options(progress),
                   desc=f"simulating into {out}")
        jobs = [(str(out), s, seed, shape, config, fits) for s in todo]
        peak = []
        for result in _run(jobs, min(workers, len(jobs)), scheduler, timeout):
            entry = result["entry"]
            entries[entry["file"]] = entry
            manifest["shards"] = [entries[s["file"]] for s in shards]
            _write_manifest(out, manifest)
            bar.update(len(entry["cubes"]))
            peak.append(result["peak_mb"])
        bar.close()
        manifest["complete"] = True
        _write_manifest(out, manifest)
    return dict(manifest, peak_memory_mb=max(peak) if peak else None)


def _run(jobs: list, workers: int, scheduler: str | None, timeout: float) -> Iterator[dict]:
    """Run the shard jobs here (one process, or a pool) or on Dask, yielding results as they finish."""
    if not jobs:
        return
    if scheduler is not None:
        from mlsky.alma.sim.dask import run_on_dask

        yield from run_on_dask(_simulate_shard, jobs, scheduler, workers=workers, timeout=timeout)
        return
    # Computed once here, the gridded weights reach forked workers without being redone.
    channel_weights(jobs[0][4], jobs[0][3])
    if workers == 1:
        yield from map(_simulate_shard, jobs)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_simulate_shard, jobs)


# --- reading a data set -----------------------------------------------------------------------


def read_manifest(out: str | Path) -> dict:
    """The manifest of a data set folder.

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no ``manifest.json``.
    DatasetError
        If the manifest is unreadable, of another format, or of a run that has not finished.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} is not a data set made by `mlsky alma simulate`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise DatasetError(f"{path} is not valid JSON: {err}") from err
    version = manifest.get("params", {}).get("format")
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path}: data set format {version}; this mlsky reads format {FORMAT_VERSION}: simulate it again")
    return manifest


def load_shard(out: str | Path, file: str, sha256: str | None = None) -> dict:
    """One shard: ``dirty`` and ``sky`` (float32, Jy/beam and Jy/pixel), ``cubes``, ``noise_rms``,
    ``noise_rms_per_channel``, ``truth``.

    ``truth`` is an astropy Table of every source of the shard with its ``cube`` index. With
    ``sha256`` (the manifest's), the bytes are checked before they are used.

    Raises
    ------
    BadShardError
        The shard is missing, does not match ``sha256``, or cannot be read; the message names it.
    """
    path = Path(out) / file
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise BadShardError(f"{path}: cannot be read ({err.strerror or err})", file) from err
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise BadShardError(f"{path}: its sha256 does not match the manifest (damaged or replaced shard)", file)
    try:
        with np.load(io.BytesIO(raw)) as data:
            return dict(
                dirty=data["dirty"].astype(np.float32) * 1e-3,
                sky=data["sky"].astype(np.float32) * 1e-3,
                cubes=data["cubes"],
                noise_rms=data["noise_rms_mjy"].astype(np.float64) * 1e-3,
                noise_rms_per_channel=data["noise_rms_per_channel_mjy"].astype(np.float32) * 1e-3,
                truth=Table(data["truth"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise BadShardError(f"{path}: not a complete mlsky shard ({err}); run `mlsky alma simulate` again", file) from err


def check_shards(out: str | Path, manifest: dict | None = None, split: str | None = None) -> list[str]:
    """The shards (of ``split``, or all) that are missing or of the wrong size: a cheap check before a run.

    Bit flips are found by the sha256 when a shard is loaded.
    """
    manifest = manifest or read_manifest(out)
    bad = []
    for entry in manifest["shards"]:
        if split is not None and entry["split"] != split:
            continue
        path = Path(out) / entry["file"]
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            bad.append(entry["file"])
    return bad


class ShardReader:
    """Turns shards of one data set into :class:`~mlsky.alma.sim.simulate.SimulatedCube` objects.

    The FITS header of every cube (WCS, BUNIT, restoring beam) is rebuilt from the manifest's
    observation, and the beam is the set's ``beam.npy``.
    """

    def __init__(self, out: str | Path, manifest: dict | None = None):
        self.out = Path(out)
        self.manifest = manifest or read_manifest(out)
        params = self.manifest["params"]
        self.config = _config_from_dict(params["config"])
        self.shape = tuple(params["shape"])
        self.beam = np.load(self.out / self.manifest["beam"]).astype(np.float32)
        bmaj, bmin, bpa = fit_beam(self.beam)
        self.header = cube_header(self.config, self.shape, (bmaj, bmin, bpa))
        # As simulate_cube writes it, so that truth tables from shards score like fresh ones.
        self.beam_fwhm_pix = float(np.sqrt(bmaj * bmin))

    def cubes(self, entry: dict) -> list[SimulatedCube]:
        """The cubes of one shard (its manifest entry), checked against the sha256."""
        data = load_shard(self.out, entry["file"], entry.get("sha256"))
        cubes = []
        for i, index in enumerate(data["cubes"]):
            truth = data["truth"][data["truth"]["cube"] == index]
            truth.meta.update(noise_rms=float(data["noise_rms"][i]), cube=int(index), beam_fwhm_pix=self.beam_fwhm_pix)
            cubes.append(SimulatedCube(data["dirty"][i], data["sky"][i], self.beam, truth, self.header.copy(),
                                       float(data["noise_rms"][i]), data["noise_rms_per_channel"][i]))
        return cubes

    def cube(self, index: int) -> SimulatedCube:
        """Cube ``index`` of the set.

        Raises
        ------
        DatasetError
            No such cube.
        """
        for entry in self.manifest["shards"]:
            if index in entry["cubes"]:
                return self.cubes(entry)[entry["cubes"].index(index)]
        raise DatasetError(f"{self.out} has no cube {index}: its cubes are 0 to {self.manifest['params']['n'] - 1}")


def iter_cubes(out: str | Path, split: str = "train", skip_bad: bool = False) -> Iterator[SimulatedCube]:
    """Yield every cube of a split as a :class:`~mlsky.alma.sim.simulate.SimulatedCube` (float32 arrays).

    A bad shard raises :class:`BadShardError`, or with ``skip_bad`` is skipped with a message.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    reader = ShardReader(out)
    for entry in reader.manifest["shards"]:
        if entry["split"] != split:
            continue
        try:
            cubes = reader.cubes(entry)
        except BadShardError as err:
            if not skip_bad:
                raise
            print(f"skipped: {err}", file=sys.stderr)
            continue
        yield from cubes
