"""The sky encoder that ships inside mlsky: made by one command, checked by sha256, loaded as a backbone.

.. code-block:: bash

    MLSKY_SCALE=laptop mlsky ulisse train-sky --ship --seed 0

decodes the Galaxy Zoo 1 cutouts, trains the encoder without their labels
(:func:`~mlsky.ulisse.sky.train.train_encoder` at the current scale), exports its weights (no
optimiser state) into the package folder ``mlsky/ulisse/sky/weights`` and writes their sha256
into the weights registry (``mlsky/data/weights.toml``, entry ``ulisse_sky``). Run it in a
source checkout and commit the result. :func:`load_sky_backbone` checks that sha256 before it
loads anything, so a damaged or replaced file is an error that names it.
"""

from __future__ import annotations

from pathlib import Path

from mlsky.data import sha256
from mlsky.data import weights as shipped
from mlsky.data.weights import register_weights, registry, shipped_weights
from mlsky.ulisse.backbone import Backbone
from mlsky.ulisse.sky.encoder import SkyEncoder
from mlsky.ulisse.sky.train import export_encoder, load_encoder

#: Registry name, package folder and file of the shipped encoder.
SKY_WEIGHTS = "ulisse_sky"
SKY_FOLDER = "ulisse/sky/weights"
SKY_FILE = "sky_encoder.pt"
SHIP_COMMAND = "MLSKY_SCALE=laptop mlsky ulisse train-sky --ship --seed 0"


def ship_encoder(encoder: SkyEncoder, history: dict, *, title: str) -> Path:
    """Export ``encoder`` into the package and register its sha256 as :data:`SKY_WEIGHTS`."""
    path = export_encoder(encoder, history, shipped.PACKAGE_ROOT / SKY_FOLDER / SKY_FILE)
    register_weights(SKY_WEIGHTS, title=title, folder=SKY_FOLDER, made_by=SHIP_COMMAND,
                     files={SKY_FILE: sha256(path)})
    return path


def sky_maps(model: SkyEncoder, x, bf16_from: int | None = None) -> dict:
    """The sky encoder's feature maps (all of it under bf16 autocast when ``bf16_from`` is set)."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16_from is not None):
        return model.feature_maps(x)


def load_sky_backbone() -> Backbone:
    """The shipped sky encoder as a :class:`~mlsky.ulisse.backbone.Backbone` named ``"sky"``.

    Its ``weights`` string starts with the file's sha256, so feature caches of other weights
    are never read back.

    Raises
    ------
    mlsky.data.DataCorruptError
        If the shipped file is missing or fails its sha256 (the message names it).
    KeyError
        If this copy of mlsky registers no sky encoder.
    """
    folder = shipped_weights(SKY_WEIGHTS)
    digest = registry()[SKY_WEIGHTS]["files"][SKY_FILE]
    encoder, history = load_encoder(folder / SKY_FILE)
    weights = (f"sha256:{digest} (self-supervised SimCLR on {history.get('images', '?')} Galaxy Zoo 1 cutouts, "
               f"seed {history.get('seed', '?')}; {registry()[SKY_WEIGHTS]['made_by']})")
    return Backbone(encoder, "sky", weights, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                    layers=("stage2", "stage3", "head"), maps=sky_maps)

