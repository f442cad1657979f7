"""ALMA source finding in 3-D (Delli Veneri et al. 2023): simulated cubes and their detection.

- :mod:`mlsky.alma.antenna` -- CASA antenna configurations (``casadata``);
- :mod:`mlsky.alma.uv` -- Earth-rotation synthesis, imaging weights, dirty beam, noise level;
- :mod:`mlsky.alma.sky` -- sky models of Gaussian sources with Gaussian lines;
- :mod:`mlsky.alma.simulate` -- dirty cubes, sky models, beams and truth tables;
- :mod:`mlsky.alma.dataset` -- training sets of many cubes, in shards;
- :mod:`mlsky.alma.casa` -- the check against cubes made with CASA;
- :mod:`mlsky.alma.plot` -- an overview figure of a cube;
- :mod:`mlsky.alma.models` -- Blobs Finder, Deep GRU and the ResNet battery, by name;
- :mod:`mlsky.alma.train` -- training the three networks, with resumable checkpoints;
- :mod:`mlsky.alma.detect` -- the pipeline on any cube (``detect(cube)``) into a catalogue;
- :mod:`mlsky.alma.peers` and :mod:`mlsky.alma.metrics` -- classical finders, and scoring.
"""

from mlsky.alma.antenna import available_configs, load_antenna_config
from mlsky.alma.dataset import make_dataset
from mlsky.alma.simulate import SimulatedCube, fit_beam, random_cube, read_cube, simulate_cube
from mlsky.alma.uv import ObservationConfig, dirty_beam, uv_coverage

__all__ = [
    "ObservationConfig",
    "SimulatedCube",
    "available_configs",
    "dirty_beam",
    "fit_beam",
    "load_antenna_config",
    "make_dataset",
    "random_cube",
    "read_cube",
    "simulate_cube",
    "uv_coverage",
]
