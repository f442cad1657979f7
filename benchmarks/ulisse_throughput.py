"""ULISSE throughput: feature extraction and exact kNN queries, against their naive peers.

1. Feature extraction (images/s) on real Galaxy Zoo cutouts: mlsky's batched
   ``FeatureExtractor`` (inference mode) against a plain loop that runs the same network on one
   image at a time with autograd on.
2. Exact 50-nearest-neighbour queries over 200,000 random 1280-d vectors: mlsky's
   ``SimilaritySearch`` (torch cdist + topk, batched) against scikit-learn's
   ``NearestNeighbors(algorithm="brute")``; the answers are checked to agree.

Run: ``MLSKY_DATA_DIR=/path/to/data python benchmarks/ulisse_throughput.py [--images 64]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

import mlsky
from mlsky.ulisse.cutouts import read_image
from mlsky.ulisse.data import load_galaxyzoo1
from mlsky.ulisse.features import FeatureExtractor
from mlsky.ulisse.search import SimilaritySearch


def extraction(n_images: int) -> None:
    paths = list(load_galaxyzoo1(n=n_images, seed=1)["path"])
    ours = FeatureExtractor(backbone="auto", cache=False).fit()
    images = [read_image(p) for p in paths]
    ours.transform(images[:2])  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    batched = ours.transform(images)
    t_ours = time.perf_counter() - t0

    model, b = ours.backbone_.model, ours.backbone_
    mean, std = torch.tensor(b.mean).view(1, 3, 1, 1), torch.tensor(b.std).view(1, 3, 1, 1)
    t0 = time.perf_counter()
    loop = []
    for image in images:  # the peer: one image per call, autograd on, as a first script would
        x = (torch.from_numpy(ours.preprocess(image)).permute(2, 0, 1)[None] - mean) / std
        loop.append(model.forward_head(model.forward_features(x), pre_logits=True).detach().numpy()[0])
    t_loop = time.perf_counter() - t0
    assert np.allclose(np.asarray(loop), batched, atol=1e-3), "batched and per-image features differ"
    print(f"backbone: {b.name} ({b.weights})")
    print(f"extraction, {n_images} Galaxy Zoo cutouts at 224 px: batched inference_mode {n_images / t_ours:.1f} img/s, "
          f"per-image loop {n_images / t_loop:.1f} img/s; ratio {t_loop / t_ours:.2f}x")


def query(n_vectors: int, n_queries: int, k: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_vectors, 1280)).astype(np.float32)
    Q = rng.normal(size=(n_queries, 1280)).astype(np.float32)
    search = SimilaritySearch(n_neighbors=k).fit(X)
    t0 = time.perf_counter()
    _, ours = search.kneighbors(Q)
    t_ours = time.perf_counter() - t0
    sk = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X)
    t0 = time.perf_counter()
    _, ref = sk.kneighbors(Q)
    t_sk = time.perf_counter() - t0
    agree = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, ref)]))
    print(f"query, {n_queries} queries x {n_vectors:,} random 1280-d vectors, k={k}: mlsky SimilaritySearch "
          f"{t_ours:.2f} s, sklearn NearestNeighbors(brute) {t_sk:.2f} s; ratio {t_sk / t_ours:.2f}x "
          f"(same neighbours: {agree:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", type=int, default=50)
    args = parser.parse_args()
    print(mlsky.describe())
    extraction(args.images)
    query(args.vectors, args.queries, args.k)


if __name__ == "__main__":
    main()
