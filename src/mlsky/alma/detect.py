"""Finding and characterising sources in ALMA cubes with the deep-learning pipeline.

The pipeline of Delli Veneri et al. (2023), in three steps:

1. **Blobs Finder** turns the frequency-integrated dirty image into a source probability map;
   thresholding it and labelling connected regions gives 2-D boxes.
2. **Deep GRU** reads the dirty spectrum inside each box and marks the channels with emission;
   each emission range is a detection (z, its extent), and a box with two ranges is flagged
   for deblending. Boxes with no emission are dropped as false positives.
3. The **ResNet battery** regresses FWHMx, FWHMy, position angle and flux from a cutout
   integrated over the emission range.

Any cube size works: the integrated image is zero-padded or tiled to the network's input, and
a cube with another pixel scale or channel width than the training cubes is resampled to
them first (both read from the WCS). NaN-blanked voxels count as empty sky.

Examples
--------
>>> from mlsky.alma.detect import detect
>>> catalogue = detect("cube.fits", weights="weights/")   # doctest: +SKIP
>>> catalogue["ra", "dec", "freq", "flux", "deblend"]     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy import ndimage

from mlsky.alma.sky import FWHM_PER_SIGMA, validate_sources

#: Columns of every catalogue written by the pipeline and the peers.
CATALOGUE_COLUMNS = (
    "x", "y", "z", "x0", "x1", "y0", "y1", "z0", "z1", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z",
    "flux", "ra", "dec", "freq", "deblend",
)  # fmt: skip
PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT = 1


class CubeError(ValueError):
    """A cube that the pipeline cannot read: axes, spectral axis, data or noise."""


@dataclass
class Cube:
    """A dirty cube ready for source finding.

    Attributes
    ----------
    data
        ``(n_chan, ny, nx)`` float32 in Jy/beam, NaN replaced by 0.
    noise
        Robust rms of each channel (Jy/beam); the noise of a dirty cube changes with frequency.
    blank
        ``(ny, nx)`` True where every channel was NaN (blanked edges).
    wcs
        The 3-D WCS (RA, Dec, frequency), spectral axis last in FITS order.
    pixel_scale_arcsec, channel_width_hz
        From the WCS.
    name
        Where the cube came from, for error messages.
    """

    data: np.ndarray
    noise: np.ndarray
    blank: np.ndarray
    wcs: WCS
    pixel_scale_arcsec: float
    channel_width_hz: float
    name: str = "cube"
    beam_area_pix: float = field(default=np.nan)

    @property
    def snr(self) -> np.ndarray:
        """The cube in units of its per-channel noise."""
        return self.data / self.noise[:, None, None]


def _robust_std(x: np.ndarray, axis=None) -> np.ndarray:
    med = np.nanmedian(x, axis=axis, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(x - med), axis=axis)


def _as_array_and_header(obj: Any) -> tuple[np.ndarray, fits.Header, str]:
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_file():
            raise FileNotFoundError(f"no cube file {path}")
        try:
            with fits.open(path) as hdul:
                hdu = next((h for h in hdul if h.data is not None and h.data.ndim >= 2), None)
                if hdu is None:
                    raise CubeError(f"{path} holds no image data")
                return np.asarray(hdu.data, np.float32), hdu.header.copy(), str(path)
        except (OSError, TypeError) as err:
            raise CubeError(f"{path} is not a readable FITS file: {err}") from err
    if isinstance(obj, fits.HDUList):
        obj = obj[0]
    if isinstance(obj, (fits.PrimaryHDU, fits.ImageHDU)):
        return np.asarray(obj.data, np.float32), obj.header.copy(), "HDU"
    if hasattr(obj, "dirty") and hasattr(obj, "header"):
        return np.asarray(obj.dirty, np.float32), fits.Header(obj.header), getattr(obj, "name", "simulated cube")
    if isinstance(obj, tuple) and len(obj) == 2:
        return np.asarray(obj[0], np.float32), fits.Header(obj[1]), "array"
    raise TypeError(f"cannot read a cube from {type(obj).__name__}: give a FITS path, an HDU, "
                    "a SimulatedCube or (data, header)")


def as_cube(obj: Any) -> Cube:
    """Read a dirty cube (FITS path, HDU, :class:`~mlsky.alma.simulate.SimulatedCube` or
    ``(data, header)``) and check it.

    A degenerate Stokes axis is dropped. The spectral axis must be frequency (``FREQ``).

    Raises
    ------
    CubeError
        Wrong number of axes, no or unknown spectral axis, no celestial axes, all data NaN,
        or zero noise; the message names the cube.
    """
    import warnings

    data, header, name = _as_array_and_header(obj)
    if data.ndim == 4 and 1 in data.shape:
        stokes = [i for i in range(4) if data.shape[i] == 1]
        fits_axis = 4 - stokes[0]
        header = header.copy()
        data = np.squeeze(data, axis=stokes[0])
        header = _drop_axis(header, fits_axis)
    if data.ndim != 3:
        raise CubeError(f"{name}: a cube needs 3 axes (frequency, dec, ra), got {data.ndim} with shape {data.shape}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=3)
    except Exception as err:  # astropy raises several WCS error types; all mean "unusable WCS"
        raise CubeError(f"{name}: its WCS cannot be read: {err}") from err
    spec = wcs.wcs.spec
    ctypes = list(wcs.wcs.ctype)
    if spec < 0:
        raise CubeError(f"{name}: no spectral axis among CTYPEs {ctypes}")
    if not ctypes[spec].upper().startswith("FREQ"):
        raise CubeError(f"{name}: spectral axis {ctypes[spec]!r} is not frequency (FREQ); convert it first")
    if not wcs.has_celestial:
        raise CubeError(f"{name}: no celestial (RA/Dec) axes among CTYPEs {ctypes}")
    # numpy axis order is the reverse of FITS; put the spectral axis first.
    data = np.moveaxis(data, 2 - spec, 0)
    if spec != 2:
        wcs = wcs.sub([wcs.wcs.lng + 1, wcs.wcs.lat + 1, spec + 1])
    finite = np.isfinite(data)
    if not finite.any():
        raise CubeError(f"{name}: every value is NaN or infinite")
    noise = _robust_std(np.where(finite, data, np.nan).reshape(data.shape[0], -1), axis=1)
    good = np.isfinite(noise) & (noise > 0)
    if not good.any():
        raise CubeError(f"{name}: the noise is zero (the data are constant); not a dirty cube")
    noise = np.where(good, noise, np.median(noise[good])).astype(np.float32)
    blank = ~finite.any(axis=0)
    data = np.where(finite, data, 0.0).astype(np.float32)
    pixel_scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600)
    freqs = wcs.spectral.pixel_to_world_values(np.array([0.0, 1.0]))
    channel_width = float(abs(freqs[1] - freqs[0]))
    cube = Cube(data, noise, blank, wcs, pixel_scale, channel_width, name)
    cube.beam_area_pix = _beam_area(cube, header)
    return cube


def _drop_axis(header: fits.Header, fits_axis: int) -> fits.Header:
    wcs = WCS(header)
    keep = [i for i in range(1, wcs.naxis + 1) if i != fits_axis]
    new = wcs.sub(keep).to_header()
    for key in ("BUNIT", "BMAJ", "BMIN", "BPA", "NOISE_RMS"):
        if key in header:
            new[key] = header[key]
    return new


def _beam_area(cube: Cube, header: fits.Header) -> float:
    """Beam area in pixels: from BMAJ/BMIN, else from the noise autocorrelation.

    The noise of a dirty image is correlated over the dirty beam, so the autocorrelation of a
    source-free channel has the beam's main lobe; the area above half maximum of a Gaussian
    is ``ln 2`` times its beam area.
    """
    if "BMAJ" in header and "BMIN" in header:
        pix_deg = cube.pixel_scale_arcsec / 3600
        return float(np.pi / (4 * np.log(2)) * header["BMAJ"] * header["BMIN"] / pix_deg**2)
    edge = cube.snr[: max(1, min(4, len(cube.data)))]
    acf = np.zeros(edge.shape[1:])
    for channel in edge:
        f = np.fft.rfft2(channel - channel.mean())
        acf += np.fft.fftshift(np.fft.irfft2(np.abs(f) ** 2, s=channel.shape))
    acf /= acf.max()
    lobe, _ = ndimage.label(acf > 0.5)
    centre = lobe[acf.shape[0] // 2, acf.shape[1] // 2]
    return float(np.sum(lobe == centre) / np.log(2))


def resample(cube: Cube, pixel_scale_arcsec: float, channel_width_hz: float, tolerance: float = 0.05) -> tuple[Cube, tuple[float, float]]:
    """The cube on the given grid (linear interpolation) and the zoom factors ``(fz, fxy)``.

    Returns the cube unchanged (factors 1) when both differ by less than ``tolerance``.
    """
    fxy = cube.pixel_scale_arcsec / pixel_scale_arcsec
    fz = cube.channel_width_hz / channel_width_hz
    fxy = 1.0 if abs(fxy - 1) < tolerance else fxy
    fz = 1.0 if abs(fz - 1) < tolerance else fz
    if fxy == 1.0 and fz == 1.0:
        return cube, (1.0, 1.0)
    data = ndimage.zoom(cube.data, (fz, fxy, fxy), order=1).astype(np.float32)
    blank = ndimage.zoom(cube.blank.astype(np.float32), (fxy, fxy), order=0) > 0.5
    noise = np.interp(np.arange(data.shape[0]) / fz, np.arange(len(cube.noise)), cube.noise)
    # Interpolation smooths the noise: measure it again on the new grid.
    noise = np.maximum(_robust_std(data.reshape(data.shape[0], -1), axis=1), 1e-3 * noise).astype(np.float32)
    wcs = cube.wcs.deepcopy()
    wcs.wcs.cdelt = wcs.wcs.cdelt / np.array([fxy, fxy, fz])
    wcs.wcs.crpix = (wcs.wcs.crpix - 0.5) * np.array([fxy, fxy, fz]) + 0.5
    out = Cube(data, noise, blank, wcs, pixel_scale_arcsec, channel_width_hz, cube.name,
               cube.beam_area_pix * fxy**2)
    return out, (fz, fxy)


# --- inputs of the three networks (shared with mlsky.alma.train) -------------------------


def integrated_image(cube: Cube, channels: slice = slice(None)) -> np.ndarray:
    """Sum of the noise-normalised channels over ``channels``, divided by sqrt(n): unit noise."""
    snr = cube.snr[channels]
    return (snr.sum(axis=0) / np.sqrt(max(len(snr), 1))).astype(np.float32)


def box_spectrum(cube: Cube, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """The dirty spectrum summed over a 2-D box, standardised by its median and robust rms."""
    spec = cube.snr[:, y0:y1, x0:x1].sum(axis=(1, 2)).astype(np.float64)
    scale = _robust_std(spec)
    return ((spec - np.median(spec)) / (scale if scale > 0 else 1.0)).astype(np.float32)


def cutout(image: np.ndarray, x: float, y: float, size: int) -> np.ndarray:
    """A ``size x size`` cutout centred on pixel ``(x, y)``, zero outside the image."""
    out = np.zeros((size, size), np.float32)
    cx, cy = int(round(x)) - size // 2, int(round(y)) - size // 2
    ys, xs = slice(max(cy, 0), min(cy + size, image.shape[0])), slice(max(cx, 0), min(cx + size, image.shape[1]))
    out[ys.start - cy : ys.stop - cy, xs.start - cx : xs.stop - cx] = image[ys, xs]
    return out


def emission_ranges(prob: np.ndarray, threshold: float = 0.5, min_channels: int = 1) -> list[tuple[int, int]]:
    """Runs of channels where ``prob > threshold`` (gaps of one channel closed), as (z0, z1)."""
    on = ndimage.binary_closing(prob > threshold, structure=np.ones(3)) | (prob > threshold)
    labels, n = ndimage.label(on)
    runs = [tuple(int(v) for v in (np.flatnonzero(labels == k)[[0, -1]] + [0, 1])) for k in range(1, n + 1)]
    return [r for r in runs if r[1] - r[0] >= min_channels]


def tiles(size: int, tile: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``size`` with at least a quarter overlap."""
    if size <= tile:
        return [0]
    step = tile * 3 // 4
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def probability_map(model, image: np.ndarray, device=None) -> np.ndarray:
    """Blobs Finder's map for an image of any size: zero-padded or tiled to its input.

    Where tiles overlap, the larger probability is kept.
    """
    import torch

    n = model.input_size
    ny, nx = image.shape
    padded = np.zeros((max(ny, n), max(nx, n)), np.float32)
    padded[:ny, :nx] = image
    out = np.zeros_like(padded)
    patches, where = [], []
    for y0 in tiles(padded.shape[0], n):
        for x0 in tiles(padded.shape[1], n):
            patches.append(padded[y0 : y0 + n, x0 : x0 + n])
            where.append((y0, x0))
    with torch.no_grad():
        probs = model(torch.from_numpy(np.stack(patches)[:, None]).to(device or "cpu")).cpu().numpy()[:, 0]
    for (y0, x0), p in zip(where, probs):
        np.maximum(out[y0 : y0 + n, x0 : x0 + n], p, out=out[y0 : y0 + n, x0 : x0 + n])
    return out[:ny, :nx]


