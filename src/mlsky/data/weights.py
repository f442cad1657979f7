"""Trained weights that ship inside the package, each file checked against its sha256.

``weights.toml`` beside this file names every shipped set of weights: the package folder that
holds it, the command that made it, and the sha256 of each file. :func:`shipped_weights` returns
the folder after checking every file, so a damaged or replaced file is an error that names it,
never a silently different model.

Examples
--------
>>> from mlsky.data.weights import shipped_weights
>>> folder = shipped_weights("alma_finder")    # doctest: +SKIP
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path

from mlsky.data import DataCorruptError, _check_file

REGISTRY = Path(__file__).with_name("weights.toml")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@cache
def registry() -> dict[str, dict]:
    """Every shipped set of weights by name: ``title``, ``folder``, ``made_by``, ``files``."""
    with open(REGISTRY, "rb") as fh:
        return tomllib.load(fh)


def weights_folder(name: str) -> Path:
    """Where the shipped weights ``name`` live inside the installed package (not checked)."""
    try:
        entry = registry()[name]
    except KeyError:
        raise KeyError(f"no shipped weights called {name!r}; known: {', '.join(sorted(registry()))}") from None
    return PACKAGE_ROOT / entry["folder"]


def shipped_weights(name: str) -> Path:
    """The folder of the shipped weights ``name``, after checking each file's sha256.

    Raises
    ------
    KeyError
        Unknown name.
    DataCorruptError
        A file is missing or fails its checksum; the message names it.
    """
    folder = weights_folder(name)
    for file, expected in registry()[name]["files"].items():
        _check_file(folder / file, expected, f"weights {name}")
    return folder


def register_weights(name: str, *, title: str, folder: str, made_by: str, files: dict[str, str]) -> None:
    """Add or replace the registry entry ``name`` (written atomically; the other entries are kept).

    Parameters
    ----------
    folder
        The weights' folder relative to the package root (``mlsky/``).
    made_by
        The one command that made them.
    files
        sha256 of each file of the folder, by name.
    """
    entries = {**registry(), name: {"title": title, "folder": folder, "made_by": made_by, "files": files}}
    lines = ["# Trained weights that ship inside mlsky (see mlsky.data.weights): the package folder,",
             "# the command that made them, and the sha256 of every file.", ""]
    for key, entry in entries.items():
        lines += [f"[{key}]", f'title = "{entry["title"]}"', f'folder = "{entry["folder"]}"',
                  f'made_by = "{entry["made_by"]}"', "", f"[{key}.files]"]
        lines += [f'"{file}" = "{digest}"' for file, digest in entry["files"].items()] + [""]
    tmp = REGISTRY.with_name(f".{REGISTRY.name}.{os.getpid()}.part")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, REGISTRY)
    registry.cache_clear()


def status() -> dict[str, str]:
    """Each shipped set of weights and whether it is intact, for ``mlsky info``."""
    found = {}
    for name, entry in registry().items():
        try:
            folder = shipped_weights(name)
        except DataCorruptError as err:
            found[name] = f"DAMAGED: {err}"
        else:
            size = sum((folder / f).stat().st_size for f in entry["files"]) / 1e6
            found[name] = f"{folder} ({size:.1f} MB, checked)"
    return found


__all__ = ["REGISTRY", "register_weights", "registry", "shipped_weights", "status", "weights_folder"]
