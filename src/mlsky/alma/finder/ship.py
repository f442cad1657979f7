"""The finder's default weights, which ship inside mlsky: made by one command, checked by sha256.

.. code-block:: bash

    MLSKY_SCALE=laptop mlsky alma train --ship --seed 0

trains the default pipeline (:func:`~mlsky.alma.finder.train.training_plan`) at the current
scale into the cache (resumable checkpoints, optimiser state included), then exports the
inference weights -- the best validation epoch, no optimiser state -- into the package folder
``mlsky/alma/finder/weights/default`` and writes their sha256 into the weights registry
(``mlsky/data/weights.toml``). Run it in a source checkout and commit the result.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mlsky.alma.finder.models.checkpoint import export_checkpoint
from mlsky.alma.finder.pipeline import PIPELINE_FILE
from mlsky.data import sha256
from mlsky.data.weights import register_weights, registry, weights_folder

#: The registry name of the finder's default weights.
DEFAULT_WEIGHTS = "alma_finder"
SHIP_COMMAND = "MLSKY_SCALE=laptop mlsky alma train --ship --seed 0"


def export_pipeline(train_dir: str | os.PathLike, out: str | os.PathLike) -> dict[str, str]:
    """Export a trained pipeline folder for inference: every checkpoint without its optimiser
    state, and ``pipeline.json``. Returns each written file's sha256."""
    train_dir, out = Path(train_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.pt"):
        old.unlink()
    shutil.copyfile(train_dir / PIPELINE_FILE, out / PIPELINE_FILE)
    for checkpoint in sorted(train_dir.glob("*.pt")):
        export_checkpoint(checkpoint, out / checkpoint.name)
    return {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file()}


def ship_default_weights(train_dir: str | os.PathLike, *, title: str) -> dict[str, str]:
    """Export ``train_dir`` as the default weights inside the package and register their sha256."""
    out = weights_folder(DEFAULT_WEIGHTS)
    files = export_pipeline(train_dir, out)
    register_weights(DEFAULT_WEIGHTS, title=title, folder=registry()[DEFAULT_WEIGHTS]["folder"],
                     made_by=SHIP_COMMAND, files=files)
    return files