# --- the catalogue ---------------------------------------------------------------------


def finish_catalogue(rows: list[dict], cube: Cube, factors: tuple[float, float] = (1.0, 1.0)) -> Table:
    """Catalogue from source rows measured on a grid zoomed by ``factors`` (spectral, spatial)
    from ``cube``'s: back to the cube's grid, boxes from the estimated shapes (the rule of the
    simulator's truth), sky coordinates from the cube's WCS, units."""
    fz, fxy = factors
    n_chan, ny, nx = cube.data.shape
    cols = {c: [] for c in ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z", "flux", "deblend")}
    for r in rows:
        cols["x"].append(r["x"] / fxy)
        cols["y"].append(r["y"] / fxy)
        cols["z"].append(r["z"] / fz)
        cols["fwhm_x"].append(max(r["fwhm_x"], 0.1) / fxy)
        cols["fwhm_y"].append(max(r["fwhm_y"], 0.1) / fxy)
        cols["pa_deg"].append(r["pa_deg"] % 180.0)
        cols["fwhm_z"].append(max(r["fwhm_z"], 0.1) / fz)
        cols["flux"].append(r["flux"])
        cols["deblend"].append(bool(r.get("deblend", False)))
    table = Table({k: np.asarray(v, dtype=bool if k == "deblend" else float) for k, v in cols.items()})
    for name, size in (("x", nx), ("y", ny), ("z", n_chan)):
        table[name] = np.clip(table[name], 0, size - 1)
    table["peak_jy_per_pix"] = table["flux"] / (2 * np.pi * table["fwhm_x"] * table["fwhm_y"] / FWHM_PER_SIGMA**2)
    table = validate_sources(table, (n_chan, ny, nx))
    ra, dec, freq = cube.wcs.pixel_to_world_values(table["x"], table["y"], table["z"]) if len(table) else ([], [], [])
    table["ra"] = np.asarray(ra, float) * u.deg
    table["dec"] = np.asarray(dec, float) * u.deg
    table["freq"] = (np.asarray(freq, float) * u.Hz).to(u.GHz)
    table["flux"].unit = u.Jy
    for name in ("x", "y", "fwhm_x", "fwhm_y"):
        table[name].unit = u.pix
    table["pa_deg"].unit = u.deg
    table["fwhm_x_arcsec"] = table["fwhm_x"].value * cube.pixel_scale_arcsec * u.arcsec
    table["fwhm_y_arcsec"] = table["fwhm_y"].value * cube.pixel_scale_arcsec * u.arcsec
    table["fwhm_z_MHz"] = (table["fwhm_z"] * cube.channel_width_hz * u.Hz).to(u.MHz)
    table.remove_column("peak_jy_per_pix")
    table.meta["cube"] = cube.name
    return table[[*CATALOGUE_COLUMNS, "fwhm_x_arcsec", "fwhm_y_arcsec", "fwhm_z_MHz"]]


def write_catalogue(table: Table, path: str | os.PathLike) -> Path:
    """Write a catalogue (ECSV, FITS or any astropy format by extension) atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        table.write(tmp, overwrite=True, format="ascii.ecsv" if path.suffix == ".ecsv" else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- the pipeline ----------------------------------------------------------------------


@dataclass
class PipelineConfig:
    """What the three networks were trained on, and the thresholds chosen on validation cubes."""

    input_size: int
    cutout: int
    pixel_scale_arcsec: float
    channel_width_hz: float
    blob_threshold: float = 0.5
    gru_threshold: float = 0.5
    min_blob_pixels: int = 2
    min_channels: int = 1
    window: int = 0
    scale: str = "laptop"
    format: int = PIPELINE_FORMAT

    def write(self, folder: Path) -> None:
        tmp = folder / f".{PIPELINE_FILE}.tmp"
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, folder / PIPELINE_FILE)

    @classmethod
    def read(cls, folder: Path) -> "PipelineConfig":
        path = Path(folder) / PIPELINE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no trained ALMA pipeline in {folder} ({PIPELINE_FILE} missing); "
                "train one with `mlsky alma train --out DIR`"
            )
        raw = json.loads(path.read_text())
        if raw.get("format") != PIPELINE_FORMAT:
            raise ValueError(f"{path} has format {raw.get('format')}, this mlsky reads {PIPELINE_FORMAT}")
        return cls(**raw)


#: The ResNets of the battery: name -> outputs (the angle is regressed as cos/sin of 2 pa).
BATTERY = {"fwhm_x": 1, "fwhm_y": 1, "pa": 2, "flux": 1}


class AlmaSourceFinder:
    """The three-step deep-learning source finder with its trained networks.

    Parameters
    ----------
    weights
        Folder written by :func:`mlsky.alma.train.train_pipeline` (``mlsky alma train``).
    device
        Torch device; default :func:`mlsky.config.get_device`.

    Attributes
    ----------
    config_ : PipelineConfig
    blobs_finder_, deep_gru_ : torch.nn.Module
    battery_ : dict of torch.nn.Module
    target_stats_ : dict
        Mean and std used to standardise each ResNet target.

    Examples
    --------
    >>> finder = AlmaSourceFinder("weights/").load()       # doctest: +SKIP
    >>> catalogue = finder.predict("cube.fits")            # doctest: +SKIP
    """

    def __init__(self, weights: str | os.PathLike, device=None):
        self.weights = weights
        self.device = device

    def load(self) -> "AlmaSourceFinder":
        """Read the configuration and the checkpoints; checks every model's name and version."""
        from mlsky.alma.train import load_checkpoint
        from mlsky.config import get_device

        folder = Path(self.weights)
        self.device_ = self.device or get_device()
        self.config_ = PipelineConfig.read(folder)
        self.blobs_finder_, _ = load_checkpoint(folder / "blobs_finder.pt", "blobs_finder", self.device_)
        self.deep_gru_, _ = load_checkpoint(folder / "deep_gru.pt", "deep_gru", self.device_)
        self.battery_, self.target_stats_ = {}, {}
        for name in BATTERY:
            self.battery_[name], extra = load_checkpoint(folder / f"resnet_{name}.pt", "resnet18", self.device_)
            self.target_stats_[name] = extra["target_stats"]
        return self

    def probability(self, cube: Cube, window: int | None = None) -> np.ndarray:
        """Blobs Finder's source probability map of a cube (zero on blanked pixels).

        With ``window`` (default: the configuration's) > 0, Blobs Finder also reads images
        integrated over windows of that many channels (overlapping by a quarter), and the map keeps the
        largest probability: a narrow line summed over the whole band is diluted by its empty
        channels, and a window gives it back its contrast. ``window=0`` is the paper's
        full-band integration only.
        """
        window = self.config_.window if window is None else window
        n_chan = cube.data.shape[0]
        bands = [slice(None)]
        if 0 < window < n_chan:
            bands += [slice(z, z + window) for z in tiles(n_chan, window)]
        images = [integrated_image(cube, band) for band in bands]
        prob = np.max([probability_map(self.blobs_finder_, image, self.device_) for image in images], axis=0)
        prob[cube.blank] = 0.0
        return prob

    def boxes(self, prob: np.ndarray, threshold: float | None = None) -> list[tuple[int, int, int, int, float, float]]:
        """Connected regions of the map above the threshold: ``(x0, x1, y0, y1, x, y)``, the
        centre weighted by the probability."""
        threshold = self.config_.blob_threshold if threshold is None else threshold
        labels, _ = ndimage.label(prob > threshold)
        found = []
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[sl] == k
            if mask.sum() < self.config_.min_blob_pixels:
                continue
            w = prob[sl] * mask
            yy, xx = np.mgrid[sl]
            cy, cx = float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum())
            found.append((sl[1].start, sl[1].stop, sl[0].start, sl[0].stop, cx, cy))
        return found

    def focus(self, cube: Cube, box) -> tuple[np.ndarray, np.ndarray]:
        """Deep GRU on a box's spectrum: the standardised spectrum and each channel's
        probability of emission."""
        import torch

        spec = box_spectrum(cube, *box[:4])
        with torch.no_grad():
            prob = self.deep_gru_(torch.from_numpy(spec[None]).to(self.device_)).cpu().numpy()[0]
        return spec, prob

    def characterise(self, cube: Cube, detections: list[tuple[float, float, int, int]]) -> list[dict[str, float]]:
        """The ResNet battery on cutouts at ``(x, y)`` integrated over channels ``[z0, z1)``."""
        import torch

        if not detections:
            return []
        batch = torch.from_numpy(np.stack([battery_input(cube, *d, self.config_.cutout) for d in detections])[:, None])
        out = {}
        with torch.no_grad():
            for name, net in self.battery_.items():
                mean, std = (np.asarray(v) for v in self.target_stats_[name])
                out[name] = net(batch.to(self.device_)).cpu().numpy() * std + mean
        params = []
        for i, (_, _, z0, z1) in enumerate(detections):
            ref = float(np.median(cube.noise[z0:z1]))
            params.append({
                "fwhm_x": float(out["fwhm_x"][i, 0]),
                "fwhm_y": float(out["fwhm_y"][i, 0]),
                "pa_deg": float(np.degrees(0.5 * np.arctan2(out["pa"][i, 1], out["pa"][i, 0]))),
                "flux": float(10 ** out["flux"][i, 0] * ref),
            })
        return params

    def detections(self, box, spec: np.ndarray, gru_prob: np.ndarray, threshold: float | None = None) -> list[dict]:
        """One detection per emission range of a box: position, channel centre, range, deblend flag."""
        threshold = self.config_.gru_threshold if threshold is None else threshold
        ranges = emission_ranges(gru_prob, threshold, self.config_.min_channels)
        rows = []
        for z0, z1 in ranges:
            weights = np.clip(spec[z0:z1], 0, None) + 1e-6
            z = float((np.arange(z0, z1) * weights).sum() / weights.sum())
            rows.append(dict(x=box[4], y=box[5], z=z, z0=z0, z1=z1, fwhm_z=fwhm_z_from_range(z0, z1),
                             deblend=len(ranges) > 1))
        return rows

    def predict(self, cube: Any) -> Table:
        """The catalogue of the sources in a cube (path, HDU, SimulatedCube or Cube)."""
        if not hasattr(self, "config_"):
            self.load()
        original = cube if isinstance(cube, Cube) else as_cube(cube)
        work, factors = resample(original, self.config_.pixel_scale_arcsec, self.config_.channel_width_hz)
        rows = []
        for box in self.boxes(self.probability(work)):
            rows += self.detections(box, *self.focus(work, box))
        params = self.characterise(work, [(r["x"], r["y"], r["z0"], r["z1"]) for r in rows])
        return finish_catalogue([{**r, **p} for r, p in zip(rows, params)], original, factors)


