"""``mlsky alma ...``: the ALMA case study on the command line.

Each action is a sub-command of ``alma``, registered by its own ``add_*`` function.

Examples
--------
.. code-block:: bash

    mlsky alma simulate --n 1000 --out cubes/ --seed 1   # a training set, in resumable shards
    mlsky alma simulate --n 20000 --out /scratch/set --scheduler tcp://node:8786   # on a Dask cluster
    mlsky alma export cubes/ --index 3                  # one cube as FITS, for CARTA or DS9
    mlsky alma compare-casa                             # the simulator against CASA-made cubes
    mlsky alma train --out weights/                     # all three networks, at MLSKY_SCALE
    mlsky alma detect cube.fits -o catalogue.ecsv       # the finder on any FITS cube
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def simulate(args: argparse.Namespace) -> int:
    """Run :func:`~mlsky.alma.sim.dataset.make_dataset` with the command line's arguments.

    The cubes are simulated on this machine's cores, or with ``--scheduler`` on a Dask
    cluster (one task per shard; see :mod:`mlsky.alma.sim.dask` for Slurm or PBS clusters
    through dask-jobqueue). The output is the same, byte for byte, either way.
    """
    from mlsky.alma.sim.dataset import make_dataset
    from mlsky.alma.sim.uv import ObservationConfig

    config = ObservationConfig(antenna_config=args.config, dec_deg=args.dec, freq_hz=args.freq_ghz * 1e9,
                               cell_arcsec=args.cell, weighting=args.weighting, robust=args.robust)
    manifest = make_dataset(args.n, args.out, seed=args.seed, workers=args.workers, shape=tuple(args.shape),
                            config=config, shard_size=args.shard_size, progress=not args.quiet, fits=args.fits,
                            scheduler=args.scheduler, timeout=args.timeout)
    counts = {}
    for shard in manifest["shards"]:
        counts[shard["split"]] = counts.get(shard["split"], 0) + len(shard["cubes"])
    print(f"{args.n} cubes of shape {tuple(args.shape)} in {args.out} "
          f"({', '.join(f'{k} {v}' for k, v in counts.items())}); manifest: {args.out}/manifest.json"
          + (f"; FITS in {args.out}/fits" if args.fits else ""))
    return 0


def add_simulate(sub) -> None:
    """Add ``mlsky alma simulate``."""
    p = sub.add_parser("simulate", help="simulate a training set of ALMA cubes (dirty, sky, truth) in shards",
                       description=simulate.__doc__.splitlines()[0])
    p.add_argument("--n", type=int, required=True, help="number of cubes")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-running resumes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data set (default 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes, or workers of --scheduler local (default: every core)")
    p.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256], metavar=("N_CHAN", "NY", "NX"),
                   help="cube shape (default 128 256 256)")
    p.add_argument("--shard-size", type=int, default=8, help="cubes per shard (default 8)")
    p.add_argument("--config", default="alma.cycle9.3.cfg",
                   help="antenna configuration: casadata name or .cfg path (default alma.cycle9.3.cfg)")
    p.add_argument("--dec", type=float, default=-30.0, help="declination, deg (default -30)")
    p.add_argument("--freq-ghz", type=float, default=230.0, help="centre frequency, GHz (default 230)")
    p.add_argument("--cell", type=float, default=0.1, help="pixel size, arcsec (default 0.1)")
    p.add_argument("--weighting", choices=["natural", "briggs"], default="briggs")
    p.add_argument("--robust", type=float, default=0.5)
    p.add_argument("--fits", action="store_true",
                   help="also write every cube as FITS (dirty, sky, beam) and its truth as ECSV, in OUT/fits")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="simulate on Dask: a scheduler address (tcp://host:8786) or 'local' (needs mlsky[dask])")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the scheduler (default 30)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=simulate)


def export(args: argparse.Namespace) -> int:
    """Write one cube of a simulated set as FITS (dirty cube, sky model, beam) and its truth as ECSV."""
    from mlsky.alma.sim.export import export_cube

    files = export_cube(args.folder, args.index, args.out, overwrite=args.overwrite)
    print("\n".join(str(f) for f in files))
    return 0


def add_export(sub) -> None:
    """Add ``mlsky alma export``."""
    p = sub.add_parser("export", help="write one cube of a simulated set as FITS for CARTA or DS9",
                       description=export.__doc__)
    p.add_argument("folder", type=Path, help="folder written by `mlsky alma simulate`")
    p.add_argument("--index", type=int, required=True, help="the cube's index in the set")
    p.add_argument("--out", type=Path, default=None,
                   help="prefix of the files (default FOLDER/fits/cube_IIIIII)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=export)


def compare_casa(args: argparse.Namespace) -> int:
    """Print the comparison of mlsky's simulator with the CASA reference cubes (15% agreement)."""
    from mlsky.alma.sim.casa import compare_simulator_with_casa

    table = compare_simulator_with_casa(args.names or None)
    cols = ["name", "bmaj_ratio", "bmin_ratio", "corr_len_ratio", "rms_ratio", "rms_ratio_min", "rms_ratio_max",
            "signal_slope", "residual_over_noise", "within_15pct"]
    for col in cols[1:-1]:
        table[col].format = ".3f"
    table[cols].pprint_all()
    return 0 if table["within_15pct"].all() else 1


