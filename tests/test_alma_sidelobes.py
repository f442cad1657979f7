"""The dirty-beam sidelobe test of the finder (mlsky.alma.finder.sidelobes) and its psf input."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from mlsky.alma.finder import detect
from mlsky.alma.io import read_psf
from mlsky.alma.finder.sidelobes import NEAR_BEAMS, SIDELOBE_SHARE, sidelobe_share
from mlsky.alma.sim.simulate import random_cube

BEAM = 6.0


def _psf(offset=(20, 0), level=0.08, size=65):
    psf = np.zeros((size, size))
    psf[size // 2, size // 2] = 1.0
    psf[size // 2 + offset[1], size // 2 + offset[0]] = level
    return psf


def row(x, y, snr, z0=5, z1=9):
    return dict(x=float(x), y=float(y), z0=z0, z1=z1, snr=float(snr))


def test_a_brighter_sources_sidelobe_explains_a_faint_candidate_in_its_channels():
    bright, faint = row(10, 30, 50), row(30, 30, 4.0, 6, 8)
    assert sidelobe_share([bright, faint], _psf(), BEAM) == [0.0, pytest.approx(50 * 0.08 / 4.0)]
    assert sidelobe_share([bright, faint], _psf(), BEAM)[1] >= SIDELOBE_SHARE
    # Other channels, the other side of the beam, or a brighter candidate: nothing explained.
    assert sidelobe_share([bright, row(30, 30, 4.0, 12, 15)], _psf(), BEAM)[1] == 0.0
    assert sidelobe_share([bright, row(-10, 30, 4.0)], _psf(), BEAM)[1] == 0.0
    assert sidelobe_share([row(10, 30, 3.0), row(30, 30, 4.0)], _psf(), BEAM) == [0.0, 0.0]


def test_companions_near_a_bright_source_and_offsets_beyond_the_beam_image_are_kept():
    near = NEAR_BEAMS * BEAM - 1
    psf = _psf(offset=(int(near), 0), level=0.5)
    assert sidelobe_share([row(10, 30, 50), row(10 + near, 30, 4.0)], psf, BEAM)[1] == 0.0
    assert sidelobe_share([row(0, 30, 50), row(40, 30, 4.0)], _psf(size=65), BEAM)[1] == 0.0


def test_read_psf_normalises_and_refuses_what_is_not_a_beam(tmp_path):
    path = tmp_path / "psf.fits"
    fits.PrimaryHDU((3 * _psf())[None, None].astype(np.float32)).writeto(path)
    beam = read_psf(path)
    assert beam.shape == (65, 65) and beam.max() == 1.0
    assert read_psf(np.stack([_psf()] * 3)).shape == (65, 65)  # a cube: its middle plane
    zoomed = read_psf(_psf(level=0.0) + np.outer(np.hanning(65), np.hanning(65)), zoom=2.0)
    assert zoomed.shape == (130, 130) and np.unravel_index(np.argmax(zoomed), zoomed.shape) == (65, 65)
    with pytest.raises(ValueError, match=r"must peak at its centre pixel \(shape // 2 = \(32, 32\)"):
        read_psf(np.roll(_psf(level=0.0), 1, axis=1))
    with pytest.raises(ValueError, match="finite 2-D image with a positive peak"):
        read_psf(np.zeros(5))
    with pytest.raises(ValueError, match="finite 2-D image with a positive peak"):
        read_psf(-_psf())
    with pytest.raises(ValueError, match="not a readable FITS dirty beam"):
        (tmp_path / "junk.fits").write_text("junk")
        read_psf(tmp_path / "junk.fits")


def test_the_dirty_beam_changes_nothing_where_no_sidelobe_explains_a_candidate():
    sim = random_cube(3, shape=(32, 64, 64))
    without = detect(sim)
    flat = np.zeros_like(sim.beam)
    flat[tuple(np.array(flat.shape) // 2)] = 1.0
    with_beam = detect(sim, psf=flat)
    assert len(without) > 0
    # The same detections (each one's significance comes from the detector, not from the fit,
    # which now goes through the given beam).
    np.testing.assert_array_equal(np.asarray(without["snr"]), np.asarray(with_beam["snr"]))


def test_cli_detect_refuses_a_bad_psf_before_any_work(tmp_path, capsys):
    from mlsky.cli import main

    [dirty, *_] = random_cube(3, shape=(16, 48, 48)).to_fits(tmp_path / "c")
    bad = tmp_path / "psf.fits"
    fits.PrimaryHDU(np.zeros(5, np.float32)).writeto(bad)
    target = tmp_path / "cat.ecsv"
    assert main(["alma", "detect", str(dirty), "-o", str(target), "--psf", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "psf.fits" in err[0] and "Traceback" not in err[0]
    assert not target.exists()


def test_a_cube_keeps_its_dirty_beam_and_the_finder_uses_it():
    from mlsky.alma.finder import as_cube
    from mlsky.alma.finder.cube import resample

    sim = random_cube(3, shape=(32, 64, 64))
    cube = as_cube(sim, psf=sim.beam)
    np.testing.assert_allclose(cube.psf, sim.beam / sim.beam.max())
    assert as_cube(sim).psf is None
    given = detect(sim, psf=sim.beam)
    kept = detect(cube)
    assert len(given) > 0
    for column in ("x", "y", "fwhm_x", "fwhm_y", "flux"):
        np.testing.assert_array_equal(np.asarray(given[column]), np.asarray(kept[column]))
    # Resampled onto twice as fine pixels, the beam goes with the cube.
    finer, _ = resample(cube, cube.pixel_scale_arcsec / 2, cube.channel_width_hz)
    assert finer.psf.shape == (2 * sim.beam.shape[0], 2 * sim.beam.shape[1])
    with pytest.raises(ValueError, match="psf: a dirty beam must be a finite 2-D image"):
        as_cube(sim, psf=np.zeros(5))
