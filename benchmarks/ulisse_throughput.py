"""ULISSE throughput: end-to-end feature extraction against the previous path, and exact kNN queries.

1. Feature extraction (images/s, from JPEG files to 1280-d features) on real Galaxy Zoo cutouts:
   - *previous path*: what ``FeatureExtractor.extract`` did before the speed work, reproduced
     here: decode and resize the whole image in one process (``map_coordinates`` on the full
     image), then fp32 NCHW inference in batches of 8;
   - *new path*: ``FeatureExtractor`` with its defaults (channels_last; folded batch norms; fp32
     on a CPU; DataLoader workers decoding on spare cores; batches of 4 on a CPU), with
     ``precision="bf16"`` (bf16 from stage 3) where the CPU has native bf16, and with
     ``compile=True`` when asked.
   The features are checked against each other (cosine, top-k neighbours), and each path's
   arithmetic rate is given as a fraction of this CPU's peak, measured here with a large matmul
   in fp32 and in bf16.
2. Exact 50-nearest-neighbour queries over random 1280-d vectors: ``SimilaritySearch`` (torch
   matmul + topk) against scikit-learn's ``NearestNeighbors(algorithm="brute")``.

Run: ``MLSKY_DATA_DIR=/path/to/data python benchmarks/ulisse_throughput.py [--images 512] [--compile]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage
from sklearn.neighbors import NearestNeighbors

import mlsky
from mlsky.ulisse.backbone import load_backbone
from mlsky.ulisse.cutouts import read_image
from mlsky.ulisse.data import load_galaxyzoo1
from mlsky.ulisse.features import FeatureExtractor, feature_maps, native_bf16
from mlsky.ulisse.search import SimilaritySearch


def previous_cutout(image: np.ndarray, size: int = 224) -> np.ndarray:
    """The centre stamp as the previous code made it: the whole image converted, then resampled."""
    h, w = image.shape[:2]
    half, x0, y0 = 0.5 * min(h, w) / 2, (w - 1) / 2, (h - 1) / 2
    scale = 2 * half / size
    data = image.astype(np.float32) / 255.0
    if scale > 1:
        data = ndimage.gaussian_filter(data, sigma=(0.5 * (scale - 1), 0.5 * (scale - 1), 0))
    grid = (np.arange(size) - (size - 1) / 2) * scale
    coords = np.stack(np.broadcast_arrays(y0 + grid[:, None], x0 + grid[None, :]))
    out = np.stack([ndimage.map_coordinates(data[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
    return np.clip(out, 0, 1).astype(np.float32)


def previous_path(paths: list, model: torch.nn.Module, mean, std, batch_size: int = 8) -> np.ndarray:
    """Serial decode + resize, fp32 NCHW forward of the four taps, batches of 8 (the old extract)."""
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(paths), batch_size):
        stamps = np.stack([previous_cutout(read_image(p)) for p in paths[start:start + batch_size]])
        with torch.inference_mode():
            x = (torch.from_numpy(stamps).permute(0, 3, 1, 2) - mean) / std
            out.append(feature_maps(model, x)["head"].mean(dim=(2, 3)).numpy())
    return np.concatenate(out)


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on this CPU (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def model_flops(model: torch.nn.Module) -> float:
    """FLOPs of one 224 x 224 forward pass (multiply-adds count 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        feature_maps(model, torch.zeros(1, 3, 224, 224))
    return float(counter.get_total_flops())


def extraction(n_images: int, compile_: bool, repeats: int) -> None:
    paths = list(load_galaxyzoo1(n=n_images, seed=1)["path"])
    n_images = len(paths)  # the stratified draw may round a class down
    new = FeatureExtractor(cache=False).fit()
    b = new.backbone_
    print(f"backbone: {b.name} ({b.weights}); threads {torch.get_num_threads()}; "
          f"new path precision {new.precision_}, workers {new._workers(len(paths))}, batch {new.batch_size_}")
    flops = model_flops(load_backbone(b.name).model.eval())
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"peak of this CPU (4096^2 matmul): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; "
          f"network {flops / 1e9:.2f} GFLOP per image")

    old_model = load_backbone(b.name).model.eval()  # as before: unfolded batch norms, NCHW
    runs = {"new path": new}
    if new.precision_ == "fp32" and native_bf16(new.device_):
        runs["new path, precision='bf16'"] = FeatureExtractor(cache=False, precision="bf16").fit()
    if compile_:
        runs["new path + torch.compile"] = FeatureExtractor(cache=False, compile=True).fit()
    previous_path(paths[:8], old_model, b.mean, b.std)  # warm-up
    for extractor in runs.values():
        extractor.extract(paths[:extractor.batch_size_])  # warm-up (and compilation)
    # Best of `repeats` runs, the paths interleaved: on a shared machine the load changes
    # by the minute, and the best run is the one least disturbed.
    rates: dict[str, list[float]] = {"previous path": [], **{name: [] for name in runs}}
    feats: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        old = previous_path(paths, old_model, b.mean, b.std)
        rates["previous path"].append(n_images / (time.perf_counter() - t0))
        for name, extractor in runs.items():
            t0 = time.perf_counter()
            feats[name] = extractor.extract(paths).features
            rates[name].append(n_images / (time.perf_counter() - t0))
    rate_old = max(rates["previous path"])
    print(f"previous path: {rate_old:.1f} img/s ({rate_old * flops / 1e9 / peak32:.1%} of the fp32 peak); "
          f"runs {', '.join(f'{r:.1f}' for r in rates['previous path'])}")
    k = min(50, n_images - 1)
    a = SimilaritySearch(n_neighbors=k).fit(old).kneighbors(indices=np.arange(n_images))[1]
    for name in runs:
        rate, f = max(rates[name]), feats[name]
        cosine = (f * old).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(old, axis=1)
        c = SimilaritySearch(n_neighbors=k).fit(f).kneighbors(indices=np.arange(n_images))[1]
        agree = np.mean([len(set(x) & set(y)) / k for x, y in zip(a, c)])
        print(f"{name}: {rate:.1f} img/s ({rate * flops / 1e9 / peak16:.1%} of the bf16 peak, "
              f"{rate * flops / 1e9 / peak32:.1%} of the fp32 peak); {rate / rate_old:.2f}x the previous path; "
              f"runs {', '.join(f'{r:.1f}' for r in rates[name])}; "
              f"cosine to previous min {cosine.min():.5f}, top-{k} neighbours agree {agree:.3f}")


def query(n_vectors: int, n_queries: int, k: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_vectors, 1280)).astype(np.float32)
    Q = rng.normal(size=(n_queries, 1280)).astype(np.float32)
    search = SimilaritySearch(n_neighbors=k, index="exact").fit(X)
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
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--compile", action="store_true", help="also time FeatureExtractor(compile=True)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path (interleaved; the best is kept)")
    parser.add_argument("--vectors", type=int, default=200_000, help="0 skips the query benchmark")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", type=int, default=50)
    args = parser.parse_args()
    print(mlsky.describe())
    extraction(args.images, args.compile, args.repeats)
    if args.vectors:
        query(args.vectors, args.queries, args.k)


if __name__ == "__main__":
    main()
