"""The images ULISSE searches: Galaxy Zoo 1 cutouts, any folder of cutouts, SDSS online.

- :func:`load_galaxyzoo1`: 6,664 SDSS gri cutouts with Galaxy Zoo 1 classes (Lintott et al.
  2008, 2011), through :func:`mlsky.data.locate` (checksummed offline copy, or online).
- :func:`load_folder`: your own folder of cutouts, with an optional CSV of labels.
- :func:`fetch_galaxyzoo1` and :func:`fetch_bpt_sample`: the online services (SDSS ``zooSpec``
  and ``galSpecExtra`` tables through astroquery, images from the SDSS cutout service), as
  ULISSE's AGN experiment used them. They need a network.

Examples
--------
>>> from mlsky.ulisse.data import load_galaxyzoo1
>>> sample = load_galaxyzoo1(n=300)               # doctest: +SKIP
>>> sample.colnames                               # doctest: +SKIP
['id', 'path', 'gz_class', 'label']
"""

from __future__ import annotations

import csv
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from astropy.table import Table

from mlsky.config import progress_options
from mlsky.data import DataError, locate, skyserver
from mlsky.ulisse.cutouts import list_images

#: Galaxy Zoo 1 classes of the offline copy's ``labels.csv``.
GZ1_CLASSES = {0: "elliptical", 1: "clockwise spiral", 2: "anticlockwise spiral", 3: "edge-on",
               4: "don't know", 5: "merger"}
#: Classes used to evaluate retrieval. Clockwise and anticlockwise spirals are mirror images
#: of one kind (and a search that ignores orientation cannot tell them apart), so they are
#: merged; "don't know" is no class, so it is never a prototype (its objects stay searchable).
EVAL_CLASS = {0: "elliptical", 1: "spiral", 2: "spiral", 3: "edge-on", 4: "", 5: "merger"}
#: BPT classes of SDSS galSpecExtra (Brinchmann et al. 2004).
BPT_CLASSES = {-1: "unclassifiable", 1: "star-forming", 2: "low S/N star-forming", 3: "composite",
               4: "AGN", 5: "low S/N LINER"}


def load_galaxyzoo1(n: int | None = None, *, seed: int = 0, online: bool = True) -> Table:
    """The Galaxy Zoo 1 cutouts: one row per image with its path and class.

    Parameters
    ----------
    n
        A random subset of ``n`` images (drawn with ``seed``, stratified so every class keeps
        its share, rare mergers included), or all when None.
    online
        Fetch from SDSS when no offline copy is found.

    Returns
    -------
    astropy.table.Table
        ``id`` (SDSS DR7 objID), ``path``, ``gz_class`` (0-5, :data:`GZ1_CLASSES`) and
        ``label`` (the evaluation class, :data:`EVAL_CLASS`; empty for "don't know").
    """
    folder = locate("galaxyzoo1", online=online)
    table = load_folder(folder / "images", folder / "labels.csv", id_column="OBJID", label_column="CLASS")
    table.rename_column("label", "gz_class")
    table["gz_class"] = table["gz_class"].astype(int)
    table["label"] = [EVAL_CLASS[c] for c in table["gz_class"]]
    table.meta["title"] = "Galaxy Zoo 1 SDSS cutouts (Lintott et al. 2008, 2011)"
    if n is not None:
        table = stratified_subset(table, n, seed=seed, column="gz_class")
    return table


def stratified_subset(table: Table, n: int, *, seed: int = 0, column: str = "label") -> Table:
    """``n`` rows drawn without replacement keeping each class's share (at least one each)."""
    if not 0 < n <= len(table):
        raise ValueError(f"n={n} rows asked for; the table has {len(table)}.")
    rng = np.random.default_rng(seed)
    values = np.asarray(table[column])
    classes, counts = np.unique(values, return_counts=True)
    quota = np.maximum(1, np.round(counts / counts.sum() * n)).astype(int)
    while quota.sum() > n:  # rounding up the rare classes may overshoot: trim the largest
        quota[np.argmax(quota)] -= 1
    rows = np.concatenate([rng.choice(np.flatnonzero(values == c), size=min(q, k), replace=False)
                           for c, q, k in zip(classes, quota, counts)])
    return table[np.sort(rows)]


