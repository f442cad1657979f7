import subprocess
import sys

import pytest

from mlsky import cli


def test_info_reports_data_and_weights(data_dir, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "scale=" in out and "device=" in out
    assert f"data directory (MLSKY_DATA_DIR): {data_dir}" in out
    for name in ("sdss_dr5q", "galaxyzoo1", "alma_casa_reference"):
        assert f"{name}" in out and str(data_dir / name) in out
    assert "efficientnet-lite0-57934424.pth" in out


def test_info_reports_a_corrupt_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLSKY_CACHE_DIR", str(tmp_path))
    (tmp_path / "sdss_dr5q").mkdir()
    (tmp_path / "sdss_dr5q" / "SDSS_QSO.tab.gz").write_text("x")
    cli.main(["info"])
    assert "CORRUPT" in capsys.readouterr().out


def test_bad_scale_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("MLSKY_SCALE", "galactic")
    assert cli.main(["info"]) == 2
    assert capsys.readouterr().err.startswith("mlsky info: error: MLSKY_SCALE='galactic' is not a scale")


@pytest.mark.parametrize("argv", [
    ["info"], ["data", "fetch", "sdss_dr5q"], ["photoz", "select"],
    ["ulisse", "embed", "cutouts", "-o", "features.npz"], ["ulisse", "search", "features.npz", "--prototype", "1"],
    ["alma", "simulate", "--n", "1", "--out", "cubes"], ["alma", "compare-casa"], ["alma", "train", "--out", "w"],
    ["alma", "detect", "cube.fits", "-o", "cat.ecsv"],
])
def test_every_command_refuses_a_bad_scale_before_any_work(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSKY_SCALE", "bogus")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"mlsky {argv[0]}: error: MLSKY_SCALE='bogus' is not a scale; use one of ci, laptop, paper.\n"
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_mlsky():
    done = subprocess.run([sys.executable, "-m", "mlsky", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("mlsky ")


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        cli.main(["teleport"])
