"""Shared test set-up: the offline data, a small scale, and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The real offline copies (a developer's checkout and CI have them beside the repo).
if "MLSKY_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["MLSKY_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("MLSKY_SCALE", "ci")


def _data_dir() -> Path | None:
    value = os.environ.get("MLSKY_DATA_DIR")
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    """The folder of offline data copies; tests that need it are skipped without it."""
    folder = _data_dir()
    if folder is None:
        pytest.skip("MLSKY_DATA_DIR (offline copies of the real data) is not available")
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty cache, so no test sees another's fetched files."""
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def sdss_database(n_qso: int = 23, n_zoo: int = 400, n_galaxies: int = 300, seed: int = 0):
    """An SQLite database with small versions of the SDSS tables the fetches query."""
    import sqlite3

    import numpy as np

    from mlsky.data.sdss import dr16q_columns

    rng = np.random.default_rng(seed)
    db = sqlite3.connect(":memory:", check_same_thread=False)
    photo = [c for c in dr16q_columns() if c not in ("specObjID", "zspec", "zspec_err", "objID", "ra", "dec")]
    db.execute(f"CREATE TABLE PhotoObj (objID INTEGER PRIMARY KEY, ra REAL, dec REAL, {', '.join(c + ' REAL' for c in photo)})")
    db.execute("CREATE TABLE SpecObj (specObjID INTEGER PRIMARY KEY, bestObjID INTEGER, class TEXT, "
               "zWarning INTEGER, z REAL, zErr REAL, ra REAL, dec REAL)")
    n_spec = n_qso + 7 + n_galaxies
    classes = ["QSO"] * n_qso + ["QSO"] * 4 + ["STAR"] * 3 + ["GALAXY"] * n_galaxies
    warning = [0] * n_qso + [4] * 4 + [0] * 3 + [0] * n_galaxies
    spec_ids = np.sort(rng.choice(10**12, n_spec, replace=False)) + 299_489_676_975_171_584
    for i, (sid, cls, warn) in enumerate(zip(rng.permutation(spec_ids), classes, warning)):
        objid = 1_237_645_876_861_272_165 + i
        ra, dec = rng.uniform(0, 360), rng.uniform(-10, 60)
        db.execute(f"INSERT INTO PhotoObj VALUES ({objid}, {ra}, {dec}, {', '.join(str(rng.uniform(15, 22)) for _ in photo)})")
        db.execute("INSERT INTO SpecObj VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (int(sid), objid, cls, warn, float(rng.uniform(0.1, 4)), 1e-4, ra, dec))
    db.execute("CREATE TABLE galSpecExtra (specObjID INTEGER PRIMARY KEY, bptclass INTEGER)")
    for (sid,) in db.execute("SELECT specObjID FROM SpecObj WHERE class = 'GALAXY'").fetchall():
        db.execute("INSERT INTO galSpecExtra VALUES (?, ?)", (sid, int(rng.choice([-1, 1, 2, 3, 4, 5]))))
    db.execute("CREATE TABLE zooSpec (specobjid INTEGER, objid INTEGER, dr7objid INTEGER, ra REAL, dec REAL, "
               "p_el REAL, p_cw REAL, p_acw REAL, p_edge REAL, p_dk REAL, p_mg REAL)")
    # DR7 and DR8 objIDs differ; here DR7 ids start at 587..., DR8 ids at 1237..., as in SDSS.
    for i in range(n_zoo):
        votes = rng.dirichlet(np.ones(6))
        db.execute("INSERT INTO zooSpec VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (1000 + i, 1_237_648_720_693_755_918 + 7 * i, 587_722_981_736_120_347 + 13 * i,
                    float(rng.uniform(0, 360)), float(rng.uniform(-10, 60)), *map(float, votes)))
    db.commit()
    return db


@pytest.fixture
def fake_sdss():
    """An imitation of SkyServer (SQL search, cutouts) on 127.0.0.1, where astroquery points."""
    from astroquery.sdss import conf

    from fakeservers import FakeSkyServer

    server = FakeSkyServer(sdss_database())
    with conf.set_temp("skyserver_baseurl", server.url):
        yield server
    server.close()
