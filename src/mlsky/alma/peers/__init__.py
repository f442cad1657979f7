"""Classical source finders to compare with the deep-learning pipeline, run on the same cubes.

- :mod:`mlsky.alma.peers.sofia2` -- the real SoFiA-2 (:class:`Sofia2Finder`), a C program
  run as a subprocess when it is installed;
- :mod:`mlsky.alma.peers.python` -- finders in Python: a SoFiA-like smooth-and-clip
  (:class:`SofiaFinder`, the fallback without the binary), a blobcat-like flood fill
  (:class:`BlobcatFinder`) and photutils segmentation (:class:`PhotutilsFinder`).

Every peer is an estimator: parameters in ``__init__``, :meth:`fit` tunes them by a grid search
for the best F1 (strict matching) on validation cubes with truth tables, :meth:`predict`
returns a catalogue with the columns of :func:`mlsky.alma.finder.finish_catalogue`.
:func:`sofia_agreement` measures how close the Python fallback comes to the real SoFiA-2.

Examples
--------
>>> from mlsky.alma.peers import Sofia2Finder, SofiaFinder, find_sofia
>>> finder = Sofia2Finder().fit(validation_cubes)       # doctest: +SKIP
>>> catalogue = finder.predict(cube)                    # doctest: +SKIP
"""

from mlsky.alma.peers.python import (
    BlobcatFinder,
    PhotutilsFinder,
    SofiaFinder,
    catalogue_from_labels,
    reliability,
)
from mlsky.alma.peers.sofia2 import (
    SOFIA_ENV,
    Sofia2Finder,
    SofiaNotFoundError,
    find_sofia,
    read_sofia_catalogue,
    sofia_agreement,
)

__all__ = [
    "SOFIA_ENV",
    "BlobcatFinder",
    "PhotutilsFinder",
    "Sofia2Finder",
    "SofiaFinder",
    "SofiaNotFoundError",
    "catalogue_from_labels",
    "find_sofia",
    "read_sofia_catalogue",
    "reliability",
    "sofia_agreement",
]