def load_folder(folder: str | Path, labels: str | Path | None = None, *, id_column: str | None = None,
                label_column: str | None = None) -> Table:
    """A folder of cutouts, optionally with a CSV of labels (your own data).

    Parameters
    ----------
    folder
        Folder of image files; an image's id is its file name without suffix.
    labels
        CSV with an id column and a label column. Images without a row keep an empty label;
        rows naming images that are not in the folder are skipped with a warning that counts
        them.
    id_column, label_column
        Column names in the CSV (default: its first and second columns).

    Raises
    ------
    FileNotFoundError
        If the folder or the label file does not exist.
    ValueError
        If the folder holds no image, the CSV lacks a column, its first line is a data row (its
        first cell names an image: without a header that row would be lost), or no labelled
        image is found.
    """
    paths = list_images(folder)
    table = Table({"id": [p.stem for p in paths], "path": [str(p) for p in paths]})
    if labels is None:
        return table
    labels = Path(labels)
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: no such label file.")
    with open(labels, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if len(columns) < 2:
            raise ValueError(f"{labels}: needs an id column and a label column; found {columns}.")
        if columns[0].strip() in set(table["id"]):
            raise ValueError(f"{labels}: the first line ({','.join(columns)}) is a data row, not a header; "
                             "add a header line such as 'id,label'.")
        id_column = id_column or columns[0]
        label_column = label_column or columns[1]
        for name in (id_column, label_column):
            if name not in columns:
                raise ValueError(f"{labels}: no column {name!r} (columns: {', '.join(columns)}).")
        mapping = {row[id_column].strip(): row[label_column].strip() for row in reader}
    known = set(table["id"])
    missing = [i for i in mapping if i not in known]
    if len(missing) == len(mapping):
        raise ValueError(f"{labels}: none of its {len(mapping)} ids names an image in {folder}.")
    if missing:
        warnings.warn(f"{labels}: skipped {len(missing)} label rows naming images not in {folder} "
                      f"(first: {missing[0]}).", stacklevel=2)
    table["label"] = [mapping.get(i, "") for i in table["id"]]
    table.meta["skipped_labels"] = len(missing)
    return table


def network_available(host: str = "skyserver.sdss.org", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether the SDSS SkyServer answers (the chapter's online section runs only then)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cutout_url(data_release: int = 16) -> str:
    """The SDSS image cutout service of a data release (at astroquery's SkyServer address)."""
    return f"{skyserver.base_url(data_release)}/SkyServerWS/ImgCutout/getjpeg"


def download_cutout(ra: float, dec: float, *, scale: float = 0.4, size: int = 64,
                    session: requests.Session | None = None, rate: skyserver.RateLimit | None = None,
                    **kwargs) -> bytes:
    """A gri JPEG cutout from the SDSS image cutout service (``scale`` arcsec per pixel).

    Retried with back-off while the service is busy or the image arrives cut short; see
    :func:`mlsky.data.skyserver.download_jpeg` (``kwargs``: timeout, retries, backoff).
    """
    params = {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "scale": scale, "width": size, "height": size}
    what = f"SDSS cutout at ra={ra:.6f} dec={dec:.6f}"
    if session is not None:
        return skyserver.download_jpeg(session, cutout_url(), params, what, rate=rate, **kwargs)
    with requests.Session() as own:
        return skyserver.download_jpeg(own, cutout_url(), params, what, rate=rate, **kwargs)


def _write_cutouts(dest: Path, table: Table, id_column: str, *, scale: float, size: int,
                   rate: skyserver.RateLimit, progress: bool = True, **kwargs) -> None:
    """Download each row's cutout into ``dest/images/<id>.jpeg``, resuming from those present.

    An image is written as ``<id>.jpeg.part`` and renamed when whole, so a file with the
    final name is always a whole JPEG (checked again here before it is skipped). A cutout
    that still fails after its retries does not stop the others; the failures are counted
    and reported at the end, and a new call fetches only what is missing.

    Raises
    ------
    ServiceError
        If some cutouts could not be fetched (the message counts them and names the first).
    """
    from tqdm.auto import tqdm

    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    todo = [row for row in table if not _whole_jpeg(images / f"{row[id_column]}.jpeg")]
    failed: list[str] = []
    with requests.Session() as session, tqdm(total=len(table), initial=len(table) - len(todo), unit="cutouts",
                                             desc="SDSS cutouts", **progress_options(progress)) as bar:
        for row in todo:
            path = images / f"{row[id_column]}.jpeg"
            part = path.with_name(path.name + ".part")
            try:
                part.write_bytes(download_cutout(float(row["ra"]), float(row["dec"]), scale=scale, size=size,
                                                 session=session, rate=rate, **kwargs))
                os.replace(part, path)
            except skyserver.ServiceError as err:
                failed.append(f"{row[id_column]}: {err}")
            finally:
                part.unlink(missing_ok=True)
            bar.update()
    if failed:
        raise skyserver.ServiceError(
            f"{len(failed)} of {len(table)} cutouts could not be fetched (first: {failed[0]}). The "
            f"{len(table) - len(failed)} fetched are kept in {images}; fetching again downloads only the rest.")


def _whole_jpeg(path: Path) -> bool:
    return path.is_file() and skyserver.is_jpeg(path.read_bytes())


def _sample(dest: Path, name: str, query: Callable[[], Table], settings: dict) -> Table:
    """The catalogue of a cutout fetch: queried once, kept in ``dest/name`` to resume from.

    Raises
    ------
    DataError
        If ``dest`` holds the catalogue of a fetch with other settings (seed, size...).
    """
    path = dest / name
    if path.is_file():
        table = Table.read(path, format="ascii.ecsv")
        kept = {k: table.meta.get(k) for k in settings}
        if kept != settings:
            raise DataError(f"{dest} holds a fetch begun with {kept}, not {settings}: finish it with those "
                            "settings, or delete the folder to start again.")
        return table
    table = query()
    table.meta.update(settings)
    dest.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    table.write(part, format="ascii.ecsv")
    os.replace(part, path)
    return table


def fetch_galaxyzoo1(dest: Path, *, n: int = 6664, scale: float = 0.4, size: int = 423, seed: int = 0,
                     rate: float = skyserver.RATE, progress: bool = True, **kwargs) -> None:
    """Fetch Galaxy Zoo 1 galaxies from SDSS ``zooSpec`` and their cutouts into ``dest``.

    ``n`` galaxies are drawn across the whole sky with ``seed`` (see
    :func:`mlsky.data.skyserver.query_sample`), identified by their SDSS DR7 objID
    (``dr7objid``, as in the offline copy and Galaxy Zoo 1's own tables; zooSpec's ``objid`` is
    the DR8 id). The class of each galaxy is its largest vote fraction (elliptical, clockwise,
    anticlockwise, edge-on, don't know, merger), written as ``labels.csv`` (``OBJID,CLASS``)
    beside ``images/<dr7objid>.jpeg``, the layout of the offline copy, and the query's answer
    as ``zoospec.ecsv``. The offline copy's exact selection of objects is not recorded, so an
    online fetch gives a sample of the same kind, not the same files (its manifest of
    checksums is written by :func:`mlsky.data.fetch_online`).

    An interrupted fetch resumes: the catalogue and the whole images already in ``dest`` are
    kept. ``rate`` is the number of requests a minute (SkyServer allows 60 per client);
    ``kwargs`` go to the requests (timeout, retries, backoff).
    """
    votes = ("p_el", "p_cw", "p_acw", "p_edge", "p_dk", "p_mg")
    limit = skyserver.RateLimit(rate)
    table = _sample(dest, "zoospec.ecsv", lambda: skyserver.query_sample(
        f"z.dr7objid, z.ra, z.dec, {', '.join('z.' + v for v in votes)}",
        "FROM zooSpec AS z WHERE z.dr7objid > 0", "z.dr7objid", n, seed=seed, rate=limit, **kwargs),
        {"n": n, "seed": seed, "scale": scale, "size": size})
    table["OBJID"] = [str(i) for i in table["dr7objid"]]
    table["CLASS"] = np.argmax(np.vstack([np.asarray(table[v], dtype=float) for v in votes]), axis=0)
    _write_cutouts(dest, table, "OBJID", scale=scale, size=size, rate=limit, progress=progress, **kwargs)
    part = dest / "labels.csv.part"
    table["OBJID", "CLASS"].write(part, format="ascii.csv")
    os.replace(part, dest / "labels.csv")


def fetch_bpt_sample(dest: Path, *, n: int = 2000, scale: float = 0.4, size: int = 64, seed: int = 0,
                     rate: float = skyserver.RATE, progress: bool = True, **kwargs) -> Table:
    """ULISSE's AGN data: SDSS galaxies with BPT classes (``galSpecExtra``) and 64x64 cutouts.

    ``n`` galaxies drawn across the sky with ``seed`` (different seeds, different galaxies).
    Writes ``images/<specobjid>.jpeg``, ``labels.csv`` (``ID,BPT``) and the query's answer
    ``galspec.ecsv`` into ``dest`` and returns the catalogue (``ID, ra, dec, bptclass,
    BPT``). Needs a network; an interrupted fetch into the same ``dest`` resumes.
    """
    limit = skyserver.RateLimit(rate)
    table = _sample(dest, "galspec.ecsv", lambda: skyserver.query_sample(
        "s.specObjID AS specobjid, s.ra, s.dec, e.bptclass",
        "FROM galSpecExtra AS e JOIN SpecObj AS s ON s.specObjID = e.specObjID "
        "WHERE s.class = 'GALAXY' AND s.zWarning = 0 AND e.bptclass IN (-1, 1, 2, 3, 4, 5)",
        "s.specObjID", n, seed=seed, rate=limit, **kwargs),
        {"n": n, "seed": seed, "scale": scale, "size": size})
    table["ID"] = [str(i) for i in table["specobjid"]]
    table["BPT"] = [BPT_CLASSES[int(c)] for c in table["bptclass"]]
    _write_cutouts(dest, table, "ID", scale=scale, size=size, rate=limit, progress=progress, **kwargs)
    part = dest / "labels.csv.part"
    table["ID", "BPT"].write(part, format="ascii.csv")
    os.replace(part, dest / "labels.csv")
    return table["ID", "ra", "dec", "bptclass", "BPT"]
