"""Earth-rotation synthesis, imaging weights, the dirty beam and the thermal noise level.

The sky brightness ``I(l, m)`` and the visibilities ``V(u, v)`` of an interferometer are a
Fourier pair. A baseline between two antennas sweeps an ellipse in the ``(u, v)`` plane as
the Earth turns; each channel sees the same baselines in metres, but in wavelengths they
scale with frequency, so the dirty beam shrinks across the band.

Imaging here is the standard gridded route of CASA's ``tclean`` with ``niter=0``: each
visibility is put on the cell of the ``(u, v)`` grid that the image's pixel size and size
define (nearest cell), weighted naturally or by Briggs' robust scheme, and Fourier
transformed. The dirty image of a sky is then the sky convolved with the dirty beam, which
this module computes exactly as ``IFFT(W * FFT(sky))`` with ``W`` the gridded weights.

Examples
--------
>>> from mlsky.alma.sim.uv import ObservationConfig, dirty_beam
>>> beam = dirty_beam(ObservationConfig(), shape=(128, 128))
>>> float(beam.max())
1.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np
from astropy import constants as const

from mlsky.alma.sim.antenna import load_antenna_config

#: Latitude of the ALMA site (Chajnantor), degrees; CASA's observatory table.
ALMA_LATITUDE_DEG = -23.022886
#: Earth's rotation in hour angle per second of time (sidereal rate), radians.
SIDEREAL_RATE = 2 * np.pi / 86164.0905
C = const.c.value
K_B = const.k_B.value
ARCSEC = np.pi / 180 / 3600


@dataclass(frozen=True)
class ObservationConfig:
    """How the sky is observed and imaged (defaults: the CASA reference set-up).

    Parameters
    ----------
    antenna_config
        A casadata configuration name or a ``.cfg`` path (see
        :func:`mlsky.alma.sim.antenna.load_antenna_config`).
    dec_deg
        Declination of the phase centre (degrees).
    ra_deg
        Right ascension of the phase centre (degrees; only written to the FITS header).
    ha_start_s, duration_s, integration_s
        Hour angle at the start of the track (seconds of time; ``None``: centred on transit),
        total time on source and integration time (seconds).
    freq_hz, channel_width_hz
        Frequency of the centre channel (channel ``n_chan // 2``) and channel width (Hz).
    cell_arcsec
        Pixel size (arcsec).
    weighting, robust
        ``"natural"`` or ``"briggs"`` (with Briggs' ``robust``, as in CASA).
    pwv_mm, tsys_k
        Precipitable water vapour, used to compute the system temperature channel by
        channel (:func:`system_temperature`), or ``tsys_k`` that overrides it: one value,
        or a tuple with one value per channel (e.g. near an atmospheric line).
    noise
        Whether to add thermal noise.
    primary_beam
        Whether the sky is attenuated by the antennas' primary beam (as in ``simobserve``;
        the clean target stays the unattenuated sky).
    latitude_deg
        Latitude of the array.

    Examples
    --------
    >>> cfg = ObservationConfig(dec_deg=-45.0, duration_s=1200.0)
    >>> cfg.n_times
    120
    """

    antenna_config: str = "alma.cycle9.3.cfg"
    dec_deg: float = -30.0
    ra_deg: float = 180.0
    ha_start_s: float | None = None
    duration_s: float = 2400.0
    integration_s: float = 10.0
    freq_hz: float = 230e9
    channel_width_hz: float = 10e6
    cell_arcsec: float = 0.1
    weighting: str = "briggs"
    robust: float = 0.5
    pwv_mm: float = 0.8
    tsys_k: float | tuple[float, ...] | None = None
    noise: bool = True
    primary_beam: bool = True
    latitude_deg: float = ALMA_LATITUDE_DEG

    def __post_init__(self) -> None:
        if self.tsys_k is not None and np.ndim(self.tsys_k):
            # A tuple keeps the set-up hashable (gridded weights are cached per set-up).
            object.__setattr__(self, "tsys_k", tuple(float(t) for t in np.ravel(self.tsys_k)))
        checks = {
            "dec_deg": -90 <= self.dec_deg <= 90,
            "duration_s": self.duration_s > 0,
            "integration_s": 0 < self.integration_s <= self.duration_s,
            "freq_hz": 1e9 <= self.freq_hz <= 2e12,
            "channel_width_hz": self.channel_width_hz > 0,
            "cell_arcsec": self.cell_arcsec > 0,
            "robust": -2 <= self.robust <= 2,
            "pwv_mm": self.pwv_mm >= 0,
            "tsys_k": self.tsys_k is None or bool(np.all(np.asarray(self.tsys_k, dtype=float) > 0)),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "ObservationConfig: out of range: " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            )
        if self.weighting not in ("natural", "briggs"):
            raise ValueError(f"ObservationConfig: weighting must be 'natural' or 'briggs', not {self.weighting!r}")

    @property
    def n_times(self) -> int:
        """Number of integrations."""
        return int(round(self.duration_s / self.integration_s))

    def hour_angles(self) -> np.ndarray:
        """Hour angle (radians) at the middle of each integration."""
        start = -self.duration_s / 2 if self.ha_start_s is None else self.ha_start_s
        t = start + (np.arange(self.n_times) + 0.5) * self.integration_s
        return t * SIDEREAL_RATE

    def frequencies(self, n_chan: int) -> np.ndarray:
        """Centre frequency (Hz) of each of ``n_chan`` channels; channel ``n_chan // 2`` is ``freq_hz``."""
        return self.freq_hz + (np.arange(n_chan) - n_chan // 2) * self.channel_width_hz

    def replace(self, **changes) -> ObservationConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a plain dict (for manifests and FITS headers)."""
        return asdict(self)


def _enu_to_xyz(enu: np.ndarray, latitude: float) -> np.ndarray:
    # Local east-north-up to equatorial (X towards HA=0, Y towards HA=-6h, Z to the pole).
    e, n, up = enu.T
    sl, cl = np.sin(latitude), np.cos(latitude)
    return np.stack([-sl * n + cl * up, e, cl * n + sl * up], axis=1)


def baselines(config: ObservationConfig) -> np.ndarray:
    """Baseline vectors (metres, equatorial X, Y, Z) of every antenna pair, shape (n_base, 3)."""
    ants = load_antenna_config(config.antenna_config)
    enu = np.stack([ants["x"].value, ants["y"].value, ants["z"].value], axis=1)
    xyz = _enu_to_xyz(enu, np.radians(config.latitude_deg))
    i, j = np.triu_indices(len(xyz), k=1)
    return xyz[j] - xyz[i]


def elevation(config: ObservationConfig) -> np.ndarray:
    """Elevation of the phase centre (degrees) at each integration."""
    lat, dec, ha = np.radians(config.latitude_deg), np.radians(config.dec_deg), config.hour_angles()
    return np.degrees(np.arcsin(np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(ha)))


def uv_coverage(config: ObservationConfig | None = None, freq_hz: float | None = None) -> np.ndarray:
    """The (u, v, w) of every baseline at every integration by Earth-rotation synthesis.

    Parameters
    ----------
    config
        The observation (default :class:`ObservationConfig`).
    freq_hz
        If given, return wavelengths at this frequency; otherwise metres.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_times * n_baselines, 3)``; one half of the Hermitian pairs.

    Raises
    ------
    ValueError
        If the source is below the horizon during the track.

    Examples
    --------
    >>> uvw = uv_coverage(ObservationConfig(duration_s=600.0))
    >>> uvw.shape
    (54180, 3)
    """
    config = config or ObservationConfig()
    el = elevation(config)
    if el.min() <= 0:
        raise ValueError(
            f"the source at dec {config.dec_deg} deg is below the horizon (elevation {el.min():.1f} deg) "
            f"during the track; choose another declination or hour-angle range"
        )
    bx, by, bz = baselines(config).T
    ha = config.hour_angles()[:, None]
    dec = np.radians(config.dec_deg)
    sh, ch, sd, cd = np.sin(ha), np.cos(ha), np.sin(dec), np.cos(dec)
    u = sh * bx + ch * by
    v = -sd * ch * bx + sd * sh * by + cd * bz
    w = cd * ch * bx - cd * sh * by + sd * bz
    uvw = np.stack([u.ravel(), v.ravel(), w.ravel()], axis=1)
    return uvw * (freq_hz / C) if freq_hz is not None else uvw


def _grid_index(uv_lambda: np.ndarray, shape: tuple[int, int], cell_rad: float) -> np.ndarray:
    """Flat index on the full (ny, nx) FFT grid of each (u, v) point, nearest cell.

    The image's x axis runs towards the west (RA decreasing), so u (east) maps to -kx.
    """
    ny, nx = shape
    kx = np.rint(-uv_lambda[:, 0] * nx * cell_rad).astype(np.int64)
    ky = np.rint(uv_lambda[:, 1] * ny * cell_rad).astype(np.int64)
    if np.abs(kx).max() >= nx // 2 or np.abs(ky).max() >= ny // 2:
        raise ValueError(
            f"the longest baselines fall outside the uv grid: pixels of {cell_rad / ARCSEC:g} arcsec "
            f"do not sample the beam; use smaller pixels"
        )
    return (ky % ny) * nx + (kx % nx)


def imaging_weights(uv_lambda: np.ndarray, shape: tuple[int, int], config: ObservationConfig):
    """Gridded imaging weights of one channel: Σw and Σw² per uv cell (full plane, both Hermitian halves).

    Briggs weighting follows CASA: ``w_k = 1 / (1 + W_k f²)`` with ``W_k`` the natural
    weight density of the cell of visibility ``k`` and
    ``f² = (5 · 10^-robust)² / (Σ_cells W² / Σ_k 1)``.

    Returns
    -------
    sum_w, sum_w2 : numpy.ndarray
        Shape ``(ny, nx)``, normalised so that ``sum_w.sum() == 1`` (the dirty beam peaks at 1);
        ``sum_w2`` in the same normalisation.
    """
    ny, nx = shape
    idx = np.concatenate([_grid_index(uv_lambda, shape, np.radians(config.cell_arcsec / 3600)),
                          _grid_index(-uv_lambda, shape, np.radians(config.cell_arcsec / 3600))])
    density = np.bincount(idx, minlength=ny * nx).astype(np.float64)
    if config.weighting == "briggs":
        f2 = (5 * 10 ** (-config.robust)) ** 2 / ((density**2).sum() / len(idx))
        w = 1.0 / (1.0 + density[idx] * f2)
    else:
        w = np.ones(len(idx))
    sum_w = np.bincount(idx, weights=w, minlength=ny * nx)
    sum_w2 = np.bincount(idx, weights=w * w, minlength=ny * nx)
    total = sum_w.sum()
    return (sum_w / total).reshape(shape), (sum_w2 / total**2).reshape(shape)


@dataclass(frozen=True)
class ChannelWeights:
    """Gridded weights of every channel on the half plane of a real FFT, shape ``(n_chan, ny, nx // 2 + 1)``.

    Attributes
    ----------
    w
        Σw per uv cell, normalised to sum 1 over the full plane: the dirty image is
        ``irfft2(w * rfft2(sky)) * ny * nx``.
    noise_std
        Standard deviation, per unit visibility noise, of the real and of the imaginary part
        of the gridded noise of each cell (sqrt Σw²), ready to scale complex white noise.
    rms_per_sigma
        Image noise rms per unit visibility noise, per channel:
        ``sqrt(Σ_k w_k²) / Σ_k w_k`` over the distinct visibilities.
    """

    w: np.ndarray
    noise_std: np.ndarray
    rms_per_sigma: np.ndarray


@lru_cache(maxsize=4)
def channel_weights(config: ObservationConfig, shape: tuple[int, int, int]) -> ChannelWeights:
    """The :class:`ChannelWeights` of a set-up and cube shape (cached: a data set reuses them)."""
    n_chan, ny, nx = shape
    uvw = uv_coverage(config)
    half = nx // 2 + 1
    w = np.empty((n_chan, ny, half), np.float32)
    w2 = np.empty((n_chan, ny, half), np.float64)
    for c, f in enumerate(config.frequencies(n_chan)):
        sw, sw2 = imaging_weights(uvw[:, :2] * (f / C), (ny, nx), config)
        w[c], w2[c] = sw[:, :half], sw2[:, :half]
    # The gridded weights count each visibility twice (u and -u) and sum to 1, so
    # Σ_k w_k² / (Σ_k w_k)² over the distinct visibilities is twice their full-plane Σw².
    edges = w2[:, :, 0].sum(axis=1) + (w2[:, :, -1].sum(axis=1) if nx % 2 == 0 else 0)
    rms = np.sqrt(2 * (2 * w2.sum(axis=(1, 2)) - edges))
    std = np.sqrt(w2)
    # The real inverse FFT Hermitian-symmetrises the kx = 0 and Nyquist columns, which halves
    # the variance of independent draws there; restore it.
    std[:, :, 0] *= np.sqrt(2)
    if nx % 2 == 0:
        std[:, :, -1] *= np.sqrt(2)
    return ChannelWeights(w, std.astype(np.float32), rms)


def dirty_beam(config: ObservationConfig | None = None, shape: tuple[int, int] = (128, 128),
               freq_hz: float | None = None) -> np.ndarray:
    """The dirty beam (point spread function) at one frequency, peak 1 at pixel (ny//2, nx//2).

    Parameters
    ----------
    config
        The observation (default :class:`ObservationConfig`).
    shape
        Image shape ``(ny, nx)``.
    freq_hz
        Frequency (default ``config.freq_hz``).

    Examples
    --------
    >>> beam = dirty_beam(shape=(64, 64))
    >>> beam.shape, float(beam[32, 32])
    ((64, 64), 1.0)
    """
    config = config or ObservationConfig()
    freq = config.freq_hz if freq_hz is None else float(freq_hz)
    return _dirty_beam(config, tuple(int(n) for n in shape), freq).copy()


@lru_cache(maxsize=8)
def _dirty_beam(config: ObservationConfig, shape: tuple[int, int], freq_hz: float) -> np.ndarray:
    sw, _ = imaging_weights(uv_coverage(config, freq_hz)[:, :2], shape, config)
    beam = np.fft.fftshift(np.fft.ifft2(sw).real) * (shape[0] * shape[1])
    return (beam / beam.max()).astype(np.float32)


# The thermal noise follows CASA's simulator (``sm.setnoise(mode="tsys-atm")`` as called by
# ``simobserve``): the efficiencies and receiver temperatures of ``simutil.noisetemp`` and the
# system temperature and per-visibility noise of ``AtmosCorruptor``. Only the atmosphere is
# simpler here: a band-6 opacity law instead of the ATM library.

#: ALMA receiver temperatures (K) of CASA's ``simutil.noisetemp``: band lower limits (GHz) and T_rx.
ALMA_RX_LIMITS_GHZ = (31.3, 45, 84, 116, 163, 211, 275, 373, 500, 720)
ALMA_RX_TEMPERATURE_K = (17, 30, 45, 51, 65, 55, 75, 196, 100, 230)
#: Efficiencies of a 12 m ALMA antenna in CASA: spill-over, taper, surface rms (m),
#: subreflector diameter (m), and the correlator efficiency (quantisation included).
SPILLOVER_EFFICIENCY = 0.95
TAPER_EFFICIENCY = 0.72
SURFACE_RMS_M = 25e-6
SUBREFLECTOR_DIAMETER_M = 0.75
CORRELATOR_EFFICIENCY = 0.845
T_GROUND_K = 270.0
T_CMB_K = 2.725
#: Mean physical temperature of the emitting (wet) atmosphere above Chajnantor.
T_ATMOSPHERE_K = 260.0
H_OVER_K = const.h.value / K_B


def receiver_temperature(freq_hz: float) -> float:
    """ALMA receiver temperature (K) at ``freq_hz``: the value of the band it falls in (CASA's table)."""
    limits = np.asarray(ALMA_RX_LIMITS_GHZ) * 1e9
    band = max(int(np.searchsorted(limits, freq_hz)) - 1, 0)
    return float(ALMA_RX_TEMPERATURE_K[band])


def antenna_efficiency(freq_hz: float, diameter_m: float) -> float:
    """Aperture efficiency: Ruze surface loss x spill-over x blockage x taper (CASA's ALMA values)."""
    ruze = np.exp(-((4 * np.pi * SURFACE_RMS_M * freq_hz / C) ** 2))
    blockage = 1 - (SUBREFLECTOR_DIAMETER_M / diameter_m) ** 2
    return float(ruze * SPILLOVER_EFFICIENCY * blockage * TAPER_EFFICIENCY)


def zenith_opacity(freq_hz: float, pwv_mm: float) -> float:
    """Zenith opacity in ALMA band 6 from the precipitable water vapour.

    The linear relation ``tau = 0.004 + 0.058 pwv`` measured at 225 GHz with tipping
    radiometers; outside band 6 (211-275 GHz) it does not hold, so pass ``tsys_k`` to
    :class:`ObservationConfig` instead.
    """
    if not 200e9 <= freq_hz <= 280e9:
        raise ValueError(
            f"the opacity model covers ALMA band 6 (211-275 GHz), not {freq_hz / 1e9:.1f} GHz; "
            "give ObservationConfig(tsys_k=...) for other bands"
        )
    return 0.004 + 0.058 * pwv_mm


def _occupation(t_k: float, freq_hz: float) -> float:
    return 1.0 / np.expm1(H_OVER_K * freq_hz / t_k)


def system_temperature(freq_hz: float, pwv_mm: float, elevation_deg: float) -> float:
    """System temperature referred to the top of the atmosphere (K), as CASA's ``AtmosCorruptor``.

    In Planck occupation numbers ``R(T) = 1 / (exp(h nu / k T) - 1)``:
    ``R_sys = R(T_cmb) + e^tau [R(T_sky) + R(T_rx)]`` with the sky seen through the spill-over,
    ``T_sky = eta_s T_atm (1 - e^-tau) + (1 - eta_s) T_ground``, and ``tau`` the line-of-sight
    opacity; ``Tsys = h nu / k / ln(1 + 1 / R_sys)``.
    """
    tau = zenith_opacity(freq_hz, pwv_mm) / np.sin(np.radians(elevation_deg))
    t_sky = SPILLOVER_EFFICIENCY * T_ATMOSPHERE_K * -np.expm1(-tau) + (1 - SPILLOVER_EFFICIENCY) * T_GROUND_K
    r = _occupation(T_CMB_K, freq_hz) + np.exp(tau) * (
        _occupation(t_sky, freq_hz) + _occupation(receiver_temperature(freq_hz), freq_hz)
    )
    return float(H_OVER_K * freq_hz / np.log1p(1 / r))


def visibility_noise(config: ObservationConfig, freq_hz: np.ndarray) -> np.ndarray:
    """Thermal noise (Jy) on the real and on the imaginary part of one Stokes I visibility.

    CASA's per-correlation noise ``sigma = 4 sqrt(2) k Tsys / (eta_a eta_q pi D² sqrt(dnu dt))``
    (the radiometer equation), divided by sqrt(2) because Stokes I averages the two
    polarisations. ``Tsys`` comes from :func:`system_temperature` at the mean elevation of
    the track, channel by channel, unless ``config.tsys_k`` fixes it.
    """
    ants = load_antenna_config(config.antenna_config)
    diameter = float(np.mean(ants["diam"].value))
    freq_hz = np.atleast_1d(np.asarray(freq_hz, dtype=float))
    if config.tsys_k is not None:
        tsys = np.asarray(config.tsys_k, dtype=float)
        if tsys.ndim and tsys.shape != freq_hz.shape:
            raise ValueError(f"tsys_k has {tsys.size} values for {freq_hz.size} channels; give one, or one per channel")
        tsys = np.broadcast_to(tsys, freq_hz.shape)
    else:
        el = float(np.mean(elevation(config)))
        tsys = np.array([system_temperature(f, config.pwv_mm, el) for f in freq_hz])
    eta = np.array([antenna_efficiency(f, diameter) for f in freq_hz]) * CORRELATOR_EFFICIENCY
    sigma_corr = 4 * np.sqrt(2) * K_B * tsys / (eta * np.pi * diameter**2) / np.sqrt(
        config.channel_width_hz * config.integration_s) * 1e26
    return sigma_corr / np.sqrt(2)


#: CASA models the 12 m ALMA antennas' primary beam as a blocked Airy pattern of an
#: effective 10.7 m aperture with a 0.75 m subreflector (``PBMath``).
ALMA_EFFECTIVE_DIAMETER_RATIO = 10.7 / 12.0


def primary_beam(config: ObservationConfig, shape: tuple[int, int], freq_hz: float) -> np.ndarray:
    """Primary beam (power) of the antennas at ``freq_hz``, peak 1 at pixel (ny//2, nx//2).

    A blocked Airy pattern as in CASA: effective aperture ``0.892 D`` (10.7 m for ALMA's 12 m
    antennas) with a 0.75 m central blockage; its FWHM is about 1.14 lambda / D.
    """
    from scipy.special import j1

    ants = load_antenna_config(config.antenna_config)
    aperture = float(np.mean(ants["diam"].value)) * ALMA_EFFECTIVE_DIAMETER_RATIO
    eps = SUBREFLECTOR_DIAMETER_M / aperture
    ny, nx = shape
    y, x = np.ogrid[:ny, :nx]
    r = np.hypot(x - nx // 2, y - ny // 2) * config.cell_arcsec * ARCSEC
    u = np.pi * aperture * r * freq_hz / C
    u = np.where(u == 0, 1e-12, u)
    voltage = (2 * j1(u) / u - eps**2 * 2 * j1(eps * u) / (eps * u)) / (1 - eps**2)
    return voltage**2
