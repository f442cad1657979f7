import gzip
import shutil

import numpy as np
import pytest

from mlsky import data
from mlsky.data import sdss


OFFLINE = [name for name, ds in data.REGISTRY.items() if ds.files or ds.trees]


def test_registry_lists_every_offline_data_set():
    assert {"sdss_dr5q", "galaxyzoo1", "alma_casa_reference"} <= set(OFFLINE)
    for ds in data.REGISTRY.values():
        assert ds.files or ds.trees or ds.online, f"{ds.name} has neither an offline copy nor a service"
        assert all(len(h) == 64 for h in ds.files.values())


def test_unknown_data_set():
    with pytest.raises(KeyError, match="unknown data set 'nope'; known: "):
        data.get("nope")


def test_offline_copies_pass_their_checksums(data_dir):
    for name in OFFLINE:
        assert data.locate(name, online=False) == data_dir / name


def test_cache_is_looked_at_before_data_dir(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    shutil.copytree(data_dir / "sdss_dr5q", tmp_path / "sdss_dr5q")
    assert data.locate("sdss_dr5q", online=False) == tmp_path / "sdss_dr5q"


def test_corrupted_file_is_reported_not_skipped(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    (tmp_path / "sdss_dr5q").mkdir()
    (tmp_path / "sdss_dr5q" / "SDSS_QSO.tab.gz").write_bytes(b"not the catalogue")
    with pytest.raises(data.DataCorruptError, match=r"SDSS_QSO\.tab\.gz fails its checksum"):
        data.locate("sdss_dr5q")


def test_damaged_image_folder_is_detected(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_DATA_DIR", str(tmp_path))
    copy = tmp_path / "galaxyzoo1"
    (copy / "images").mkdir(parents=True)
    shutil.copy(data_dir / "galaxyzoo1" / "labels.csv", copy)
    for image in sorted((data_dir / "galaxyzoo1" / "images").iterdir())[:3]:
        shutil.copy(image, copy / "images")
    with pytest.raises(data.DataCorruptError, match="holds 3 files"):
        data.locate("galaxyzoo1", online=False)


def test_offline_without_copy_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLSKY_DATA_DIR")
    with pytest.raises(data.DataUnavailableError) as err:
        data.locate("sdss_dr5q", online=False)
    text = str(err.value)
    assert "not found offline" in text and str(tmp_path / "cache" / "sdss_dr5q") in text
    assert "MLSKY_DATA_DIR is not set" in text


def test_no_network_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLSKY_DATA_DIR")

    def unreachable(dest):
        (dest / "SDSS_QSO.tab.gz.part").write_text("half")  # unfinished files end in .part
        raise ConnectionError("no route to host")

    monkeypatch.setattr(sdss, "fetch_dr5q", unreachable)
    with pytest.raises(data.DataUnavailableError, match="fetching it from VizieR VII/252.*no route to host") as err:
        data.locate("sdss_dr5q")
    assert list(tmp_path.iterdir()) == [] and "kept" not in str(err.value)


def test_failed_fetch_keeps_whole_files_to_resume_from(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLSKY_DATA_DIR")

    def half_done(dest):
        (dest / "images").mkdir(exist_ok=True)
        (dest / "images" / "1.jpeg").write_bytes(b"whole")
        (dest / "images" / "2.jpeg.part").write_bytes(b"half")
        raise ConnectionError("reset by peer")

    monkeypatch.setattr(sdss, "fetch_dr5q", half_done)
    with pytest.raises(data.DataUnavailableError, match="The 1 whole files fetched are kept in .*resumes"):
        data.fetch_online("sdss_dr5q")
    staging = data.staging_dir("sdss_dr5q")
    assert [p.relative_to(staging).as_posix() for p in staging.rglob("*")] == ["images", "images/1.jpeg"]
    assert data.find_offline("sdss_dr5q") is None  # a staging folder is never taken for a copy
    assert data.status()["sdss_dr5q"].endswith("(a fetch stopped with 1 files; `mlsky data fetch sdss_dr5q` resumes it)")


def test_online_fetch_is_cached_with_a_manifest(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLSKY_DATA_DIR")
    calls = []

    def fake_service(dest):
        calls.append(dest)
        shutil.copy(data_dir / "sdss_dr5q" / "SDSS_QSO.tab.gz", dest)

    monkeypatch.setattr(sdss, "fetch_dr5q", fake_service)
    folder = data.locate("sdss_dr5q")
    assert (folder / data.MANIFEST).is_file() and len(calls) == 1
    assert data.locate("sdss_dr5q") == folder and len(calls) == 1
    (folder / "SDSS_QSO.tab.gz").write_bytes(b"damaged later")
    with pytest.raises(data.DataCorruptError, match="fails its checksum"):
        data.locate("sdss_dr5q")


def test_vizier_table_is_written_in_the_offline_layout(tmp_path, monkeypatch):
    from astropy.table import MaskedColumn, Table

    viz = Table({"SDSS": ["000006.53+003055.2"], "z": [1.8227], "Mi": [-25.1],
                 "FIRST": MaskedColumn([0.0], mask=[True]), "ROSAT": MaskedColumn([0.0], mask=[True])})
    for b in "ugriz":
        viz[f"{b}mag"], viz[f"e_{b}mag"] = [20.0], [0.05]

    class FakeVizier:
        def __init__(self, **kwargs):
            pass

        def get_catalogs(self, name):
            assert name == "VII/252"
            return [viz]

    monkeypatch.setattr("astroquery.vizier.Vizier", FakeVizier)
    sdss.fetch_dr5q(tmp_path)
    table = sdss.read_dr5q(tmp_path / sdss.DR5Q_FILE)
    assert table["ROSAT"][0] == -9 and table["FIRST"][0] == 0 and table["Mp"][0] == -25.1


def test_dr5q_loader(data_dir):
    table = sdss.load_dr5q()
    assert len(table) == 77_429
    assert table["u_mag"].unit == "mag"
    sub = sdss.load_dr5q(n=100, seed=3)
    assert len(sub) == 100 and np.array_equal(sub["SDSS"], sdss.load_dr5q(n=100, seed=3)["SDSS"])


def test_dr5q_missing_column_names_the_file(tmp_path):
    path = tmp_path / "bad.tab.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("SDSS z u_mag\nJ1 1.0 20.0\n")
    with pytest.raises(data.DataCorruptError, match=r"bad\.tab\.gz lacks the column\(s\) sig_u_mag"):
        sdss.read_dr5q(path)
