"""Deblending close pairs: how often the shipped finder splits a lone source, and finds both of a pair.

Two sets of simulated 64 x 128 x 128 cubes (this package's simulator, seeds the criteria of
:mod:`mlsky.alma.finder.deblend` were not chosen on):

- *lone sources*: the paper's random skies (``random_cube``), where companions fall anywhere;
- *close pairs*: a source and one companion placed 0.3-1 beam away on the sky, its line 0-3
  line widths (sigma) away, both of the paper's random brightness.

The shipped finder runs with and without deblending on the same cubes; matching is strict
(:mod:`mlsky.alma.metrics`). Printed: detections, TP, FP, recall and F1 of each, how many
detections were split, the F1 ratio, and the seconds per cube.

Run: ``python benchmarks/alma_deblend.py [--n 100]``
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import mlsky
from mlsky.alma.finder import AlmaSourceFinder, as_cube
from mlsky.alma.metrics import evaluate
from mlsky.alma.sim.simulate import random_cube, simulate_cube
from mlsky.alma.sim.sky import FWHM_PER_SIGMA, random_sources
from mlsky.data.weights import shipped_weights

SHAPE = (64, 128, 128)
LONE_SEED, PAIR_SEED = 9_100_000, 9_200_000
BEAM_PIX = 6.2  # the simulator's beam FWHM at this set-up, for placing the companions


def close_pair(seed: int):
    """A source and a companion within a beam, lines up to 3 sigma apart, observed."""
    rng = np.random.default_rng([seed, 1])
    sources = random_sources(rng, SHAPE, n_companions=1)
    d, angle = rng.uniform(0.3, 1.0) * BEAM_PIX, rng.uniform(0, 2 * np.pi)
    sources["x"][1] = sources["x"][0] + d * np.cos(angle)
    sources["y"][1] = sources["y"][0] + d * np.sin(angle)
    sources["fwhm_z"][1] = sources["fwhm_z"][0]
    sources["z"][1] = sources["z"][0] + rng.choice([-1, 1]) * rng.uniform(0, 3) * sources["fwhm_z"][0] / FWHM_PER_SIGMA
    return simulate_cube(sources, shape=SHAPE, seed=int(rng.integers(2**32)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="cubes in each set (default 100)")
    args = parser.parse_args()
    print(mlsky.describe())
    finders = {flag: AlmaSourceFinder(shipped_weights("alma_finder"), deblend=flag).load() for flag in (False, True)}
    for title, sims in (("lone sources", [random_cube(LONE_SEED + i, shape=SHAPE) for i in range(args.n)]),
                        ("close pairs", [close_pair(PAIR_SEED + i) for i in range(args.n)])):
        cubes, truths = [as_cube(s) for s in sims], [s.truth for s in sims]
        print(f"\n{title}: {len(cubes)} cubes, {sum(len(t) for t in truths)} sources")
        print(f"{'deblending':10s} {'found':>6s} {'TP':>5s} {'FP':>5s} {'recall':>7s} {'F1':>6s} {'split':>6s} {'s/cube':>7s}")
        f1 = {}
        for flag, finder in finders.items():
            t0 = time.perf_counter()
            catalogues = [finder.predict(c) for c in cubes]
            seconds = (time.perf_counter() - t0) / len(cubes)
            scores, _ = evaluate(truths, catalogues)
            f1[flag] = scores["f1"]
            split = sum(int(np.sum(c["deblend"])) for c in catalogues) // 2 if flag else 0
            print(f"{'on' if flag else 'off':10s} {sum(len(c) for c in catalogues):6d} {scores['tp']:5d} {scores['fp']:5d} "
                  f"{scores['recall']:7.3f} {scores['f1']:6.3f} {split:6d} {seconds:7.3f}")
        print(f"F1 with deblending / without: {f1[True] / f1[False]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
