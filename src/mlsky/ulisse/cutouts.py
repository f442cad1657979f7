"""Reading galaxy cutouts and preparing the network's input: crop, align, resize.

ULISSE cuts a stamp around the object and resizes it to 224 x 224. Here the stamp can be a
fixed central crop (as the paper) or sized from the object itself: :func:`measure_object`
segments the central source and takes its flux-weighted second moments, giving a radius and
the position angle of the major axis. Galaxies have no preferred orientation on the sky, so
the stamp can also be rotated to put the major axis along x and flipped so that the light's
third moments are positive — one canonical pose per galaxy, at no extra network cost.

Examples
--------
>>> import numpy as np
>>> from mlsky.ulisse.cutouts import cutout
>>> image = np.zeros((423, 423, 3), np.uint8); image[200:224, 190:234] = 255
>>> cutout(image, crop="measured", align=True).shape
(224, 224, 3)
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.stats import mad_std
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp")
CROPS = ("centre", "measured")
INPUT_SIZE = 224


class ImageReadError(ValueError):
    """An image file cannot be read as a picture (missing, truncated, not an image)."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (see :func:`decode_image`).

    Raises
    ------
    ImageReadError
        Naming the file, when it is missing, truncated, not an image, floating-point, or over
        Pillow's size limit.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be read ({type(err).__name__}: {err}).") from err
    return decode_image(content, path)


def decode_image(content: bytes, name: str | Path) -> np.ndarray:
    """Decode the bytes of an image file as an (H, W, 3) uint8 RGB array.

    Grey-scale is copied to 3 channels. 16-bit images are mapped linearly from their full range
    (0-65535) to 0-255, as Pillow does for 16-bit colour PNGs. Floating-point and 32-bit
    integer images are refused: their values have no fixed range, and the stretch that turns
    them into a picture (e.g. ``astropy.visualization.make_lupton_rgb``) is the user's choice.

    Raises
    ------
    ImageReadError
        Naming ``name``, when the bytes are truncated, not an image, of an unsupported mode, or
        over Pillow's ``Image.MAX_IMAGE_PIXELS`` (a decompression-bomb guard).
    """
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; both are refused alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as img:
                img.load()  # decodes fully, so a truncated file fails here and not later
                if img.mode in ("F", "I"):
                    raise ImageReadError(
                        f"{name}: {'floating-point' if img.mode == 'F' else '32-bit integer'} image (mode {img.mode}) "
                        "has no fixed range; stretch it to an 8-bit RGB or grey image first (e.g. with "
                        "astropy.visualization.make_lupton_rgb).")
                if img.mode.startswith("I;16"):
                    grey = np.asarray(img).astype(np.float32) * (255 / 65535)
                    array = np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=2)
                else:
                    array = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        if isinstance(err, ImageReadError):
            raise
        raise ImageReadError(f"{name}: not a readable image ({type(err).__name__}: {err}).") from err
    if min(array.shape[:2]) < 8:
        raise ImageReadError(f"{name}: image of {array.shape[1]}x{array.shape[0]} px is too small for a cutout.")
    return array


@dataclass(frozen=True)
class ObjectShape:
    """Centre (x, y) in pixels, radius (pixels; sqrt of the larger second moment), major-axis
    angle from +x (radians), and the flips that make the third moments positive."""

    x: float
    y: float
    radius: float
    angle: float
    flip_x: bool
    flip_y: bool


def measure_object(image: np.ndarray, *, nsigma: float = 3.0, smooth: float = 1.5) -> ObjectShape:
    """Segment the source nearest the image centre and measure its moments.

    The background level and noise come from the image border (median and MAD); pixels of
    the smoothed image more than ``nsigma`` noise above it form segments, and the segment
    that holds (or lies nearest) the centre is the object.
    """
    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    h, w = grey.shape
    border = np.concatenate([grey[:8].ravel(), grey[-8:].ravel(), grey[:, :8].ravel(), grey[:, -8:].ravel()])
    level = float(np.median(border))
    noise = max(float(mad_std(border)), 1.0)  # JPEG floors the noise at ~1 ADU
    smoothed = ndimage.gaussian_filter(grey, smooth)
    labels, count = ndimage.label(smoothed > level + nsigma * noise)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if count == 0:
        return ObjectShape(cx, cy, min(h, w) / 8, 0.0, False, False)
    label = labels[int(round(cy)), int(round(cx))]
    if label == 0:
        ys, xs = np.nonzero(labels)
        nearest = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
        label = labels[ys[nearest], xs[nearest]]
    ys, xs = np.nonzero(labels == label)
    flux = np.clip(grey[ys, xs] - level, 0, None) + 1e-3
    x0, y0 = np.average(xs, weights=flux), np.average(ys, weights=flux)
    dx, dy = xs - x0, ys - y0
    cov = np.cov(np.vstack([dx, dy]), aweights=flux) if len(xs) > 2 else np.eye(2)
    eigval, eigvec = np.linalg.eigh(np.atleast_2d(cov))
    major = eigvec[:, 1]
    angle = float(np.arctan2(major[1], major[0]))
    # Coordinates along the major (u) and minor (v) axes; the signs of their third moments
    # fix the 180-degree ambiguity of the axis and the mirror image.
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    radius = float(np.sqrt(max(eigval[1], 1.0)))
    return ObjectShape(float(x0), float(y0), radius, angle,
                       bool(np.average(u**3, weights=flux) < 0), bool(np.average(v**3, weights=flux) < 0))


