"""Make CASA cubes like ``alma_casa_reference`` from mlsky's random skies: CASA data that no
finder has been tuned on.

The six shared CASA reference cubes are too few to tell a noise-limited false detection from a
miscalibrated one, and nothing may be tuned on them. This script makes more in the same set-up
(:mod:`mlsky.alma.sim.casa`): for each seed, a sky of :func:`~mlsky.alma.sim.sky.random_sources`
(64 x 128 x 128, the simulator's skies without continuum, which the reference format has no
column for) is written as a sky model in Jy/pixel on the reference cubes' grid (0.1" pixels,
J2000 12h00m00 -30d00m00, 64 channels of 10 MHz from 229.68 GHz); ``benchmarks/casa_observe.py``
observes it with CASA 6.7 (``simobserve`` + ``tclean``, about 45 s a cube here); the truth file,
in the reference format with the noise rms of the first 4 channels, is written last, so that
an interrupted run leaves no cube that :func:`~mlsky.alma.sim.casa.casa_reference_names` lists.
Cubes already in ``OUT`` are kept unless ``--overwrite``.

CASA needs its own Python (it pins numpy)::

    python -m venv casa-venv && casa-venv/bin/pip install casatools==6.7.0.31 casatasks casadata six astropy

with ``~/.casa/config.py`` pointing ``measurespath`` at casadata's ``__data__`` folder and
``measures_auto_update = data_auto_update = False`` (offline).

Run: ``python benchmarks/alma_casa_cubes.py OUT --casa-python casa-venv/bin/python [--n 12] [--seed 6000000]
[--wide-lines]``;
then ``python benchmarks/alma_detect.py --casa-dir OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from mlsky.alma.sim.sky import FWHM_PER_SIGMA, random_sources, sky_cube, validate_sources

SHAPE = (64, 128, 128)
#: The reference cubes' grid (their sky models' FITS header).
GRID = {"CTYPE1": "RA---SIN", "CRVAL1": 180.0, "CDELT1": -0.1 / 3600, "CRPIX1": 65.0, "CUNIT1": "deg",
        "CTYPE2": "DEC--SIN", "CRVAL2": -30.0, "CDELT2": 0.1 / 3600, "CRPIX2": 65.0, "CUNIT2": "deg",
        "CTYPE3": "FREQ", "CRVAL3": 229.68e9, "CDELT3": 10e6, "CRPIX3": 1.0, "CUNIT3": "Hz"}
OBSERVE = Path(__file__).with_name("casa_observe.py")


def write_sky(seed: int, path: Path, wide_lines: bool = False) -> list[dict]:
    """The sky model of ``seed`` as FITS (Jy/pixel); returns its sources in the reference format.

    ``wide_lines`` draws line widths of 3-12 channels FWHM, as in the simulator's 128-channel
    skies, instead of the half that it scales them to in 64 channels.
    """
    rng = np.random.default_rng(seed)
    sources = random_sources(rng, SHAPE)
    sources["continuum_jy"] = 0.0
    if wide_lines:
        sources["fwhm_z"] = rng.uniform(3, 12, len(sources))
    sources = validate_sources(sources, SHAPE)
    header = fits.Header(GRID)
    header["BUNIT"] = "Jy/pixel"
    fits.PrimaryHDU(sky_cube(sources, SHAPE), header).writeto(path, overwrite=True)
    return [dict(x=float(s["x"]), y=float(s["y"]), sigma_x=float(s["fwhm_x"] / FWHM_PER_SIGMA),
                 sigma_y=float(s["fwhm_y"] / FWHM_PER_SIGMA), pa_deg=float(s["pa_deg"]), z=float(s["z"]),
                 sigma_z=float(s["fwhm_z"] / FWHM_PER_SIGMA), peak_jy_per_pix=float(s["peak_jy_per_pix"]))
            for s in sources]


def make_cube(seed: int, out: Path, casa_python: str, wide_lines: bool = False) -> None:
    name = f"casa_{seed}"
    sources = write_sky(seed, out / f"{name}_sky.fits", wide_lines)
    # CASA writes its log where it starts: a scratch folder, not OUT.
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        subprocess.run([casa_python, str(OBSERVE), str((out / f"{name}_sky.fits").resolve()),
                        str((out / name).resolve()), str(seed)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=scratch)
    dirty = fits.getdata(out / f"{name}_dirty.fits")
    meta = dict(seed=seed, shape_zyx=list(SHAPE), cell_arcsec=0.1, freq0_hz=230e9, dfreq_hz=10e6,
                antenna_config="alma.cycle9.3.cfg", noise_rms_jy_per_beam=float(np.std(dirty[:4])), sources=sources,
                made_by="benchmarks/alma_casa_cubes.py (mlsky random_sources, CASA 6.7 simobserve + tclean)")
    tmp = out / f".{name}_truth.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / f"{name}_truth.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--casa-python", required=True, help="a Python with casatasks (CASA 6.7)")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=6_000_000)
    parser.add_argument("--wide-lines", action="store_true", help="line widths 3-12 channels FWHM (default 1.5-6)")
    parser.add_argument("--overwrite", action="store_true", help="make again the cubes OUT already holds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seed, args.seed + args.n):
        if (args.out / f"casa_{seed}_truth.json").exists() and not args.overwrite:
            print(f"casa_{seed}: kept (in {args.out}; --overwrite makes it again)")
            continue
        start = time.perf_counter()
        make_cube(seed, args.out, args.casa_python, args.wide_lines)
        print(f"casa_{seed}: made in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
