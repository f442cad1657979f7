"""ALMA source finding throughput: the deep-learning pipeline against the classical peers.

Cubes per second through the whole pipeline (reading the cube, Blobs Finder, Deep GRU, the
ResNet battery, the catalogue) and through each peer (blobcat-like flood fill, SoFiA-like
smooth-and-clip, photutils segmentation), on the same simulated 128 x 256 x 256 cubes (the
paper's size), on this CPU. Every finder starts from the cube in memory.

The pipeline runs with trained weights (``mlsky alma train --out DIR``; default: the cache
folder of the current ``MLSKY_SCALE``). Its run time depends on how many candidate boxes
Blobs Finder proposes, so untrained networks would measure something else: without weights
the benchmark stops and says how to make them.

Run: ``python benchmarks/alma_detect.py [--cubes 3] [--weights DIR]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mlsky
from mlsky.alma.finder import AlmaSourceFinder
from mlsky.alma.finder.pipeline import PIPELINE_FILE
from mlsky.alma.peers import BlobcatFinder, PhotutilsFinder, SofiaFinder
from mlsky.alma.sim.simulate import random_cube
from mlsky.alma.finder.train import default_weights_dir

SHAPE = (128, 256, 256)


def throughput(name: str, predict, cubes) -> float:
    predict(cubes[0])  # warm-up (allocations, lazy imports)
    t0 = time.perf_counter()
    found = sum(len(predict(c)) for c in cubes)
    rate = len(cubes) / (time.perf_counter() - t0)
    print(f"{name:22s} {rate:8.3f} cubes/s  ({found} detections in {len(cubes)} cubes)")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=3, help="cubes timed per finder (default 3)")
    parser.add_argument("--weights", default=None, help="trained pipeline folder (default: the cache's)")
    args = parser.parse_args()
    weights = Path(args.weights) if args.weights else default_weights_dir()
    if not (weights / PIPELINE_FILE).is_file():
        print(f"no trained pipeline in {weights}: run `mlsky alma train --out {weights}` first", file=sys.stderr)
        return 2
    print(mlsky.describe())
    cubes = [random_cube(1000 + i, shape=SHAPE) for i in range(args.cubes)]
    print(f"{len(cubes)} simulated cubes of shape {SHAPE} (channels, y, x)")
    finder = AlmaSourceFinder(weights).load()
    rates = {
        "pipeline": throughput("pipeline (3 networks)", finder.predict, cubes),
        "blobcat-like": throughput("blobcat-like", BlobcatFinder().predict, cubes),
        "SoFiA-like": throughput("SoFiA-like (9 kernels)", SofiaFinder().predict, cubes),
        "photutils": throughput("photutils segmentation", PhotutilsFinder().predict, cubes),
    }
    for peer in ("blobcat-like", "SoFiA-like", "photutils"):
        print(f"ratio pipeline / {peer}: {rates['pipeline'] / rates[peer]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
