"""The finder's weights that ship inside mlsky: intact, listed, and finding real sources."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mlsky.alma import detect
from mlsky.alma.metrics import evaluate
from mlsky.alma.sim.simulate import random_cube
from mlsky.data import DataCorruptError
from mlsky.data import weights as shipped


def test_shipped_weights_are_small_and_match_their_sha256():
    folder = shipped.shipped_weights("alma_finder")
    files = shipped.registry()["alma_finder"]["files"]
    assert {"pipeline.json", "blobs_finder.pt", "deep_gru.pt"} <= set(files)
    assert sum((folder / f).stat().st_size for f in files) < 10e6


def test_a_damaged_weights_file_is_named(tmp_path, monkeypatch):
    entry = shipped.registry()["alma_finder"]
    copy = tmp_path / entry["folder"]
    shutil.copytree(shipped.weights_folder("alma_finder"), copy)
    data = bytearray((copy / "deep_gru.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "deep_gru.pt").write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "PACKAGE_ROOT", tmp_path)
    with pytest.raises(DataCorruptError, match="deep_gru.pt fails its checksum"):
        shipped.shipped_weights("alma_finder")


def test_detect_works_out_of_the_box_and_finds_the_sources():
    """No training: the shipped finder on held-out cubes finds most bright sources, in place."""
    sims = [random_cube(9_000_000 + i, shape=(32, 96, 96)) for i in range(4)]
    catalogues = [detect(s) for s in sims]
    assert sum(len(c) for c in catalogues) > 0, "an empty catalogue is no detection"
    scores, pairs = evaluate([s.truth for s in sims], catalogues)
    bright = sum(int((s.truth["snr"] > 8).sum()) for s in sims)
    found_bright = int((np.asarray(pairs["snr_true"]) > 8).sum())
    assert bright >= 4 and found_bright >= 0.75 * bright, (found_bright, bright, scores)
    assert scores["precision"] >= 0.7, scores


def test_info_lists_the_shipped_weights(capsys):
    from mlsky.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "weights shipped with mlsky:" in out and "alma_finder" in out and "checked" in out
