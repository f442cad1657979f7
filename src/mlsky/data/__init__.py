"""One place for the real data sets mlsky uses.

Every data set has a name, its online source and the sha256 of each file of its offline copy
(``datasets.toml`` beside this file). :func:`locate` finds a verified copy, looking in order:

1. the cache (``MLSKY_CACHE_DIR``; in a source checkout ``data/cache/``; else the user's
   cache folder), where online fetches are kept;
2. ``MLSKY_DATA_DIR``, a folder holding offline copies (one sub-folder per data set);
3. the online service, whose result is written to the cache with a manifest of checksums
   (:func:`fetch_online`: one writer at a time, resumable after an error or Ctrl-C;
   ``mlsky data fetch NAME`` on the command line).

A copy whose checksums do not match is an error that names the file, never skipped; no
data set is ever replaced by synthetic data.

Examples
--------
>>> from mlsky.data import locate
>>> folder = locate("sdss_dr5q")          # doctest: +SKIP
>>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
['SDSS_QSO.tab.gz']
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import shutil
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable, Iterator

MANIFEST = "MANIFEST.sha256"


class DataError(RuntimeError):
    """Base class of the data errors."""


class DataUnavailableError(DataError):
    """No copy of a data set was found offline and the online service could not be used."""


class DataCorruptError(DataError):
    """A copy of a data set exists but a file is missing or fails its checksum."""


@dataclass(frozen=True)
class DataSet:
    """A data set: its name, where it comes from and the checksums of its offline copy."""

    name: str
    title: str
    source: str
    files: dict[str, str] = field(default_factory=dict)
    trees: dict[str, tuple[int, str]] = field(default_factory=dict)
    online: str | None = None

    def fetcher(self) -> Callable[[Path], None] | None:
        """The function that fetches this data set from its service into a folder, if any."""
        if self.online is None:
            return None
        module, _, func = self.online.partition(":")
        return getattr(importlib.import_module(module), func)


def _load_registry() -> dict[str, DataSet]:
    with open(Path(__file__).with_name("datasets.toml"), "rb") as fh:
        raw = tomllib.load(fh)
    return {
        name: DataSet(
            name=name,
            title=entry["title"],
            source=entry["source"],
            files=dict(entry.get("files", {})),
            trees={k: (int(v[0]), str(v[1])) for k, v in entry.get("trees", {}).items()},
            online=entry.get("online"),
        )
        for name, entry in raw.items()
    }


REGISTRY: dict[str, DataSet] = _load_registry()


def get(name: str) -> DataSet:
    """The registered data set called ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def _source_checkout() -> Path | None:
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "mlsky"' in pyproject.read_text(errors="replace"):
        return root
    return None


def cache_dir() -> Path:
    """The folder where fetched data sets (and other caches) are kept."""
    if os.environ.get("MLSKY_CACHE_DIR"):
        return Path(os.environ["MLSKY_CACHE_DIR"]).expanduser()
    checkout = _source_checkout()
    if checkout is not None:
        return checkout / "data" / "cache"
    import pooch

    return Path(pooch.os_cache("mlsky"))


def data_dir() -> Path | None:
    """The folder of offline copies named by ``MLSKY_DATA_DIR``, or None when unset."""
    value = os.environ.get("MLSKY_DATA_DIR", "").strip()
    return Path(value).expanduser() if value else None


def sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(folder: Path) -> tuple[int, str]:
    """File count and sha256 over the sorted (name, sha256) pairs of the files in ``folder``."""
    digest = hashlib.sha256()
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    for name in names:
        digest.update(name.encode() + b"\0")
        digest.update(bytes.fromhex(sha256(folder / name)))
    return len(names), digest.hexdigest()


@cache
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> bool:
    # Keyed on size and mtime so a file changed in the same session is checked again.
    return sha256(Path(path)) == expected


