"""Features learned from the sky: a small encoder trained on galaxy cutouts without labels.

ULISSE's features come from a network trained on photographs. Stein et al. (2021) and Hayat et
al. (2021) trained encoders on the survey images themselves, self-supervised, and searched
their representations instead. This package does that at laptop size:

- :mod:`~mlsky.ulisse.sky.encoder` -- :class:`SkyEncoder`, a residual CNN (32-64-128-256
  channels) that takes the extractor's 224 x 224 stamp, area-averages it to 64 pixels and
  returns a 256-d vector;
- :mod:`~mlsky.ulisse.sky.augment` -- the changes a galaxy allows (rotation, flip, shift,
  scale, PSF blur, reddening, dimming, noise) on batches of tensors;
- :mod:`~mlsky.ulisse.sky.train` -- SimCLR training on cutouts decoded once into memory;
- :mod:`~mlsky.ulisse.sky.ship` -- the shipped weights (sha256 in the registry) as the
  ``"sky"`` backbone of :class:`~mlsky.ulisse.features.FeatureExtractor`.

Examples
--------
>>> from mlsky.ulisse import FeatureExtractor
>>> extractor = FeatureExtractor(backbone="sky")            # doctest: +SKIP

.. code-block:: bash

    mlsky ulisse embed cutouts/ -o sky.npz --backbone sky
    MLSKY_SCALE=laptop mlsky ulisse train-sky --ship --seed 0   # how the shipped weights were made
"""

from mlsky.ulisse.sky.augment import Augmentation, galaxy_views
from mlsky.ulisse.sky.encoder import SkyEncoder
from mlsky.ulisse.sky.ship import load_sky_backbone, ship_encoder
from mlsky.ulisse.sky.train import export_encoder, load_encoder, train_encoder, training_fields, training_plan

__all__ = ["Augmentation", "SkyEncoder", "export_encoder", "galaxy_views", "load_encoder", "load_sky_backbone",
           "ship_encoder", "train_encoder", "training_fields", "training_plan"]
