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
