"""ULISSE: one-shot similarity search in the features of an ImageNet-pretrained CNN.

Doorenbos et al. (2022, A&A 666, A171) find objects of a kind from a single example: embed
every cutout with an ImageNet EfficientNet (no training), then return the nearest neighbours
of the prototype in that 1280-d space, optionally expanding recursively.

- :mod:`~mlsky.ulisse.backbone` -- pretrained backbones (EfficientNet-B0 from the hub, the
  offline EfficientNet-Lite0, or the sky encoder), never random weights;
- :mod:`~mlsky.ulisse.cutouts` -- reading images; stamps cropped, aligned and resized;
- :mod:`~mlsky.ulisse.features` -- :class:`FeatureExtractor` (bf16 and channels_last where
  the CPU has them, decoding in parallel) with a content-keyed, sharded, resumable cache;
- :mod:`~mlsky.ulisse.search` -- :class:`SimilaritySearch` (exact kNN or a calibrated faiss IVF
  index at large N, recursive expansion);
- :mod:`~mlsky.ulisse.evaluate` -- precision and lift over base rates, lift tables; naive
  baselines;
- :mod:`~mlsky.ulisse.data` -- Galaxy Zoo 1, your own folder + CSV, SDSS online;
- :mod:`~mlsky.ulisse.sky` -- beyond the paper: a small encoder trained without labels on the
  Galaxy Zoo cutouts (SimCLR), shipped inside mlsky as the backbone ``"sky"``.

Examples
--------
>>> from mlsky.ulisse import FeatureExtractor, SimilaritySearch, load_galaxyzoo1
>>> sample = load_galaxyzoo1(n=300)                                  # doctest: +SKIP
>>> feats = FeatureExtractor().extract(sample["path"])               # doctest: +SKIP
>>> SimilaritySearch(n_neighbors=10).fit(feats.features).query(0)    # doctest: +SKIP
"""

from mlsky.ulisse.backbone import Backbone, BackboneUnavailableError, load_backbone
from mlsky.ulisse.cutouts import ImageReadError, cutout, measure_object, read_image
from mlsky.ulisse.data import load_folder, load_galaxyzoo1
from mlsky.ulisse.evaluate import lift_table, mean_lift, retrieval_table
from mlsky.ulisse.features import FeatureExtractor, Features
from mlsky.ulisse.search import SimilaritySearch

__all__ = ["Backbone", "BackboneUnavailableError", "FeatureExtractor", "Features", "ImageReadError",
           "SimilaritySearch", "cutout", "lift_table", "load_backbone", "load_folder", "load_galaxyzoo1", "mean_lift",
           "measure_object", "read_image", "retrieval_table"]
