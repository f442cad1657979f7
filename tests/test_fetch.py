"""The online fetches, run against imitations of SDSS SkyServer and VizieR on 127.0.0.1.

The fixtures (``conftest.py``, ``fakeservers.py``) serve real HTTP: astroquery and requests
make real requests, and the SQL the code sends is run on an SQLite copy of small SDSS
tables. Comments name the item of issue 14 each test checks.
"""

from __future__ import annotations

import inspect
import math
import os
import signal
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from mlsky import cli, data
from mlsky.data import sdss, skyserver
from mlsky.data.skyserver import ServiceError
from mlsky.photoz.features import dr16q_features
from mlsky.ulisse import data as ud

FAST = {"retries": 2, "backoff": 0.01}
FREE = math.inf  # no rate limit: the imitation has no neighbours to be polite to
QSO_SQL = ("SELECT s.specObjID FROM SpecObj AS s JOIN PhotoObj AS p ON s.bestObjID = p.objID "
           "WHERE s.class = 'QSO' AND s.zWarning = 0 ORDER BY s.specObjID")


def _astroquery_cache() -> set[Path]:
    from astroquery.sdss import SDSS

    folder = Path(SDSS.cache_location)
    return set(folder.rglob("*")) if folder.is_dir() else set()


# --- item 1: the DR16 QSO fetch is paged, counted, and named for what it is --------------
def test_dr16_qso_is_paged_by_id_and_counted(fake_sdss, tmp_path):
    fake_sdss.row_limit = 10  # longer answers are cut silently, as SkyServer cuts at 500,000
    sdss.fetch_dr16q(tmp_path, page_size=5, rate=FREE)
    table = Table.read(tmp_path / sdss.DR16_QSO_FILE)
    expected = [i for (i,) in fake_sdss.db.execute(QSO_SQL)]
    assert len(expected) == 23 > fake_sdss.row_limit
    assert [int(i) for i in table["specObjID"]] == expected
    assert fake_sdss.sql[0].startswith("SELECT COUNT(*) AS n FROM SpecObj")
    pages = fake_sdss.sql[1:]
    assert len(pages) == 5 and all("TOP 5" in q and q.endswith("ORDER BY s.specObjID") for q in pages)
    assert f"s.specObjID > {expected[4]} ORDER BY" in pages[1]
    assert "not the DR16Q catalogue" in table.meta["TITLE"]


def test_dr16_qso_pages_must_add_up_to_the_count(fake_sdss, tmp_path):
    answer = fake_sdss.answer

    def rows_vanish_after_the_count(path, params):
        if "COUNT(*)" not in params["cmd"][0]:
            fake_sdss.db.execute("UPDATE SpecObj SET zWarning = 16 WHERE specObjID % 2 = 0")
        return answer(path, params)

    fake_sdss.answer = rows_vanish_after_the_count
    with pytest.raises(ServiceError, match=r"the pages hold \d+ rows, but COUNT\(\*\) counted 23"):
        sdss.fetch_dr16q(tmp_path, page_size=5, rate=FREE)
    assert list(tmp_path.iterdir()) == []


def test_a_page_as_large_as_the_service_limit_is_refused(fake_sdss):
    with pytest.raises(ValueError, match="fewer rows than the service's limit"):
        skyserver.query_sql_pages("s.specObjID", "FROM SpecObj AS s WHERE s.z > 0", "s.specObjID",
                                  page_size=skyserver.SQL_ROW_LIMIT)
    assert fake_sdss.sql == []


def test_dr16_data_set_is_named_for_what_it_is():
    assert "sdss_dr16q" not in data.REGISTRY
    assert "not the visually inspected DR16Q" in data.get("sdss_dr16_qso").title


# --- item 3: error pages are errors that quote the service, and are never cached ---------
def test_error_page_is_a_clear_error_and_is_not_replayed(fake_sdss):
    before = _astroquery_cache()
    fake_sdss.faults.append("html")
    with pytest.raises(ServiceError, match="error page instead of data: SkyServer error SQL error Timeout expired"):
        skyserver.query_sql("SELECT TOP 3 z.dr7objid FROM zooSpec AS z", **FAST)
    assert len(fake_sdss.requests) == 1  # an error page is not retried: the same query fails again
    table = skyserver.query_sql("SELECT TOP 3 z.dr7objid FROM zooSpec AS z", **FAST)
    assert len(table) == 3 and table.colnames == ["dr7objid"]
    assert _astroquery_cache() == before


def test_ids_beyond_int64_are_read_exactly(fake_sdss):
    # eBOSS specObjIDs exceed 2**63: as text they would not stack with the int64 of other pages.
    table = skyserver.query_sql("SELECT '12384756231234567890' AS specObjID, 1.5 AS z "
                                "UNION ALL SELECT '299489676975171584', 2.5")
    assert table["specObjID"].dtype == np.uint64
    assert [int(i) for i in table["specObjID"]] == [12384756231234567890, 299489676975171584]