def add_compare_casa(sub) -> None:
    """Add ``mlsky alma compare-casa``."""
    p = sub.add_parser("compare-casa", help="compare the simulator with cubes made by CASA (beam, noise)",
                       description=compare_casa.__doc__)
    p.add_argument("names", nargs="*", help="reference cubes (default: all), e.g. casa_1000")
    p.set_defaults(func=compare_casa)


def detect(args: argparse.Namespace) -> int:
    """Find and characterise the sources of a FITS cube and write their catalogue.

    The output is checked before any work, and nothing is written when anything fails.
    """
    from mlsky.alma.finder import detect as run_pipeline
    from mlsky.alma.io import check_catalogue_path, read_psf, write_catalogue

    output = check_catalogue_path(args.output, overwrite=args.overwrite)
    psf = read_psf(args.psf) if args.psf is not None else None
    catalogue = run_pipeline(args.cube, weights=args.weights, false_alarms=args.false_alarms, psf=psf)
    write_catalogue(catalogue, output)
    print(f"{len(catalogue)} sources -> {output}")
    return 0


def false_alarms_arg(text: str) -> float | None:
    """``--false-alarms``: a positive number, or ``none``."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number, or none to keep every candidate")
    return value


def add_detect(sub) -> None:
    """Add ``mlsky alma detect``."""
    from mlsky.alma.finder.pipeline import FALSE_ALARMS

    p = sub.add_parser("detect", help="find and characterise the sources of a FITS cube",
                       description=detect.__doc__.splitlines()[0])
    p.add_argument("cube", type=Path, help="dirty cube (FITS with RA/Dec/FREQ WCS)")
    p.add_argument("-o", "--output", type=Path, required=True, help="catalogue to write (.ecsv, .fits, .csv, .vot)")
    p.add_argument("--weights", type=Path, default=None,
                   help="folder written by `mlsky alma train` (default: the weights shipped with mlsky)")
    p.add_argument("--false-alarms", type=false_alarms_arg, default=FALSE_ALARMS, metavar="N",
                   help="keep a detection when the cube should hold at most N noise detections as significant, "
                        f"judged on the negated cube (default {FALSE_ALARMS}; none keeps every candidate)")
    p.add_argument("--psf", type=Path, default=None,
                   help="the cube's dirty beam (FITS, e.g. CASA's .psf exported): drop the candidates that a brighter "
                        "source's sidelobes explain, and fit sizes and fluxes through it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing catalogue")
    p.set_defaults(func=detect)


def train(args: argparse.Namespace) -> int:
    """Train Blobs Finder, Deep GRU and the ResNet battery at MLSKY_SCALE, on cubes simulated on
    the fly or streamed from a set made by ``mlsky alma simulate`` (``--data``).

    Under ``torchrun --nproc_per_node=N -m mlsky alma train --data DIR`` the ranks train with
    DistributedDataParallel, each on its own shards; rank 0 writes the checkpoints and prints.
    """
    import contextlib
    import sys

    from mlsky.alma.finder import distributed
    from mlsky.alma.sim.dataset import folder_lock
    from mlsky.alma.finder.pipeline import PipelineConfig
    from mlsky.alma.finder.train import default_weights_dir, train_pipeline
    from mlsky.config import describe

    out = args.out or default_weights_dir()
    if args.loader_workers < 0:
        raise ValueError(f"--loader-workers must be 0 or more, not {args.loader_workers}")
    rank, world = distributed.init_from_env()
    try:
        if rank == 0:
            print(describe() + (f"\ndistributed: {world} processes" if world > 1 else ""))
        Path(out).mkdir(parents=True, exist_ok=True)
        # One trainer per folder: rank 0 holds it for the whole distributed run.
        held = folder_lock(out) if rank == 0 else contextlib.nullcontext()
        with held, distributed.stop_cleanly():
            history = train_pipeline(out, seed=args.seed, data=args.data, skip_bad=args.skip_bad,
                                     loader_workers=args.loader_workers, progress=not args.quiet)
    except distributed.DistributedError as err:
        print(f"mlsky alma train: error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    if rank != 0:
        return 0
    # Report the point that was saved, not a re-ranking of the scan (ties broke differently).
    saved = PipelineConfig.read(out)
    best = next(s for s in history["thresholds"]
                if (s["window"], s["blob_threshold"], s["gru_threshold"])
                == (saved.window, saved.blob_threshold, saved.gru_threshold))
    print(f"validation: precision {best['precision']:.3f} recall {best['recall']:.3f} F1 {best['f1']:.3f} "
          f"mean IoU {best['mean_iou']:.3f} (blob threshold {best['blob_threshold']}, GRU threshold "
          f"{best['gru_threshold']}, window {best['window']} channels)")
    print(f"checkpoints in {out}")
    if args.ship:
        from mlsky.alma.finder.ship import ship_default_weights
        from mlsky.config import get_scale

        title = (f"ALMA finder ({saved.blobs_model} on matched-filtered images, Deep GRU), trained at "
                 f"MLSKY_SCALE={get_scale()} with seed {args.seed}")
        for name, digest in ship_default_weights(out, title=title).items():
            print(f"shipped {name} sha256 {digest}")
    return 0


def add_train(sub) -> None:
    """Add ``mlsky alma train``."""
    p = sub.add_parser("train", help="train Blobs Finder, Deep GRU and the ResNets on simulated cubes",
                       description=train.__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the checkpoints (default: the cache folder for MLSKY_SCALE); resumes there")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulations and of training")
    p.add_argument("--ship", action="store_true",
                   help="then export the weights (no optimiser state) as the package's default weights and "
                        "record their sha256 (maintainers, in a source checkout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--data", type=Path, default=None,
                   help="a folder made by `mlsky alma simulate`: stream its shards (train and validation splits) "
                        "instead of simulating cubes")
    p.add_argument("--skip-bad", action="store_true",
                   help="with --data: skip shards that fail their checksum or cannot be read (counted), "
                        "instead of stopping")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="with --data: DataLoader processes reading shards (default 0: in this process)")
    p.set_defaults(func=train)


def register(subparsers) -> None:
    """Add the ``alma`` command and its sub-commands to ``mlsky``'s parser."""
    parser = subparsers.add_parser("alma", help="ALMA source finding: simulate cubes, train, detect",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="alma_command", required=True)
    add_simulate(sub)
    add_export(sub)
    add_compare_casa(sub)
    add_train(sub)
    add_detect(sub)
