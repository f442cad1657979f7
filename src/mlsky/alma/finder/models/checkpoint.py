"""Checkpoint I/O beside the model registry: save, check and load one network.

A checkpoint holds the model's registry name, its version, its constructor arguments, the
weights, the optimiser state, the epoch and the loss history; loading one for another model or
version is an error (:class:`CheckpointError`). Files are written to a temporary name and
renamed, so an interrupted run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mlsky.alma.finder.models import _REGISTRY, create_model

CHECKPOINT_FORMAT = "mlsky-alma-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that does not belong to the model asked for, or is unreadable."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, epoch: int, history: dict,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None,
                    best_state_dict: dict | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, then rename).

    ``state_dict`` is the last epoch's (to resume); ``best_state_dict``, when given, the
    weights used for inference (the best validation epoch).
    """
    from mlsky import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_name": model.model_name,
        "model_version": model.version,
        "model_kwargs": getattr(model, "init_kwargs", {}),
        "state_dict": model.state_dict(),
        "best_state_dict": best_state_dict,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "history": history,
        "extra": extra or {},
        "mlsky_version": __version__,
    }
    tmp = path.with_name(f".{path.name}.part")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike, model_name: str) -> dict:
    """Read a checkpoint and check that it holds ``model_name`` at the version this mlsky builds.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        Not an mlsky checkpoint, another model, or another version of the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}; train the pipeline with `mlsky alma train --out DIR`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for a bad file
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an mlsky ALMA checkpoint")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {state.get('format_version')}; this mlsky reads {CHECKPOINT_VERSION}")
    if state["model_name"] != model_name:
        raise CheckpointError(f"{path} holds model {state['model_name']!r}, not {model_name!r}")
    expected = _REGISTRY[model_name].version
    if state["model_version"] != expected:
        raise CheckpointError(
            f"{path} holds {model_name} version {state['model_version']}; this mlsky builds version {expected}: retrain it"
        )
    return state


def load_checkpoint(path: str | os.PathLike, model_name: str, device=None) -> tuple[nn.Module, dict]:
    """The trained model of a checkpoint (in eval mode) and its ``extra`` dictionary."""
    state = read_checkpoint(path, model_name)
    model = create_model(model_name, **state["model_kwargs"])
    best = state.get("best_state_dict")
    model.load_state_dict(best if best is not None else state["state_dict"])
    return model.to(device or "cpu").eval(), state["extra"]


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the inference weights of a training checkpoint, without its optimiser state.

    The best validation epoch's weights become the only weights; the loss history and the
    ``extra`` dictionary stay (the validation curves are part of what a model is). The result
    loads with :func:`load_checkpoint` like any checkpoint, but cannot resume training.
    """
    from mlsky import __version__

    raw = torch.load(Path(src), map_location="cpu", weights_only=True)
    state = read_checkpoint(src, raw.get("model_name", "") if isinstance(raw, dict) else "")
    best = state.get("best_state_dict")
    exported = {**state, "state_dict": best if best is not None else state["state_dict"], "best_state_dict": None,
                "optimizer": None, "mlsky_version": __version__}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    torch.save(exported, tmp)
    os.replace(tmp, dst)
    return dst