def test_sql_error_names_what_the_service_said(fake_sdss):
    with pytest.raises(ServiceError, match="no such column: z.p_nope"):
        skyserver.query_sql("SELECT z.p_nope FROM zooSpec AS z", **FAST)


def test_server_errors_are_retried_then_reported(fake_sdss):
    fake_sdss.faults.extend(["500", "503"])
    assert len(skyserver.query_sql("SELECT TOP 2 z.ra FROM zooSpec AS z", **FAST)) == 2
    fake_sdss.faults.extend(["500"] * 3)
    with pytest.raises(ServiceError, match="failed 3 times; the last time: _Transient: HTTP 500"):
        skyserver.query_sql("SELECT TOP 2 z.ra FROM zooSpec AS z", **FAST)


def test_truncated_body_is_retried_not_read(fake_sdss):
    fake_sdss.faults.append("truncated")
    with pytest.raises(ServiceError, match="ChunkedEncodingError|IncompleteRead"):
        skyserver.query_sql("SELECT z.dr7objid FROM zooSpec AS z", retries=0)
    fake_sdss.faults.append("truncated")
    assert len(skyserver.query_sql("SELECT z.dr7objid FROM zooSpec AS z", **FAST)) == 400


# --- item 5: real timeouts; different seeds, different samples --------------------------
def test_slow_answer_times_out(fake_sdss):
    # By default a query waits as long as SkyServer lets it run, not astroquery's 60 s.
    assert inspect.signature(skyserver.query_sql).parameters["timeout"].default > skyserver.SQL_TIME_LIMIT
    fake_sdss.slow_seconds = 2.0
    fake_sdss.faults.append("slow")
    start = time.monotonic()
    with pytest.raises(ServiceError, match="no answer within 0.3 s"):
        skyserver.query_sql("SELECT TOP 1 z.ra FROM zooSpec AS z", timeout=0.3, **FAST)
    assert time.monotonic() - start < 1.5 and len(fake_sdss.requests) == 1


def test_bpt_samples_of_two_seeds_differ(fake_sdss, tmp_path):
    ids = [set(ud.fetch_bpt_sample(tmp_path / str(seed), n=30, size=16, seed=seed, rate=FREE, progress=False,
                                   **FAST)["ID"]) for seed in (0, 1)]
    assert len(ids[0]) == len(ids[1]) == 30
    assert len(ids[0] & ids[1]) < 10  # ~3 expected by chance; a shifted order shared 29
    # The sample is cut by its key before it is ordered: the service sorts ~2n rows, not all.
    assert f"% {skyserver.SAMPLE_PRIME} < " in fake_sdss.sql[-1] and "ORDER BY" in fake_sdss.sql[-1]


# --- item 2: Galaxy Zoo by DR7 objID, drawn across the whole table -------------------------
def test_galaxyzoo_fetch_uses_dr7_ids_across_the_sky(fake_sdss, tmp_path):
    ud.fetch_galaxyzoo1(tmp_path, n=40, size=16, rate=FREE, progress=False, **FAST)
    labels = Table.read(tmp_path / "labels.csv", format="ascii.csv")
    dr7 = {int(i): k for k, i in enumerate(r[0] for r in fake_sdss.db.execute("SELECT dr7objid FROM zooSpec"))}
    rows = sorted(dr7[int(i)] for i in labels["OBJID"])  # DR7 ids, not DR8 objid (KeyError)
    assert len(rows) == 40 and rows[-1] > 300  # not the first 40 objects of the first runs
    assert sorted(p.stem for p in (tmp_path / "images").iterdir()) == sorted(str(i) for i in labels["OBJID"])
    assert set(labels["CLASS"]) <= set(range(6))


