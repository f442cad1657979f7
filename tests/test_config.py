import numpy as np
import pytest
import torch

from mlsky import config


def test_scale_default_follows_cuda(monkeypatch):
    monkeypatch.delenv("MLSKY_SCALE", raising=False)
    assert config.get_scale() == ("paper" if torch.cuda.is_available() else "laptop")


@pytest.mark.parametrize("value", ["ci", "laptop", "paper", " CI "])
def test_scale_from_environment(monkeypatch, value):
    monkeypatch.setenv("MLSKY_SCALE", value)
    assert config.get_scale() == value.strip().lower()


def test_unknown_scale_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MLSKY_SCALE", "huge")
    with pytest.raises(config.ConfigError, match="'huge' is not a scale; use one of ci, laptop, paper"):
        config.get_scale()


def test_by_scale_picks_the_current_value(monkeypatch):
    monkeypatch.setenv("MLSKY_SCALE", "laptop")
    assert config.by_scale(ci=1, laptop=2, paper=3) == 2
    assert config.by_scale(ci=1, laptop=2, paper=3, scale="paper") == 3


def test_device_override_and_bad_device(monkeypatch):
    monkeypatch.setenv("MLSKY_DEVICE", "cpu")
    assert config.get_device() == torch.device("cpu")
    monkeypatch.setenv("MLSKY_DEVICE", "warp-drive")
    with pytest.raises(config.ConfigError, match="not a torch device"):
        config.get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda(monkeypatch):
    monkeypatch.setenv("MLSKY_DEVICE", "cuda")
    with pytest.raises(config.ConfigError, match="no CUDA device"):
        config.get_device()


def test_same_seed_same_numbers():
    a = (config.seed_everything(7).random(3), torch.rand(3), np.random.rand(3))
    b = (config.seed_everything(7).random(3), torch.rand(3), np.random.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1]) and np.array_equal(a[2], b[2])


def test_describe_names_scale_and_device(monkeypatch):
    monkeypatch.setenv("MLSKY_SCALE", "ci")
    monkeypatch.setenv("MLSKY_DEVICE", "cpu")
    line = config.describe()
    assert "scale=ci" in line and "device=cpu" in line