def _check_file(path: Path, expected: str, dataset: str) -> None:
    if not path.is_file():
        raise DataCorruptError(f"data set {dataset!r}: file {path} is missing.")
    st = path.stat()
    if not _verified(str(path), st.st_size, st.st_mtime_ns, expected):
        raise DataCorruptError(
            f"data set {dataset!r}: {path} fails its checksum (expected sha256 {expected}, "
            f"found {sha256(path)}). The file is damaged or is another version: replace it "
            "with a fresh copy, or delete it so that mlsky fetches the data set again."
        )


@cache
def _check_tree(folder: str, mtime_ns: int, count: int, expected: str, dataset: str) -> None:
    found_count, found = tree_digest(Path(folder))
    if (found_count, found) != (count, expected):
        raise DataCorruptError(
            f"data set {dataset!r}: folder {folder} holds {found_count} files with tree digest "
            f"{found}; expected {count} files with digest {expected}. A file is missing, extra "
            "or damaged: replace the folder with a fresh copy."
        )


def verify(ds: DataSet, folder: Path) -> None:
    """Check every file of ``folder`` against the registry, or against its own manifest.

    A copy fetched online carries ``MANIFEST.sha256`` (written when it was fetched); an
    offline copy is checked against the registry.

    Raises
    ------
    DataCorruptError
        Naming the first file that is missing or fails its checksum.
    """
    manifest = folder / MANIFEST
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            if line.strip():
                expected, name = line.split(maxsplit=1)
                _check_file(folder / name, expected, ds.name)
        return
    for name, expected in ds.files.items():
        _check_file(folder / name, expected, ds.name)
    for name, (count, expected) in ds.trees.items():
        sub = folder / name
        if not sub.is_dir():
            raise DataCorruptError(f"data set {ds.name!r}: folder {sub} is missing.")
        _check_tree(str(sub), sub.stat().st_mtime_ns, count, expected, ds.name)


def candidates(name: str) -> list[Path]:
    """The folders where a copy of data set ``name`` is looked for, in order."""
    places = [cache_dir() / name]
    if data_dir() is not None:
        places.append(data_dir() / name)
    return places


def find_offline(name: str) -> Path | None:
    """The first verified offline copy of data set ``name``, or None if there is none.

    Raises
    ------
    DataCorruptError
        If a copy exists but fails its checksums (it is reported, not skipped).
    """
    ds = get(name)
    for folder in candidates(name):
        if folder.is_dir() and any(folder.iterdir()):
            verify(ds, folder)
            return folder
    return None


def _how_to_get(ds: DataSet) -> str:
    where = "\n".join(f"  - {p}" for p in candidates(ds.name))
    if data_dir() is None:
        where += "\n  - (MLSKY_DATA_DIR is not set)"
    return (
        f"Looked in:\n{where}\n"
        f"To use an offline copy, point MLSKY_DATA_DIR at a folder holding '{ds.name}/' "
        f"(files: {', '.join([*ds.files, *ds.trees]) or 'see the registry'})."
    )


def staging_dir(name: str) -> Path:
    """The folder an online fetch of ``name`` writes into before it is complete.

    A fetch that stops (an error, Ctrl-C) keeps there only whole files that it can resume
    from (downloaded images); the next fetch of the same data set continues from them.
    """
    return cache_dir() / f".{name}.partial"


@contextmanager
def _writer_lock(name: str) -> Iterator[None]:
    """Hold the cache's lock of data set ``name``: one fetch writes it at a time."""
    lock = cache_dir() / f".{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    # The pid is written first and linked into place in one step, so a lock is never seen empty.
    mine = lock.with_name(f"{lock.name}.{os.getpid()}")
    mine.write_text(str(os.getpid()))
    try:
        for _ in range(2):
            try:
                os.link(mine, lock)
                break
            except FileExistsError:
                owner = lock.read_text().strip()
                if owner.isdigit() and _alive(int(owner)):
                    raise DataError(f"data set {name!r} is being fetched by another process (pid {owner}, "
                                    f"lock {lock}); wait for it to finish.") from None
                lock.unlink(missing_ok=True)  # its owner is gone: the lock is stale
        else:
            raise DataError(f"could not take the lock {lock} of data set {name!r}.")
    finally:
        mine.unlink()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _discard_unfinished(folder: Path) -> int:
    """Delete the partial files (``*.part``) under ``folder``, and ``folder`` if nothing is left.

    Returns the number of whole files kept to resume from.
    """
    if not folder.is_dir():
        return 0
    for part in folder.rglob("*.part"):
        part.unlink(missing_ok=True)
    kept = sum(1 for p in folder.rglob("*") if p.is_file())
    if kept == 0:
        shutil.rmtree(folder, ignore_errors=True)
    return kept


