"""How many detections as significant as a candidate the noise alone would give: the negated cube.

The networks were trained on cubes of one size. On a larger cube they see more noise, and more
of its peaks look like sources to them: on 128x256x256 simulated cubes, the shipped finder's
false detections outnumber its true ones. A classical finder meets the same problem, and SoFiA
(Serra et al. 2012) answers it with the negated cube: noise is symmetric and sources are
positive, so the detections that the same procedure makes on ``-cube`` are a sample of its
false detections, in the same volume, with the same noise and the same sidelobes.

Here the networks run on the negated cube too, and each candidate gets a significance
(:func:`significance`: the image summed over its channels, smoothed over a quarter of the
beam, in units of its robust rms). The negated cube's candidates above :data:`REFERENCE_SNR` give
the noise's tail in this cube; extrapolated as a Gaussian tail (:func:`expected_false`), it
tells how many noise detections at least as significant as a candidate the cube should hold.
A quiet cube may give no negative candidate at all: it then counts the candidates that the
noise gives on average in its volume (:data:`NOISE_RATE` per resolution element,
:func:`resolution_elements`), not a fixed number per cube, so that a small cube does not ask
a faint source for the significance that a large one needs.
:class:`~mlsky.alma.finder.pipeline.AlmaSourceFinder` keeps the candidates for which that
number is at most ``false_alarms``.

On simulated development cubes (seeds 8,600,000+ to 8,900,000+, used by no benchmark), the
false detections and the negated cube's detections have the same distribution of
significance; the constants below were chosen or measured there.

Examples
--------
>>> import numpy as np
>>> noise = np.array([3.6, 3.8, 4.1, 4.4])
>>> float(expected_false(5.0, noise, 2e5)) < float(expected_false(4.0, noise, 2e5))
True
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from astropy.stats import mad_std
from scipy import ndimage

from mlsky.alma.finder.cube import Cube

__all__ = ["NOISE_RATE", "REFERENCE_SNR", "expected_false", "negated", "required_significance", "resolution_elements",
           "significance"]

#: Significance above which the negated cube's candidates sample the noise's tail.
REFERENCE_SNR = 3.5
#: The tail's width when the cube has few negative candidates: unit noise, as the
#: significance is in units of its rms. It counts as :data:`PRIOR_WEIGHT` candidates.
PRIOR_SIGMA = 1.0
PRIOR_WEIGHT = 5
#: The negated cubes' candidates above :data:`REFERENCE_SNR` per resolution element (beam area
#: x channel), pooled over 72 development cubes of 64 x 128 x 128 and 128 x 256 x 256, of
#: ordinary and of faint skies: 22 candidates in 5.3 million elements.
NOISE_RATE = 4e-6
#: The sigma of the Gaussian that smooths the summed image, in beam FWHMs: extended sources
#: gain, point sources lose little (the dirty image's noise is already correlated over the beam).
SMOOTHING_BEAMS = 0.25


def negated(cube: Cube) -> Cube:
    """The cube with its sign flipped: its sources become holes and its noise stays noise."""
    return replace(cube, data=-cube.data)


def resolution_elements(cube: Cube) -> float:
    """The cube's volume in resolution elements: unblanked pixels x channels / beam area."""
    return float(np.count_nonzero(~cube.blank) * cube.data.shape[0] / cube.beam_area_pix)


def significance(cube: Cube, x: float, y: float, z0: int, z1: int) -> float:
    """The signal-to-noise ratio of a candidate at ``(x, y)`` with emission in channels ``[z0, z1)``.

    The noise-normalised channels are summed, the image is smoothed by a Gaussian of sigma
    :data:`SMOOTHING_BEAMS` beam FWHMs, divided by its robust rms (:func:`astropy.stats.mad_std`,
    so that correlated channels count as they are), and its largest value within one pixel of
    the position is returned.
    """
    image = cube.snr_of(slice(max(z0, 0), max(z1, z0 + 1))).sum(axis=0)
    image = ndimage.gaussian_filter(image, SMOOTHING_BEAMS * cube.beam_fwhm_pix)
    rms = mad_std(image)
    xi, yi = int(round(x)), int(round(y))
    window = image[max(yi - 1, 0) : yi + 2, max(xi - 1, 0) : xi + 2]
    return float(window.max() / rms) if window.size and rms > 0 else 0.0


def expected_false(snr: float | np.ndarray, noise_snr: np.ndarray, volume: float) -> np.ndarray:
    """The expected number of noise detections with significance at least ``snr`` in a cube of
    ``volume`` resolution elements whose negated cube gave candidates of significance ``noise_snr``.

    Above :data:`REFERENCE_SNR` (``s0``), the ``n`` negative candidates are taken to follow a
    Gaussian tail, ``N(>= s) = n exp(-(s^2 - s0^2) / 2 sigma^2)``; ``sigma^2`` is its
    maximum-likelihood value, with :data:`PRIOR_WEIGHT` pseudo-candidates of width
    :data:`PRIOR_SIGMA` so that a cube with few negatives is not trusted to define a tail. ``n``
    is at least the noise's average count in that volume, :data:`NOISE_RATE` x ``volume``.
    """
    n, sigma2 = _noise_tail(noise_snr, volume)
    snr = np.maximum(np.asarray(snr, float), REFERENCE_SNR)
    return n * np.exp(-(snr**2 - REFERENCE_SNR**2) / (2 * sigma2))


def required_significance(noise_snr: np.ndarray, volume: float, false_alarms: float) -> float:
    """The significance at which :func:`expected_false` falls to ``false_alarms``: the least a
    candidate needs to be kept in that cube (at least :data:`REFERENCE_SNR`).

    >>> s = required_significance(np.array([]), 2e5, 0.02)
    >>> bool(np.isclose(expected_false(s, np.array([]), 2e5), 0.02))
    True
    """
    n, sigma2 = _noise_tail(noise_snr, volume)
    return float(np.sqrt(REFERENCE_SNR**2 + 2 * sigma2 * max(np.log(n / false_alarms), 0.0)))


def _noise_tail(noise_snr: np.ndarray, volume: float) -> tuple[float, float]:
    """The Gaussian tail of :func:`expected_false`: its count above :data:`REFERENCE_SNR` and its
    ``sigma^2``."""
    s0 = REFERENCE_SNR
    noise_snr = np.asarray(noise_snr, float)
    tail = noise_snr[noise_snr >= s0]
    sigma2 = (np.sum(tail**2 - s0**2) / 2 + PRIOR_WEIGHT * PRIOR_SIGMA**2) / (len(tail) + PRIOR_WEIGHT)
    return max(len(tail), NOISE_RATE * volume), float(sigma2)