def fwhm_z_from_range(z0: int, z1: int) -> float:
    """Line FWHM (channels) of an emission range taken as the truth's box, +-3 sigma."""
    return max(z1 - z0 - 1, 1) * FWHM_PER_SIGMA / 6.0


def battery_input(cube: Cube, x: float, y: float, z0: int, z1: int, size: int) -> np.ndarray:
    """The ResNets' input: the noise-normalised sum over ``[z0, z1)`` around ``(x, y)``, / 10.

    A plain sum (not a mean) keeps the flux in the image; dividing by 10 keeps typical
    values of order one.
    """
    image = cube.snr[z0:z1].sum(axis=0)
    return cutout(image, x, y, size) / 10.0


def detect(cube: Any, weights: str | os.PathLike | None = None, device=None) -> Table:
    """Find and characterise the sources of a dirty cube with the trained pipeline.

    Parameters
    ----------
    cube
        A FITS path, an HDU, a :class:`~mlsky.alma.simulate.SimulatedCube`, ``(data, header)``
        or a :class:`Cube`.
    weights
        Folder of trained networks (``mlsky alma train --out DIR``). Default: the folder for
        the current scale in the mlsky cache, where ``mlsky alma train`` writes without
        ``--out``.

    Returns
    -------
    astropy.table.Table
        One row per source: pixel position ``x, y, z``, sky position ``ra, dec``, ``freq``,
        3-D box ``x0..z1``, ``fwhm_x, fwhm_y`` (pix and arcsec), ``pa_deg``, ``fwhm_z``
        (channels and kHz), ``flux`` (Jy, at the line peak) and ``deblend``.
    """
    from mlsky.alma.train import default_weights_dir

    return AlmaSourceFinder(weights or default_weights_dir(), device).load().predict(cube)
