"""The three networks of the ALMA pipeline (Delli Veneri et al. 2023), one per file.

- :class:`~mlsky.alma.finder.models.blobs_finder.BlobsFinder` -- convolutional autoencoder that turns
  the frequency-integrated dirty image into a 2-D source probability map (the paper's Table 3);
- :class:`~mlsky.alma.finder.models.blobs_finder_fcn.BlobsFinderFCN` -- the same blocks, fully
  convolutional with skip connections, reading matched-filtered images (beyond the paper);
- :class:`~mlsky.alma.finder.models.deep_gru.DeepGRU` -- stacked GRUs that mark the channels with
  emission in a dirty spectrum (spectral focusing, the paper's Fig. 6);
- :class:`~mlsky.alma.finder.models.resnet.ResNet18` -- the ResNet-18-like regressor of the battery
  that estimates FWHMx, FWHMy, position angle and flux (the paper's Fig. 8).

Models are plain :class:`torch.nn.Module` objects created by name, as in timm.

Examples
--------
>>> from mlsky.alma.finder.models import create_model, list_models
>>> list_models()
['blobs_finder', 'blobs_finder_fcn', 'deep_gru', 'resnet18']
>>> net = create_model("blobs_finder", input_size=64)
>>> net.input_size
64
"""

from __future__ import annotations

from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a model to the registry under ``name`` (stored as ``model_name``)."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a model called {name!r} is already registered")
        cls.model_name = name
        _REGISTRY[name] = cls
        return cls

    return add


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Create the registered model ``name`` with the given keyword arguments.

    Raises
    ------
    KeyError
        If no model of that name is registered (the message lists the known ones).
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    model = cls(**kwargs)
    # Kept so that a checkpoint can rebuild the same network.
    model.init_kwargs = dict(kwargs)
    return model


# Imported for their registration side effect.
from mlsky.alma.finder.models import blobs_finder, blobs_finder_fcn, deep_gru, resnet  # noqa: E402,F401
from mlsky.alma.finder.models.blobs_finder import BlobsFinder  # noqa: E402
from mlsky.alma.finder.models.blobs_finder_fcn import BlobsFinderFCN  # noqa: E402
from mlsky.alma.finder.models.deep_gru import DeepGRU  # noqa: E402
from mlsky.alma.finder.models.resnet import ResNet18  # noqa: E402

__all__ = ["BlobsFinder", "BlobsFinderFCN", "DeepGRU", "ResNet18", "create_model", "list_models", "register_model"]
