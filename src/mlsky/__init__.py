"""mlsky: scientific machine learning in astrophysics, run for real.

The package behind the mlsky book. Each case study is a sub-package:

- :mod:`mlsky.ops` -- the small experiments of the epistemology chapter;
- :mod:`mlsky.photoz` -- photometric redshifts by forward feature selection;
- :mod:`mlsky.ulisse` -- one-shot similarity search in pretrained CNN features;
- :mod:`mlsky.alma` -- simulated ALMA cubes and 3-D source finding.

:mod:`mlsky.config` sizes every experiment (``MLSKY_SCALE``) and picks the device;
:mod:`mlsky.data` finds the real data sets, offline or online.
"""

__version__ = "0.1.0"

from mlsky.config import describe, get_device, get_scale, seed_everything

__all__ = ["__version__", "describe", "get_device", "get_scale", "seed_everything"]
