"""Run-time configuration: the scale switch, the device and the seed.

One environment variable sizes every experiment of the book and package:

``MLSKY_SCALE``
    ``ci`` (seconds, for the test suite), ``laptop`` (minutes on a CPU; the default
    without CUDA) or ``paper`` (the papers' sizes, for a GPU; the default with CUDA).
``MLSKY_DEVICE``
    Overrides the device (``cpu``, ``cuda``, ``cuda:1``...). Default: CUDA if
    available, else CPU.

Examples
--------
>>> from mlsky.config import by_scale
>>> n_train = by_scale(ci=2_000, laptop=20_000, paper=300_000)
"""

from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np

SCALES = ("ci", "laptop", "paper")
T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable of mlsky holds a value it cannot use."""


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_scale() -> str:
    """Return the current scale: ``MLSKY_SCALE`` or the default for this machine.

    Raises
    ------
    ConfigError
        If ``MLSKY_SCALE`` is set to something other than ``ci``, ``laptop``, ``paper``.
    """
    value = os.environ.get("MLSKY_SCALE", "").strip().lower()
    if not value:
        return "paper" if _cuda_available() else "laptop"
    if value not in SCALES:
        raise ConfigError(
            f"MLSKY_SCALE={os.environ['MLSKY_SCALE']!r} is not a scale; use one of {', '.join(SCALES)}."
        )
    return value


def by_scale(*, ci: T, laptop: T, paper: T, scale: str | None = None) -> T:
    """Pick the value for the current (or given) scale.

    Parameters
    ----------
    ci, laptop, paper
        The value at each scale.
    scale
        Override the current scale.
    """
    chosen = scale or get_scale()
    if chosen not in SCALES:
        raise ConfigError(f"unknown scale {chosen!r}; use one of {', '.join(SCALES)}.")
    return {"ci": ci, "laptop": laptop, "paper": paper}[chosen]


def get_device():
    """Return the :class:`torch.device` to compute on: ``MLSKY_DEVICE``, else CUDA, else CPU.

    Raises
    ------
    ConfigError
        If ``MLSKY_DEVICE`` names a device torch does not know, or CUDA that is absent.
    """
    import torch

    value = os.environ.get("MLSKY_DEVICE", "").strip()
    if not value:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise ConfigError(f"MLSKY_DEVICE={value!r} is not a torch device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"MLSKY_DEVICE={value!r} asks for CUDA, but torch finds no CUDA device.")
    return device


def seed_everything(seed: int = 0) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels.

    Returns a fresh :class:`numpy.random.Generator` seeded with ``seed``, for code that
    prefers an explicit generator.

    Examples
    --------
    >>> rng = seed_everything(42)
    >>> float(rng.random()) == float(seed_everything(42).random())
    True
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Deterministic where torch can be; warn (not fail) for ops that have no such kernel.
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return np.random.default_rng(seed)


def describe() -> str:
    """One line saying what this run uses: mlsky version, scale, device, torch, threads.

    Every chapter prints it, so that a reader knows what produced the numbers.
    """
    import torch

    from mlsky import __version__

    device = get_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (
        f"mlsky {__version__} | scale={get_scale()} | device={device} ({name}) | "
        f"torch {torch.__version__} | {torch.get_num_threads()} CPU threads"
    )


def progress_options(progress: bool) -> dict:
    """tqdm's keywords for an on/off switch: off when asked, else tqdm's defaults.

    Passing ``disable=False`` explicitly would override the ``TQDM_DISABLE`` environment
    variable, which the book build sets so that no bar reaches the pages.
    """
    return {} if progress else {"disable": True}