def cutout(
    image: np.ndarray,
    *,
    crop: str = "centre",
    align: bool = False,
    size: int = INPUT_SIZE,
    crop_fraction: float = 0.5,
    radii: float = 3.0,
) -> np.ndarray:
    """The network input for one image: a stamp resized to ``size``, float32 in [0, 1].

    Parameters
    ----------
    image
        (H, W, 3) uint8 image with the object near the centre.
    crop
        ``"centre"``: a central square of ``crop_fraction`` of the image side (as the paper's
        fixed stamp). ``"measured"``: a square of half-side ``radii`` times the object's
        second-moment radius, centred on the object.
    align
        Rotate the major axis onto +x and flip to positive third moments (``crop="measured"``
        only).
    """
    if crop not in CROPS:
        raise ValueError(f"crop={crop!r}; use one of {', '.join(CROPS)}.")
    h, w = image.shape[:2]
    if crop == "centre":
        half, x0, y0, angle, fx, fy = crop_fraction * min(h, w) / 2, (w - 1) / 2, (h - 1) / 2, 0.0, False, False
    else:
        shape = measure_object(image)
        half = float(np.clip(radii * shape.radius, 16.0, min(h, w) / 2))
        x0, y0 = shape.x, shape.y
        angle, fx, fy = (shape.angle, shape.flip_x, shape.flip_y) if align else (0.0, False, False)
    scale = 2 * half / size  # input pixels per output pixel
    # Output pixel (row, col) -> offsets (u, v) in the object's frame -> input (y, x).
    grid = (np.arange(size) - (size - 1) / 2) * scale
    u = grid[None, :] * (-1 if fx else 1)
    v = grid[:, None] * (-1 if fy else 1)
    cos, sin = np.cos(angle), np.sin(angle)
    xs = x0 + u * cos - v * sin
    ys = y0 + u * sin + v * cos
    # Only the window the stamp samples (plus the anti-aliasing kernel's reach) is converted
    # and smoothed: the same numbers as doing the whole image, at a fraction of the cost.
    sigma = 0.5 * (scale - 1) if scale > 1 else 0.0
    reach = int(4.0 * sigma + 0.5) + 1  # gaussian_filter's default truncation, plus the bilinear neighbour
    y_lo, y_hi = max(int(np.floor(ys.min())) - reach, 0), min(int(np.ceil(ys.max())) + reach + 1, h)
    x_lo, x_hi = max(int(np.floor(xs.min())) - reach, 0), min(int(np.ceil(xs.max())) + reach + 1, w)
    data = image[y_lo:y_hi, x_lo:x_hi].astype(np.float32) / 255.0
    if sigma > 0:  # smooth before shrinking so that the stamp does not alias
        data = ndimage.gaussian_filter(data, sigma=(sigma, sigma, 0))
    if angle == 0.0:
        out = _bilinear_separable(data, ys[:, 0] - y_lo, xs[0] - x_lo)
    else:
        coords = np.stack(np.broadcast_arrays(ys - y_lo, xs - x_lo))
        out = np.stack([ndimage.map_coordinates(data[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
    return np.clip(out, 0, 1).astype(np.float32)


def _bilinear_separable(data: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``data`` (H, W, C) on the grid ``rows`` x ``cols``, edges repeated.

    The same values as ``ndimage.map_coordinates(order=1, mode="nearest")`` on an axis-aligned
    grid, as two 1-D interpolations (rows, then columns) of only the rows and columns needed.
    """

    def weights(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coords = np.clip(coords, 0, n - 1)
        lo = np.floor(coords).astype(np.intp)
        return lo, np.minimum(lo + 1, n - 1), (coords - lo).astype(np.float32)

    r0, r1, wr = weights(rows, data.shape[0])
    c0, c1, wc = weights(cols, data.shape[1])
    by_row = data[r0] * (1 - wr)[:, None, None] + data[r1] * wr[:, None, None]
    return by_row[:, c0] * (1 - wc)[None, :, None] + by_row[:, c1] * wc[None, :, None]


def list_images(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` (by suffix), sorted by name.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    ValueError
        If it holds no image file, or two files share a name without suffix (an image's id).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of images.")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: the folder holds no image file ({', '.join(IMAGE_SUFFIXES)}).")
    check_unique_ids(paths)
    return paths


def check_unique_ids(paths: list[Path]) -> None:
    """Refuse image files whose ids (names without suffix) coincide, naming the first ones.

    Raises
    ------
    ValueError
        If two files would get the same id (``a.jpeg`` and ``a.png``, or ``x/a.jpeg`` and
        ``y/a.jpeg``): their features could not be told apart.
    """
    by_id: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        by_id[Path(path).stem].append(Path(path))
    clashes = {k: v for k, v in by_id.items() if len(v) > 1}
    if clashes:
        ident, files = next(iter(clashes.items()))
        raise ValueError(f"{files[0]} and {files[1]} share the id {ident!r} ({len(clashes)} ids are shared); "
                         "rename one of each pair (an image's id is its file name without suffix).")
