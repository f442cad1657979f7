"""``mlsky alma detect`` and ``mlsky alma train``: the source finder on the command line.

Examples
--------
.. code-block:: bash

    mlsky alma train --out weights/                 # all three networks, at MLSKY_SCALE
    mlsky alma detect cube.fits -o catalogue.ecsv --weights weights/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(alma: argparse._SubParsersAction) -> None:
    """Add ``detect`` and ``train`` to the sub-commands of ``mlsky alma``."""
    detect = alma.add_parser("detect", help="find and characterise the sources of a FITS cube")
    detect.add_argument("cube", type=Path, help="dirty cube (FITS with RA/Dec/FREQ WCS)")
    detect.add_argument("-o", "--output", type=Path, required=True, help="catalogue to write (.ecsv, .fits, ...)")
    detect.add_argument("--weights", type=Path, default=None,
                        help="folder written by `mlsky alma train` (default: the cache folder for MLSKY_SCALE)")
    detect.add_argument("--overwrite", action="store_true", help="replace an existing catalogue")
    detect.set_defaults(func=run_detect)

    train = alma.add_parser("train", help="train Blobs Finder, Deep GRU and the ResNets on simulated cubes")
    train.add_argument("--out", type=Path, default=None,
                       help="folder for the checkpoints (default: the cache folder for MLSKY_SCALE); resumes there")
    train.add_argument("--seed", type=int, default=0, help="seed of the simulations and of training")
    train.set_defaults(func=run_train)


def run_detect(args: argparse.Namespace) -> int:
    """Write the catalogue of ``args.cube``; nothing is written when anything fails."""
    from mlsky.alma.detect import detect, write_catalogue

    if args.output.exists() and not args.overwrite:
        print(f"mlsky alma detect: error: {args.output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if not args.output.parent.is_dir():
        raise FileNotFoundError(f"folder {args.output.parent} of the catalogue does not exist")
    catalogue = detect(args.cube, weights=args.weights)
    write_catalogue(catalogue, args.output)
    print(f"{len(catalogue)} sources -> {args.output}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train the three networks at the current scale and print where they are."""
    from mlsky.alma.train import default_weights_dir, train_pipeline
    from mlsky.config import describe

    out = args.out or default_weights_dir()
    print(describe())
    history = train_pipeline(out, seed=args.seed)
    best = max(history["thresholds"], key=lambda s: s["f1"])
    print(f"validation: precision {best['precision']:.3f} recall {best['recall']:.3f} F1 {best['f1']:.3f} "
          f"mean IoU {best['mean_iou']:.3f} (blob threshold {best['blob_threshold']}, GRU threshold "
          f"{best['gru_threshold']}, window {best['window']} channels)")
    print(f"checkpoints in {out}")
    return 0
