"""Candidates that a brighter source's dirty-beam sidelobes explain.

A dirty cube is the sky convolved with the dirty beam, whose far sidelobes reach several per
cent of its peak. Beside a source of significance 50, a sidelobe of 8% is a 4-sigma "source" in
the same channels, which no noise statistic flags: the negated cube has the negative sidelobes
of no bright negative source. Given the dirty beam (CASA's ``tclean`` writes it as ``.psf``),
:func:`sidelobe_share` predicts each candidate's significance from the brighter candidates
whose channels overlap its own, as the beam at their offset times their significance, and
:class:`~mlsky.alma.finder.pipeline.AlmaSourceFinder` drops a candidate when that prediction is
at least :data:`SIDELOBE_SHARE` of its own significance.

Within :data:`NEAR_BEAMS` beam FWHMs of a brighter source the test does not apply: there the
beam's main lobe would explain any companion, and close pairs are the deblending step's task.
The cube's own noise autocorrelation cannot stand in for the beam: for Briggs weighting its
sidelobes are several times weaker than the dirty beam's.

Examples
--------
>>> import numpy as np
>>> psf = np.zeros((65, 65)); psf[32, 32] = 1.0; psf[32, 32 + 20] = 0.08
>>> rows = [dict(x=10.0, y=30.0, z0=5, z1=9, snr=50.0), dict(x=30.0, y=30.0, z0=6, z1=8, snr=4.2)]
>>> [round(s, 2) for s in sidelobe_share(rows, psf, beam_fwhm_pix=6.0)]
[0.0, 0.95]
"""

from __future__ import annotations

import numpy as np

__all__ = ["NEAR_BEAMS", "SIDELOBE_SHARE", "sidelobe_share"]

#: A candidate whose significance is at least this share a brighter source's predicted sidelobe is dropped.
SIDELOBE_SHARE = 0.5
#: Offsets within this many beam FWHMs of a brighter candidate are not tested (main lobe, companions).
NEAR_BEAMS = 2.0


def sidelobe_share(rows: list[dict], psf: np.ndarray, beam_fwhm_pix: float) -> list[float]:
    """For each candidate (``x, y, z0, z1, snr``), the largest significance that one brighter
    candidate with overlapping channels predicts for it through ``psf`` (the dirty beam, peak 1
    at the centre pixel ``shape // 2``), over its own significance; 0 when none does or the
    offset lies outside the beam image or within :data:`NEAR_BEAMS` beams."""
    psf = np.asarray(psf, float)
    if psf.ndim != 2:
        raise ValueError(f"the dirty beam (psf) must be a 2-D image, not {psf.ndim}-D")
    cy, cx = np.array(psf.shape) // 2
    shares = []
    for row in rows:
        predicted = 0.0
        for other in rows:
            if other["snr"] <= row["snr"] or other["z0"] >= row["z1"] or row["z0"] >= other["z1"]:
                continue
            dx, dy = row["x"] - other["x"], row["y"] - other["y"]
            ix, iy = cx + int(round(dx)), cy + int(round(dy))
            if np.hypot(dx, dy) < NEAR_BEAMS * beam_fwhm_pix or not (0 <= ix < psf.shape[1] and 0 <= iy < psf.shape[0]):
                continue
            predicted = max(predicted, float(psf[iy, ix]) * other["snr"])
        shares.append(float(predicted / row["snr"]) if row["snr"] > 0 else 0.0)
    return shares
