"""ALMA source finding in 3-D (Delli Veneri et al. 2023): simulated cubes and their detection.

- :mod:`mlsky.alma.sim` -- the simulator: antenna configurations, uv coverage, dirty beams,
  sky models, dirty cubes, training sets in shards, and the check against CASA;
- :mod:`mlsky.alma.finder` -- the finder: cube reading, network inputs, Blobs Finder, Deep GRU
  and the ResNet battery, the pipeline (:func:`detect`), training and checkpoints;
- :mod:`mlsky.alma.peers` -- classical finders to compare with;
- :mod:`mlsky.alma.metrics` -- matching detections to the truth, and scores;
- :mod:`mlsky.alma.io` -- the one FITS cube reader and atomic catalogue writes.

Examples
--------
>>> from mlsky.alma import detect
>>> catalogue = detect("cube.fits")        # doctest: +SKIP
"""

from mlsky.alma.finder import AlmaSourceFinder, detect
from mlsky.alma.io import read_cube
from mlsky.alma.sim import (
    ObservationConfig,
    SimulatedCube,
    available_configs,
    dirty_beam,
    fit_beam,
    load_antenna_config,
    make_dataset,
    random_cube,
    simulate_cube,
    uv_coverage,
)

__all__ = [
    "AlmaSourceFinder",
    "ObservationConfig",
    "SimulatedCube",
    "available_configs",
    "detect",
    "dirty_beam",
    "fit_beam",
    "load_antenna_config",
    "make_dataset",
    "random_cube",
    "read_cube",
    "simulate_cube",
    "uv_coverage",
]
