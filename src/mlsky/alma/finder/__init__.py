"""The finder: the deep-learning pipeline of Delli Veneri et al. (2023) on any dirty cube.

- :mod:`~mlsky.alma.finder.cube` -- a FITS cube read, checked and resampled for the networks;
- :mod:`~mlsky.alma.finder.inputs` -- the images and spectra the three networks read;
- :mod:`~mlsky.alma.finder.models` -- Blobs Finder, Deep GRU and the ResNet battery, by name,
  with checkpoint I/O beside the registry;
- :mod:`~mlsky.alma.finder.pipeline` -- :class:`AlmaSourceFinder` and :func:`detect`;
- :mod:`~mlsky.alma.finder.reliability` -- the candidates judged against the negated cube's;
- :mod:`~mlsky.alma.finder.measure` and :mod:`~mlsky.alma.finder.deblend` -- each detection
  measured on the cube, close pairs split;
- :mod:`~mlsky.alma.finder.catalogue` -- the catalogue every finder writes;
- :mod:`~mlsky.alma.finder.train` -- training the three networks, with resumable checkpoints;
- :mod:`~mlsky.alma.finder.data` -- training cubes streamed from a simulated set's shards;
- :mod:`~mlsky.alma.finder.distributed` -- DistributedDataParallel under ``torchrun``;
- :mod:`~mlsky.alma.finder.plot` -- figures of the pipeline at work.
"""

from mlsky.alma.finder.catalogue import CATALOGUE_COLUMNS, finish_catalogue
from mlsky.alma.finder.cube import Cube, as_cube, resample
from mlsky.alma.finder.inputs import integrated_image
from mlsky.alma.finder.pipeline import AlmaSourceFinder, PipelineConfig, default_weights_dir, detect
from mlsky.alma.io import CubeError, write_catalogue

__all__ = [
    "CATALOGUE_COLUMNS",
    "AlmaSourceFinder",
    "Cube",
    "CubeError",
    "PipelineConfig",
    "as_cube",
    "default_weights_dir",
    "detect",
    "finish_catalogue",
    "integrated_image",
    "resample",
    "write_catalogue",
]