# --- item 4: cutouts retried with back-off, resumed, checked to their end marker ------------
def test_cutouts_retry_resume_and_never_keep_a_cut_jpeg(fake_sdss, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # no temporary files may pile up
    (tmp_path / "tmp").mkdir()
    dest = tmp_path / "gz"
    # A first pass learns which objects are drawn; their cutouts then fail in chosen ways.
    table = skyserver.query_sample("z.dr7objid, z.ra, z.dec", "FROM zooSpec AS z WHERE z.dr7objid > 0",
                                   "z.dr7objid", 12, seed=0, **FAST)
    ras = [f"{ra:.6f}" for ra in table["ra"]]
    fake_sdss.cutout_faults = {ras[0]: deque(["503", "cut_jpeg"]),           # passes on the 3rd attempt
                               ras[1]: deque(["cut_jpeg"] * 3),             # never whole: not kept
                               ras[2]: deque(["503"] * 3)}                  # service busy throughout
    with pytest.raises(ServiceError, match=r"2 of 12 cutouts could not be fetched .* The 10 fetched are kept"):
        ud.fetch_galaxyzoo1(dest, n=12, size=16, rate=FREE, progress=False, **FAST)
    images = sorted((dest / "images").iterdir())
    assert len(images) == 10 and all(skyserver.is_jpeg(p.read_bytes()) for p in images)
    assert not list(dest.rglob("*.part")) and not (dest / "labels.csv").exists()
    fake_sdss.requests.clear()
    ud.fetch_galaxyzoo1(dest, n=12, size=16, rate=FREE, progress=False, **FAST)
    assert sum(p.endswith("getjpeg") for p in fake_sdss.requests) == 2  # only the two missing
    assert not any(p.endswith("x_results.aspx") for p in fake_sdss.requests)  # the sample is kept
    assert len(list((dest / "images").iterdir())) == 12 and (dest / "labels.csv").is_file()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_rate_limit_spaces_requests():
    limit = skyserver.RateLimit(per_minute=1200)  # one every 0.05 s
    start = time.monotonic()
    for _ in range(5):
        limit.wait()
    assert 0.19 < time.monotonic() - start < 1.0
    with pytest.raises(ValueError, match="positive number of requests a minute"):
        skyserver.RateLimit(0)


def test_cutout_fetch_keeps_the_rate(fake_sdss, tmp_path):
    start = time.monotonic()
    ud.fetch_bpt_sample(tmp_path, n=4, size=16, rate=600, progress=False, **FAST)  # 2 SQL + 4 cutouts
    assert time.monotonic() - start >= 5 * 0.1 - 0.01


# --- item 6 and "Done when": an interrupted fetch resumes; nothing half-written is left --------
@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt here, as in a terminal, even where pytest was started in
    the background (a shell's ``cmd &`` starts Python with SIGINT ignored, and Python keeps it so)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_when(condition, timeout=20.0):
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_keeps_whole_files_and_a_new_fetch_resumes(fake_sdss, tmp_path, monkeypatch, ctrl_c):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLSKY_DATA_DIR", raising=False)
    staging = data.staging_dir("galaxyzoo1")
    fake_sdss.slow_seconds = 30.0
    original = fake_sdss.take_fault

    def slow_from_the_sixth(path, params):
        if path.endswith("getjpeg") and sum(p.endswith("getjpeg") for p in fake_sdss.requests) == 6:
            return "slow"
        return original(path, params)

    fake_sdss.take_fault = slow_from_the_sixth
    watcher = _interrupt_when(lambda: len(list((staging / "images").glob("*.jpeg"))) >= 5)
    with pytest.raises(KeyboardInterrupt):
        data.fetch_online("galaxyzoo1", n=20, size=16, rate=FREE, progress=False, **FAST)
    watcher.join()
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == [".galaxyzoo1.partial"]  # no lock, no stray folder
    assert len(list((staging / "images").iterdir())) == 5 and not list(staging.rglob("*.part"))
    fake_sdss.take_fault = original
    fake_sdss.requests.clear()
    folder = data.fetch_online("galaxyzoo1", n=20, size=16, rate=FREE, progress=False, **FAST)
    assert sum(p.endswith("getjpeg") for p in fake_sdss.requests) == 15
    assert not any(p.endswith("x_results.aspx") for p in fake_sdss.requests)  # the sample is kept too
    assert folder == cache / "galaxyzoo1" and sorted(p.name for p in cache.iterdir()) == ["galaxyzoo1"]
    assert data.locate("galaxyzoo1", online=False) == folder
    assert len(ud.load_galaxyzoo1(online=False)) == 20


def test_failed_sql_fetch_leaves_nothing_in_the_cache(fake_sdss, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLSKY_DATA_DIR", raising=False)
    fake_sdss.faults.extend(["html"])
    with pytest.raises(data.DataUnavailableError, match="error page instead of data"):
        data.fetch_online("sdss_dr16_qso", page_size=5, rate=FREE)
    assert list(tmp_path.iterdir()) == []
    assert data.fetch_online("sdss_dr16_qso", page_size=5, rate=FREE) == tmp_path / "sdss_dr16_qso"
    assert len(sdss.load_dr16q(online=False)) == 23
    assert dr16q_features(sdss.load_dr16q(online=False)).n_features == 355


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(fake_sdss, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    lock = tmp_path / ".sdss_dr16_qso.lock"
    lock.write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(data.DataError, match=f"being fetched by another process \\(pid {os.getppid()}"):
        data.fetch_online("sdss_dr16_qso", page_size=5, rate=FREE)
    assert fake_sdss.sql == []
    lock.write_text("999999999")  # no such process: the lock is stale
    data.fetch_online("sdss_dr16_qso", page_size=5, rate=FREE)
    assert not lock.exists()


def test_options_a_fetch_does_not_take_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="'sdss_dr5q' is fetched without the option\\(s\\) rate"):
        data.fetch_online("sdss_dr5q", rate=10)


# --- VizieR: the DR5Q catalogue as VizieR's VOTable answer --------------------------------
def test_dr5q_from_a_vizier_votable(tmp_path, monkeypatch):
    pytest.importorskip("cryptography", reason="the HTTPS imitation of VizieR makes its certificate with it")
    from astropy.io.votable import from_table
    from astropy.table import MaskedColumn

    from fakeservers import FakeVizier

    viz = Table({"SDSS": ["000006.53+003055.2", "000008.13+001634.6"], "z": [1.8227, 1.8365],
                 "Mi": [-25.1, -25.7], "FIRST": MaskedColumn([0.0, 2.5], mask=[True, False]),
                 "ROSAT": MaskedColumn([0.0, -1.3], mask=[True, False])})
    for b in "ugriz":
        viz[f"{b}mag"], viz[f"e_{b}mag"] = [20.0, 19.5], [0.05, 0.04]
    votable = from_table(viz)
    votable.resources[0].tables[0].ID = "VII_252_sdss"
    votable.resources[0].tables[0].name = "VII/252/sdss"
    buffer = tempfile.SpooledTemporaryFile()
    votable.to_xml(buffer)
    buffer.seek(0)
    server = FakeVizier(buffer.read(), tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    try:
        sdss.fetch_dr5q(tmp_path, vizier_server=server.host)
    finally:
        server.close()
    assert server.requests == ["/viz-bin/votable"]
    table = sdss.read_dr5q(tmp_path / sdss.DR5Q_FILE)
    assert list(table["ROSAT"]) == [-9, -1.3] and list(table["FIRST"]) == [0, 2.5]
    assert list(table["Mp"]) == [-25.1, -25.7]


# --- "Done when": mlsky data fetch -----------------------------------------------------------
def test_cli_data_fetch(fake_sdss, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLSKY_DATA_DIR", raising=False)
    assert cli.main(["data", "fetch", "galaxyzoo1", "--n", "6", "--rate", "6000"]) == 0
    out = capsys.readouterr()
    assert "sha256 of every file written" in out.out and "SDSS cutouts" in out.err  # the progress bar
    assert cli.main(["data", "fetch", "galaxyzoo1"]) == 0
    assert "verified copy in" in capsys.readouterr().out
    assert cli.main(["data", "fetch", "sdss_dr5q", "--rate", "5"]) == 2
    assert capsys.readouterr().err.startswith("mlsky data: error: data set 'sdss_dr5q' is fetched without")
    assert cli.main(["data", "fetch", "alma_casa_reference"]) == 2
    assert "has no online source" in capsys.readouterr().err


def test_cli_fetch_interrupted_by_ctrl_c_resumes(fake_sdss, tmp_path, monkeypatch, capsys, ctrl_c):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLSKY_DATA_DIR", raising=False)
    images = data.staging_dir("galaxyzoo1") / "images"
    fake_sdss.slow_seconds = 30.0
    fake_sdss.take_fault = lambda path, params: "slow" if path.endswith("getjpeg") and len(
        list(images.glob("*.jpeg"))) >= 3 else None
    watcher = _interrupt_when(lambda: len(list(images.glob("*.jpeg"))) >= 3)
    assert cli.main(["data", "fetch", "galaxyzoo1", "--n", "8", "--rate", "6000"]) == 130
    watcher.join()
    assert "interrupted; 4 whole files kept in" in capsys.readouterr().err  # 3 images + the sample
    fake_sdss.take_fault = lambda path, params: None
    fake_sdss.requests.clear()
    assert cli.main(["data", "fetch", "galaxyzoo1", "--n", "8", "--rate", "6000"]) == 0
    assert sum(p.endswith("getjpeg") for p in fake_sdss.requests) == 5
    (tmp_path / "galaxyzoo1" / "labels.csv").write_text("damaged")
    assert cli.main(["data", "fetch", "galaxyzoo1"]) == 2
    assert "fails its checksum" in capsys.readouterr().err
    assert cli.main(["data", "fetch", "galaxyzoo1", "--n", "8", "--rate", "6000", "--refetch"]) == 0


@pytest.mark.network
def test_real_skyserver_answers_a_count():
    if not ud.network_available():
        pytest.skip("SDSS SkyServer is not reachable")
    table = skyserver.query_sql("SELECT COUNT(*) AS n FROM zooSpec", retries=1)
    assert int(table["n"][0]) > 600_000


@pytest.mark.network
def test_real_cutout_service_sends_a_whole_jpeg():
    if not ud.network_available():
        pytest.skip("SDSS SkyServer is not reachable")
    assert skyserver.is_jpeg(ud.download_cutout(179.689293428354, -0.454379056007667, size=32, retries=1))
