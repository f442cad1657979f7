"""Augmentations that a galaxy allows, on batches of tensors.

A galaxy has no preferred orientation, handedness or exact centre on the sky, and the same
galaxy could be seen through other seeing, at another depth or further away. Each view is
therefore drawn with an arbitrary rotation, a mirror flip half the time, a small shift, a mild
change of scale, a Gaussian PSF blur, dimming (every band alike) and Gaussian noise. The hue is
never changed: a galaxy's colour is information about its stars, not a nuisance.

:func:`galaxy_views` samples a field larger than the stamp (so that rotated corners hold sky,
not padding) and returns stamps of ``size`` pixels whose pixel scale is that of the input's
central ``1 / field`` part.

Reddening stands in for what changes a galaxy's colours without changing its kind (dust along
the line of sight, calibration): every band is dimmed by ``10**(-0.4 * R * E)`` with the SDSS
extinction coefficients ``R`` of the bands shown as red, green and blue (i, r, g; Schlafly &
Finkbeiner 2011) and a colour excess ``E`` drawn up to :attr:`Augmentation.redden`, applied to
the stretched image as an approximation. It keeps a view's colours close to the galaxy's, so
that colour still tells galaxies apart, but not so exact that the colours alone match two views.

Examples
--------
>>> import torch
>>> from mlsky.ulisse.sky.augment import Augmentation, galaxy_views
>>> fields = torch.rand(4, 3, 96, 96)
>>> views = galaxy_views(fields, Augmentation(), size=64, field=1.5, generator=torch.Generator().manual_seed(0))
>>> views.shape, bool(views.min() >= 0), bool(views.max() <= 1)
(torch.Size([4, 3, 64, 64]), True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


#: Extinction A_band / E(B-V) of the SDSS bands shown as red, green and blue (i, r, g) in the
#: Galaxy Zoo gri colour images (Schlafly & Finkbeiner 2011, table 6, R_V = 3.1).
EXTINCTION = (1.698, 2.285, 3.303)


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random changes of one view.

    Attributes
    ----------
    shift
        Largest shift, as a fraction of the stamp's half-side.
    scale
        Largest relative change of size (log-uniform in ``[1/(1+scale), 1+scale]``).
    blur
        Largest extra PSF sigma, in output pixels (uniform from 0).
    dim
        Smallest brightness factor (uniform in ``[dim, 1]``, the same in every band).
    redden
        Largest colour excess E(B-V) of the reddening (uniform from 0), in magnitudes.
    noise
        Largest standard deviation of the added Gaussian noise (uniform from 0), in [0, 1] units.
    """

    shift: float = 0.08
    scale: float = 0.2
    blur: float = 1.5
    dim: float = 0.6
    noise: float = 0.03
    redden: float = 0.1


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of an NCHW batch with its own Gaussian of ``sigma`` pixels (0: unchanged).

    Separable convolution with reflected edges, all images at once as one grouped convolution.
    """
    n, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / s) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, taps)
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def galaxy_views(fields: torch.Tensor, augmentation: Augmentation, *, size: int, field: float,
                 generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: rotated, flipped, shifted, rescaled, blurred, reddened, dimmed, noisy.

    Parameters
    ----------
    fields
        (N, 3, H, W) float batch in [0, 1] (or uint8, read as /255): each a field ``field``
        times as wide as the stamp, centred on the galaxy.
    size
        Side of the returned stamps, in pixels.
    field
        Side of an input field in units of the stamp's side (> 1 leaves sky for the corners
        of a rotated stamp).
    generator
        The source of randomness (same seed, same views).

    Returns
    -------
    torch.Tensor
        (N, 3, size, size) float32 in [0, 1].
    """
    if fields.dtype == torch.uint8:
        fields = fields.float() / 255.0
    n = len(fields)
    a = augmentation
    angle = _uniform(n, 0.0, 2 * math.pi, generator)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    zoom = torch.exp(_uniform(n, -math.log1p(a.scale), math.log1p(a.scale), generator))
    shift = _uniform(2 * n, -a.shift, a.shift, generator).view(n, 2) / field
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output coordinates (normalised to [-1, 1] over the stamp) -> input field coordinates.
    k = zoom / field
    theta = torch.stack([torch.stack([k * cos * mirror, -k * sin, shift[:, 0]], dim=1),
                         torch.stack([k * sin * mirror, k * cos, shift[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    # Bilinear sampling of a field finer than the output would alias: smooth to the output's pixel first.
    step = fields.shape[-1] / (size * field)  # input pixels per output pixel
    if step > 1.2:
        fields = gaussian_blur(fields, torch.full((n,), 0.5 * math.sqrt(step**2 - 1)))
    views = F.grid_sample(fields, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    views = gaussian_blur(views, _uniform(n, 0.0, a.blur, generator))
    excess = _uniform(n, 0.0, a.redden, generator).view(n, 1, 1, 1)
    reddening = 10 ** (-0.4 * torch.tensor(EXTINCTION).view(1, 3, 1, 1) * excess)
    views = views * reddening * _uniform(n, a.dim, 1.0, generator).view(n, 1, 1, 1)
    noise = torch.randn(views.shape, generator=generator) * _uniform(n, 0.0, a.noise, generator).view(n, 1, 1, 1)
    return (views + noise).clamp_(0.0, 1.0)