def fetch_online(name: str, **options) -> Path:
    """Fetch data set ``name`` from its online service into the cache and return its folder.

    The fetch writes into :func:`staging_dir` first and moves it into place only when it
    is complete, with a manifest of checksums. What an interrupted or failed fetch leaves
    there is only whole files (downloaded images), which the next fetch resumes from;
    partial files are deleted in every case, Ctrl-C included. One process fetches a data set
    at a time (a lock file with its pid).

    Parameters
    ----------
    name
        A registered data set with an online source.
    **options
        Keyword arguments of the data set's fetch function (``rate``, ``seed``...).

    Raises
    ------
    DataUnavailableError
        If the data set has no online source or the service cannot be reached.
    DataError
        If another process is fetching the same data set.
    ValueError
        If an option is not one the data set's fetch function takes.
    """
    ds = get(name)
    fetch = ds.fetcher()
    if fetch is None:
        raise DataUnavailableError(
            f"data set {name!r} ({ds.title}) has no online source ({ds.source}).\n{_how_to_get(ds)}"
        )
    parameters = inspect.signature(fetch).parameters
    unknown = set(options) - set(parameters)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(f"data set {name!r} is fetched without the option(s) {', '.join(sorted(unknown))}.")
    target = cache_dir() / name
    staging = staging_dir(name)
    with _writer_lock(name):
        staging.mkdir(parents=True, exist_ok=True)
        try:
            fetch(staging, **options)
            (staging / MANIFEST).unlink(missing_ok=True)
            lines = [f"{sha256(p)}  {p.relative_to(staging)}" for p in sorted(staging.rglob("*")) if p.is_file()]
            (staging / MANIFEST).write_text("\n".join(lines) + "\n")
        except Exception as err:  # astroquery/requests raise many types; all mean "not fetched"
            kept = _discard_unfinished(staging)
            resume = (f"\nThe {kept} whole files fetched are kept in {staging}; fetching again resumes "
                      "from them." if kept else "")
            raise DataUnavailableError(
                f"data set {name!r} ({ds.title}) is not available offline and fetching it from "
                f"{ds.source} failed: {type(err).__name__}: {err}{resume}\n{_how_to_get(ds)}"
            ) from err
        finally:
            _discard_unfinished(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def locate(name: str, *, online: bool = True) -> Path:
    """The folder of a verified copy of data set ``name``: cache, then MLSKY_DATA_DIR, then online.

    Parameters
    ----------
    name
        A registered data set (see :data:`REGISTRY`).
    online
        Whether to try the online service when no offline copy exists.

    Raises
    ------
    DataCorruptError
        A copy exists but fails its checksums.
    DataUnavailableError
        No copy offline, and online is off or fails. The message says where mlsky looked
        and how to get the data.
    """
    found = find_offline(name)
    if found is not None:
        return found
    if not online:
        ds = get(name)
        raise DataUnavailableError(f"data set {name!r} ({ds.title}) not found offline.\n{_how_to_get(ds)}")
    return fetch_online(name)


def status() -> dict[str, str]:
    """For each registered data set, where its verified offline copy is, or why there is none."""
    report = {}
    for name in REGISTRY:
        found = None
        try:
            found = find_offline(name)
            report[name] = str(found) if found else "not found offline"
        except DataCorruptError as err:
            report[name] = f"CORRUPT: {err}"
        if found is None and staging_dir(name).is_dir():
            kept = sum(1 for p in staging_dir(name).rglob("*") if p.is_file())
            report[name] += f" (a fetch stopped with {kept} files; `mlsky data fetch {name}` resumes it)"
    return report
