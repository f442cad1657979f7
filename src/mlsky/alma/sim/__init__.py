"""The simulator: ALMA dirty cubes of Gaussian sources, and the check against CASA.

- :mod:`~mlsky.alma.sim.antenna` -- CASA antenna configurations (``casadata``);
- :mod:`~mlsky.alma.sim.uv` -- Earth-rotation synthesis, imaging weights, dirty beam, noise level;
- :mod:`~mlsky.alma.sim.sky` -- sky models of Gaussian sources with Gaussian lines;
- :mod:`~mlsky.alma.sim.simulate` -- dirty cubes, sky models, beams and truth tables;
- :mod:`~mlsky.alma.sim.dataset` -- training sets of many cubes, in checksummed shards, one writer per folder;
- :mod:`~mlsky.alma.sim.dask` -- the same sets simulated on a Dask cluster, and the paper's scale projected;
- :mod:`~mlsky.alma.sim.export` -- simulated cubes as FITS for CARTA or DS9;
- :mod:`~mlsky.alma.sim.casa` -- the check against cubes made with CASA;
- :mod:`~mlsky.alma.sim.plot` -- an overview figure of a cube.
"""

from mlsky.alma.sim.antenna import available_configs, load_antenna_config
from mlsky.alma.sim.dataset import make_dataset
from mlsky.alma.sim.simulate import SimulatedCube, fit_beam, random_cube, simulate_cube
from mlsky.alma.sim.uv import ObservationConfig, dirty_beam, uv_coverage

__all__ = [
    "ObservationConfig",
    "SimulatedCube",
    "available_configs",
    "dirty_beam",
    "fit_beam",
    "load_antenna_config",
    "make_dataset",
    "random_cube",
    "simulate_cube",
    "uv_coverage",
]
