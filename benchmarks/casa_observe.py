"""Observe one sky model with CASA 6.7 as the ``alma_casa_reference`` cubes were made.

Run with a Python that has ``casatasks`` (not mlsky's environment: CASA pins its own numpy)::

    CASA_PYTHON benchmarks/casa_observe.py SKY.fits OUT_PREFIX SEED

``simobserve`` with ``alma.cycle9.3.cfg`` (from casadata) at the sky's own pointing and
frequencies, 2400 s in 10 s integrations around transit, ``tsys-atm`` thermal noise at pwv
0.8 mm (noise seed ``SEED``); then ``tclean`` with ``niter=0``, the standard gridder and Briggs
robust 0.5, on the sky's grid. Writes ``OUT_PREFIX_dirty.fits`` (Jy/beam) and
``OUT_PREFIX_psf.fits`` (the dirty beam at the middle channel), both 3-axis like the
reference cubes. Used by ``benchmarks/alma_casa_cubes.py``.
"""

import os
import shutil
import sys
import tempfile

import numpy as np
from astropy.io import fits
from casatasks import exportfits, simobserve, tclean

KEEP = ("CTYPE", "CRVAL", "CDELT", "CRPIX", "CUNIT")


def _three_axes(image: str, out: str, sky_header: fits.Header, middle_only: bool = False) -> None:
    """The exported CASA image as (freq, y, x) float32 with the sky model's 3-axis WCS."""
    data = np.squeeze(fits.getdata(image)).astype(np.float32)
    header = fits.Header()
    for axis in (1, 2, 3):
        for key in KEEP:
            header[f"{key}{axis}"] = sky_header[f"{key}{axis}"]
    header["BUNIT"] = "Jy/beam"
    if middle_only:
        data = data[len(data) // 2]
        for key in KEEP:
            del header[f"{key}3"]
    fits.PrimaryHDU(data, header).writeto(out)


def main(sky: str, prefix: str, seed: int) -> None:
    sky_header = fits.getheader(sky)
    nchan, ny = sky_header["NAXIS3"], sky_header["NAXIS2"]
    cell = f"{abs(sky_header['CDELT2']) * 3600:.6f}arcsec"
    start = f"{sky_header['CRVAL3'] - (sky_header['CRPIX3'] - 1) * sky_header['CDELT3']:.1f}Hz"
    width = f"{sky_header['CDELT3']:.1f}Hz"
    work = tempfile.mkdtemp(prefix="casa_observe_", dir=os.path.dirname(os.path.abspath(prefix)) or ".")
    here = os.getcwd()
    try:
        os.chdir(work)
        shutil.copy(os.path.join(here, sky) if not os.path.isabs(sky) else sky, "sky.fits")
        simobserve(project="sim", skymodel="sky.fits", setpointings=True, integration="10s", totaltime="2400s",
                   antennalist="alma.cycle9.3.cfg", thermalnoise="tsys-atm", user_pwv=0.8, obsmode="int",
                   graphics="none", verbose=False, overwrite=True, seed=seed)
        noisy = [f for f in os.listdir("sim") if f.endswith(".noisy.ms")][0]
        tclean(vis=os.path.join("sim", noisy), imagename="dirty", imsize=[ny, ny], cell=cell, specmode="cube",
               nchan=nchan, start=start, width=width, outframe="LSRK", niter=0, weighting="briggs", robust=0.5,
               gridder="standard", pbcor=False, restoringbeam="common")
        exportfits("dirty.image", "dirty_casa.fits", dropstokes=True, overwrite=True)
        exportfits("dirty.psf", "psf_casa.fits", dropstokes=True, overwrite=True)
        _three_axes("dirty_casa.fits", "dirty.fits", sky_header)
        _three_axes("psf_casa.fits", "psf.fits", sky_header, middle_only=True)
        os.chdir(here)
        os.replace(os.path.join(work, "dirty.fits"), f"{prefix}_dirty.fits")
        os.replace(os.path.join(work, "psf.fits"), f"{prefix}_psf.fits")
    finally:
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
