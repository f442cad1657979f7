"""Features of a pretrained EfficientNet for galaxy cutouts, with an on-disk cache.

ULISSE's representation of an image is the global average of the last feature map of an
ImageNet EfficientNet: 1280 numbers. :class:`FeatureExtractor` computes it (and, from the
same forward pass, the pooled maps of the last three stages, to compare layers), optionally
averaged over the 8 rotations and flips of the stamp. Features of image files are kept in
``mlsky.data.cache_dir()/ulisse/`` under the backbone's name and weights, the pre-processing
and the folder, so a second run over the same images reads them back instead of recomputing.

Examples
--------
>>> from mlsky.ulisse.features import FeatureExtractor
>>> extractor = FeatureExtractor(crop="centre")                    # doctest: +SKIP
>>> result = extractor.extract(["a.jpeg", "b.jpeg"])                # doctest: +SKIP
>>> result.features.shape, result.backbone                        # doctest: +SKIP
((2, 1280), 'tf_efficientnet_lite0')
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from mlsky.config import get_device
from mlsky.ulisse.backbone import Backbone, load_backbone
from mlsky.ulisse.cutouts import ImageReadError, cutout, read_image

#: Pooled taps of one forward pass: the last three stages and the 1280-channel head.
LAYERS = ("blocks.4", "blocks.5", "blocks.6", "head")
CACHE_CHUNK = 256


@dataclass
class Features:
    """Features of a set of image files and how they were made.

    Attributes
    ----------
    ids
        Image identifiers (file names without suffix), one per row.
    features
        (N, D) features of the chosen layer.
    layers
        Every pooled tap, by layer name.
    backbone, weights
        Which network and which pretrained weights produced them.
    config
        The pre-processing (crop, alignment, rotations averaged).
    skipped
        ``(file, reason)`` for each file that could not be read.
    """

    ids: list[str]
    features: np.ndarray
    layers: dict[str, np.ndarray]
    backbone: str
    weights: str
    config: dict[str, object] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` with ``features``, ``ids``, ``backbone``, ``weights`` (atomically)."""
        path = Path(path)
        arrays = {"features": self.features, "ids": np.array(self.ids, dtype=str),
                  "backbone": np.array(self.backbone), "weights": np.array(self.weights),
                  "layer": np.array(str(self.config.get("layer", "head"))),
                  "config": np.array(repr(sorted(self.config.items())))}
        _atomic_savez(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Features":
        """Read a file written by :meth:`save`.

        Raises
        ------
        ValueError
            If the file lacks ``features``/``ids`` or their lengths differ.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such features file.")
        try:
            with np.load(path, allow_pickle=False) as data:
                content = {k: data[k] for k in data.files}
        except Exception as err:  # zip/npy errors come in several types
            raise ValueError(f"{path}: not a readable .npz features file ({err}).") from err
        missing = {"features", "ids"} - set(content)
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(sorted(missing))} (write it with `mlsky ulisse embed`).")
        if len(content["ids"]) != len(content["features"]):
            raise ValueError(f"{path}: {len(content['ids'])} ids for {len(content['features'])} feature rows.")
        layer = str(content.get("layer", "head"))
        return cls([str(i) for i in content["ids"]], content["features"], {layer: content["features"]},
                   str(content.get("backbone", "unknown")), str(content.get("weights", "unknown")))


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dihedral(batch: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations by multiples of 90 degrees and their mirror images of an NCHW batch."""
    rotations = [torch.rot90(batch, k, dims=(2, 3)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(3,)) for r in rotations]


def feature_maps(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward a timm EfficientNet and return the maps of the last three stages and the head.

    Shapes for a 224 x 224 input: ``blocks.4`` (N, 112, 14, 14), ``blocks.5`` (N, 192, 7, 7),
    ``blocks.6`` (N, 320, 7, 7), ``head`` (N, 1280, 7, 7) after conv_head + BN + activation.
    """
    x = model.bn1(model.conv_stem(x))
    maps = {}
    for i, stage in enumerate(model.blocks):
        x = stage(x)
        if f"blocks.{i}" in LAYERS:
            maps[f"blocks.{i}"] = x
    maps["head"] = model.bn2(model.conv_head(x))
    return maps


class FeatureExtractor(BaseEstimator, TransformerMixin):
    """Pooled features of an ImageNet EfficientNet for galaxy cutouts.

    Parameters
    ----------
    backbone
        ``"auto"`` (the paper's EfficientNet-B0 when its weights are at hand, else the offline
        EfficientNet-Lite0), ``"efficientnet_b0"`` or ``"tf_efficientnet_lite0"``.
    crop
        ``"centre"`` (fixed central stamp, as the paper; the default) or ``"measured"`` (stamp
        sized from the object).
    align
        Rotate/flip each stamp to the object's canonical pose (measured crop only).
    radii
        Half-side of a measured stamp in units of the object's second-moment radius.
    tta
        1, or 8 to average the features over the 8 rotations and flips of the stamp.
    layer
        Which pooled map :meth:`transform` and :attr:`Features.features` return (see
        :data:`LAYERS`; ``"head"`` is ULISSE's 1280-d vector).
    batch_size
        Images per forward pass (on 2 CPU cores, 8 was as fast as any; 32 was slower).
    cache
        Keep features of image files on disk and reuse them.
    progress
        Show a progress bar.

    Attributes
    ----------
    backbone_ : Backbone
        The loaded network (set by :meth:`fit`; name and weights say what ran).
    device_ : torch.device

    Examples
    --------
    >>> import numpy as np
    >>> extractor = FeatureExtractor().fit()          # doctest: +SKIP
    >>> extractor.transform(np.zeros((1, 423, 423, 3), np.uint8)).shape  # doctest: +SKIP
    (1, 1280)
    """

    def __init__(self, backbone: str = "auto", crop: str = "centre", align: bool = False, radii: float = 3.0,
                 tta: int = 1, layer: str = "head", batch_size: int = 8, cache: bool = True,
                 progress: bool = False):
        self.backbone = backbone
        self.crop = crop
        self.align = align
        self.radii = radii
        self.tta = tta
        self.layer = layer
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress

    def _check_params(self) -> None:
        if self.tta not in (1, 8):
            raise ValueError(f"tta={self.tta}; use 1 or 8 (the dihedral group of the square).")
        if self.layer not in LAYERS:
            raise ValueError(f"layer={self.layer!r}; use one of {', '.join(LAYERS)}.")
        if self.align and self.crop != "measured":
            raise ValueError("align=True needs crop='measured' (the pose comes from the measured object).")

    def fit(self, X=None, y=None) -> "FeatureExtractor":
        """Load the pretrained backbone (nothing is learned)."""
        self._check_params()
        backbone: Backbone = load_backbone(self.backbone)
        self.device_ = get_device()
        backbone.model.to(self.device_)
        self.backbone_ = backbone
        return self

    @property
    def config_(self) -> dict[str, object]:
        """The pre-processing and the layer returned (crop, align, radii and tta key the cache)."""
        return {"crop": self.crop, "align": self.align, "radii": self.radii, "tta": self.tta, "layer": self.layer}

    def _ensure_fitted(self) -> None:
        if not hasattr(self, "backbone_"):
            self.fit()

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The (224, 224, 3) stamp in [0, 1] that the network sees for one image."""
        return cutout(image, crop=self.crop, align=self.align, radii=self.radii)

    def _normalised(self, stamps: np.ndarray) -> torch.Tensor:
        b = self.backbone_
        x = torch.from_numpy(stamps).permute(0, 3, 1, 2).to(self.device_)
        mean = torch.tensor(b.mean, device=self.device_).view(1, 3, 1, 1)
        std = torch.tensor(b.std, device=self.device_).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def _forward(self, stamps: np.ndarray) -> dict[str, np.ndarray]:
        b = self.backbone_
        x = self._normalised(stamps)
        views = dihedral(x) if self.tta == 8 else [x]
        pooled = {name: 0.0 for name in LAYERS}
        for view in views:
            for name, fmap in feature_maps(b.model, view).items():
                pooled[name] = pooled[name] + fmap.mean(dim=(2, 3))
        return {name: (v / len(views)).float().cpu().numpy() for name, v in pooled.items()}

    def transform(self, X: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Features (N, D) of the chosen layer for images given as (H, W, 3) uint8 arrays."""
        self._ensure_fitted()
        stamps = np.stack([self.preprocess(np.asarray(img)) for img in X])
        out = [self._forward(stamps[i:i + self.batch_size])[self.layer] for i in range(0, len(stamps), self.batch_size)]
        return np.concatenate(out)

    def activation_maps(self, images: Sequence[np.ndarray], channel: int, layer: str = "head") -> np.ndarray:
        """The (N, h, w) map of one feature channel for each image (the paper's Fig. 1)."""
        self._ensure_fitted()
        stamps = np.stack([self.preprocess(np.asarray(img)) for img in images])
        with torch.inference_mode():
            return feature_maps(self.backbone_.model, self._normalised(stamps))[layer][:, channel].float().cpu().numpy()

    def cache_path(self, paths: Sequence[Path]) -> Path:
        """Where the features of image files in ``paths``' folder(s) are cached."""
        from mlsky.data import cache_dir

        folders = sorted({str(Path(p).resolve().parent) for p in paths})
        folder_key = hashlib.sha1("\n".join(folders).encode()).hexdigest()[:12]
        prep = f"{self.crop}-{'aligned' if self.align else 'raw'}-tta{self.tta}"
        if self.crop == "measured" and self.radii != 3.0:
            prep += f"-r{self.radii:g}"
        return cache_dir() / "ulisse" / self.backbone_.tag / f"{folder_key}-{prep}.npz"

    def extract(self, paths: Sequence[str | Path], *, on_error: str = "skip") -> Features:
        """Features of image files, read from the cache where present, computed otherwise.

        Parameters
        ----------
        paths
            Image files (any size; grey-scale is read as RGB).
        on_error
            ``"skip"``: leave out unreadable files, warn once with their count, list them in
            :attr:`Features.skipped`. ``"raise"``: raise :class:`ImageReadError` on the first.

        Raises
        ------
        ValueError
            If ``paths`` is empty or ``on_error`` is unknown.
        ImageReadError
            With ``on_error="raise"``, for the first unreadable file.
        """
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error={on_error!r}; use 'skip' or 'raise'.")
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError("no image files given.")
        self._ensure_fitted()
        keys = [f"{p.name}:{p.stat().st_size if p.exists() else -1}" for p in paths]
        store = self._read_cache(paths) if self.cache else {}
        todo = [i for i, k in enumerate(keys) if k not in store]
        bar = None
        if self.progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"features ({self.backbone_.name})", unit="img")
        for start in range(0, len(todo), CACHE_CHUNK):
            chunk = todo[start:start + CACHE_CHUNK]
            self._compute_into(store, [paths[i] for i in chunk], [keys[i] for i in chunk], on_error, bar)
            if self.cache:
                self._write_cache(paths, store)
        if bar is not None:
            bar.close()
        good = [i for i, k in enumerate(keys) if not isinstance(store[k], str)]
        skipped = [(str(paths[i]), store[keys[i]]) for i, k in enumerate(keys) if isinstance(store[k], str)]
        if skipped and on_error == "raise":
            raise ImageReadError(skipped[0][1])
        if skipped:
            warnings.warn(f"skipped {len(skipped)} of {len(paths)} image files that could not be read "
                          f"(first: {skipped[0][1]})", stacklevel=2)
        if not good:
            raise ValueError(f"none of the {len(paths)} image files could be read (first: {skipped[0][1]}).")
        layers = {name: np.stack([store[keys[i]][n] for i in good]) for n, name in enumerate(LAYERS)}
        return Features([paths[i].stem for i in good], layers[self.layer], layers, self.backbone_.name,
                        self.backbone_.weights, self.config_, skipped)

    def _compute_into(self, store: dict, paths: list[Path], keys: list[str], on_error: str, bar) -> None:
        for start in range(0, len(paths), self.batch_size):
            stamps, batch_keys = [], []
            for path, key in zip(paths[start:start + self.batch_size], keys[start:start + self.batch_size]):
                try:
                    stamps.append(self.preprocess(read_image(path)))
                    batch_keys.append(key)
                except ImageReadError as err:
                    if on_error == "raise":
                        raise
                    store[key] = str(err)
            if stamps:
                pooled = self._forward(np.stack(stamps))
                for j, key in enumerate(batch_keys):
                    store[key] = [pooled[name][j] for name in LAYERS]
            if bar is not None:
                bar.update(min(self.batch_size, len(paths) - start))

    def _read_cache(self, paths: list[Path]) -> dict:
        path = self.cache_path(paths)
        if not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                # Each data[name] decodes the whole array again: read each one once, and copy
                # rows so that no entry keeps a whole array alive.
                arrays = [data[name] for name in LAYERS]
                store = {k: [a[i].copy() for a in arrays] for i, k in enumerate(data["keys"])}
                store.update(dict(zip(data["bad_keys"], data["bad_reasons"])))
        except Exception as err:  # a damaged cache is recomputed, never trusted
            warnings.warn(f"ignoring unreadable feature cache {path}: {err}", stacklevel=3)
            return {}
        return {str(k): (str(v) if isinstance(v, np.str_) else v) for k, v in store.items()}

    def _write_cache(self, paths: list[Path], store: dict) -> None:
        good = [k for k, v in store.items() if not isinstance(v, str)]
        bad = [k for k, v in store.items() if isinstance(v, str)]
        arrays = {"keys": np.array(good, dtype=str), "bad_keys": np.array(bad, dtype=str),
                  "bad_reasons": np.array([store[k] for k in bad], dtype=str),
                  "backbone": np.array(self.backbone_.name), "weights": np.array(self.backbone_.weights)}
        for n, name in enumerate(LAYERS):
            arrays[name] = np.stack([store[k][n] for k in good]) if good else np.zeros((0, 1), np.float32)
        _atomic_savez(self.cache_path(paths), arrays)
