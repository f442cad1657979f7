"""ALMA source finding: speed and detection quality of each finder against the real SoFiA-2.

Every finder runs on the same cubes, read once into memory, on this CPU:

- the real SoFiA-2 (``sofia`` from ``MLSKY_SOFIA`` or ``PATH``; one thread) at its default
  parameters, and tuned on validation cubes (``SOFIA2_GRID``: scfind threshold, spatial
  kernels, reliability; 12 runs of the binary per cube, about 7 s each at full size);
- the Python peers, each tuned on the same validation cubes: the SoFiA-like smooth-and-clip
  (the fallback without the binary), the blobcat-like flood fill, photutils segmentation;
- the finder that ships with mlsky (its default weights) as shipped; without its negated-cube
  test (``false_alarms=None``: every candidate of the networks, as before that test); with its
  thresholds tuned on the same validation cubes (:meth:`AlmaSourceFinder.fit`); given each
  cube's dirty beam (``psf``: the simulator's, or CASA's ``_psf.fits``), which drops the
  candidates that a brighter source's sidelobes explain and fits each source through the
  beam; and also a
  pipeline trained by ``mlsky alma train`` when ``--weights DIR`` names one (e.g. the paper's
  set-up).

Two test sets, never used for tuning: ``--n`` held-out simulated cubes (seeds from 7,000,000;
validation cubes from 8,000,000, far from the training seeds) of ``--shape`` (default
128 x 256 x 256, channels first), and the six CASA reference cubes (128 x 128 x 64), when
``MLSKY_DATA_DIR`` holds them. Matching is strict (:mod:`mlsky.alma.metrics`: within 0.6 beam
FWHM and ``max(2, 2 sigma_z)`` channels). Printed per finder: cubes per second, precision,
recall, recall of the sources of true peak SNR 3-6, F1, the SDC2 score per true source, and the ratios of F1 and speed to the default
SoFiA-2's; and how many detections the Python SoFiA-like finder shares with the real one.

With ``--peak-snr 3,6`` every source of the simulated cubes (validation and test) is scaled to
a true peak SNR drawn in that range (:func:`~mlsky.alma.sim.simulate.random_cube`): the faint
regime, which the log-uniform fluxes of the default skies give only a few sources of. The CASA
cubes are then left out.

With ``--casa-dir DIR`` the finders also run on the CASA cubes that
``benchmarks/alma_casa_cubes.py`` made in ``DIR`` (mlsky's skies observed with CASA 6.7 as the
reference cubes were): more CASA data, on which nothing was tuned.

Run: ``python benchmarks/alma_detect.py [--shape 128,256,256] [--n 12] [--n-val 4] [--peak-snr LO,HI] [--weights DIR]
[--casa-dir DIR] [--casa-only]``
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlsky
from mlsky.alma.finder import as_cube
from mlsky.alma.finder.pipeline import PipelineConfig
from mlsky.alma.metrics import compare_finders, recall_vs_snr
from mlsky.alma.peers import (
    BlobcatFinder,
    PhotutilsFinder,
    Sofia2Finder,
    SofiaFinder,
    SofiaNotFoundError,
    find_sofia,
    sofia_agreement,
)
from mlsky.alma.sim.casa import casa_reference_names, load_casa_reference
from mlsky.alma.sim.simulate import random_cube
from mlsky.data import DataUnavailableError

TEST_SEED = 7_000_000
VALIDATION_SEED = 8_000_000
REFERENCE = "SoFiA-2 (default)"
#: The shipped finder reading each cube's dirty beam (``Cube.psf``: the sidelobe test and the fit through
#: the beam).
WITH_PSF = "mlsky (shipped + PSF)"
SOFIA2_GRID = {"threshold": (5.0, 4.5, 4.0), "kernels_xy": ((0, 3, 6), (0, 3, 6, 9)), "reliability": (False, True)}


def shape_arg(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 8:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: give three sizes of at least 8, e.g. 128,256,256")
    return shape


def snr_range_arg(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        low = high = float("nan")
    if not (0 < low <= high):
        raise argparse.ArgumentTypeError(f"--peak-snr {text!r}: give LOW,HIGH with 0 < LOW <= HIGH, e.g. 3,6")
    return low, high


def tuned_finders(validation: list, weights: str | None) -> dict:
    """Name -> predict function of every finder, the tunable ones tuned on ``validation``."""
    finders = {}
    try:
        print(f"SoFiA-2: {find_sofia()}")
    except SofiaNotFoundError as err:
        print(f"SKIPPED SoFiA-2: {err}")
    else:
        finders[REFERENCE] = Sofia2Finder().predict
        finders["SoFiA-2 (tuned)"] = _tune("SoFiA-2", Sofia2Finder(), validation, SOFIA2_GRID)
    finders["SoFiA-like (Python)"] = _tune("SoFiA-like", SofiaFinder(), validation)
    finders["blobcat-like"] = _tune("blobcat-like", BlobcatFinder(), validation)
    finders["photutils"] = _tune("photutils", PhotutilsFinder(), validation)
    from mlsky.alma.finder import AlmaSourceFinder
    from mlsky.data.weights import shipped_weights

    shipped = shipped_weights("alma_finder")
    finders["mlsky finder (shipped)"] = AlmaSourceFinder(shipped).load().predict
    finders[WITH_PSF] = finders["mlsky finder (shipped)"]
    finders["mlsky (all candidates)"] = AlmaSourceFinder(shipped, false_alarms=None).load().predict
    finders["mlsky finder (tuned)"] = _tune("mlsky finder", AlmaSourceFinder(shipped).load(), validation)
    if weights:
        config = PipelineConfig.read(weights)
        measure = "fit" if config.filter_widths else "battery"  # the paper's set-up trains the battery
        finders[f"pipeline ({weights})"] = AlmaSourceFinder(weights, measure=measure, false_alarms=None).load().predict
    return finders


def _tune(name: str, finder, validation: list, grid: dict | None = None):
    t0 = time.perf_counter()
    finder.fit(validation, param_grid=grid)
    print(f"tuned {name:14s} in {time.perf_counter() - t0:6.1f} s: {finder.best_params_}")
    return finder.predict


def report(title: str, finders: dict, sims: list) -> None:
    cubes = [as_cube(s, psf=s.beam) for s in sims]
    truths = [s.truth for s in sims]
    # Each cube carries its dirty beam; every finder but WITH_PSF runs without it.
    run = {name: f if name == WITH_PSF else (lambda c, f=f: f(replace(c, psf=None))) for name, f in finders.items()}
    table, pairs, _ = compare_finders(run, cubes, truths)
    by_snr = recall_vs_snr(truths, pairs, edges=(3, 6))
    faint = dict(zip(by_snr["finder"], by_snr["SNR 3-6"]))
    print(f"\n{title}: {len(cubes)} cubes, {sum(len(t) for t in truths)} sources")
    if REFERENCE in finders:
        agree = sofia_agreement(cubes)
        print(f"Python SoFiA-like vs SoFiA-2, both at their defaults: {agree['n_common']} common detections; "
              f"{agree['reference_found']:.2f} of SoFiA-2's {agree['n_reference']} found, "
              f"{agree['other_confirmed']:.2f} of the Python finder's {agree['n_other']} confirmed, "
              f"Jaccard {agree['jaccard']:.2f}")
    print(f"{'finder':22s} {'cubes/s':>8s} {'TP':>4s} {'FP':>4s} {'P':>6s} {'R':>6s} {'R 3-6':>6s} {'F1':>6s} {'SDC2/src':>9s} "
          f"{'F1 ratio':>9s} {'speed ratio':>12s}")
    ref = table[table["finder"] == REFERENCE]
    for row in table:
        rate = 1.0 / row["s_per_cube"]
        if len(ref):
            f1_ratio = f"{row['f1'] / ref['f1'][0]:9.2f}" if ref["f1"][0] else f"{'-':>9s}"
            speed = f"{rate * ref['s_per_cube'][0]:11.2f}x"
        else:
            f1_ratio, speed = f"{'-':>9s}", f"{'-':>12s}"
        print(f"{row['finder']:22s} {rate:8.3f} {row['tp']:4d} {row['fp']:4d} {row['precision']:6.3f} {row['recall']:6.3f} "
              f"{faint[row['finder']]:6.3f} {row['f1']:6.3f} "
              f"{row['sdc2_per_source']:9.3f} {f1_ratio} {speed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=shape_arg, default=(128, 256, 256), help="simulated cube shape, channels first")
    parser.add_argument("--n", type=int, default=12, help="held-out simulated cubes (default 12)")
    parser.add_argument("--n-val", type=int, default=4, help="validation cubes to tune on (default 4)")
    parser.add_argument("--weights", default=None,
                        help="a pipeline folder from `mlsky alma train`: add it beside the shipped finder")
    parser.add_argument("--peak-snr", type=snr_range_arg, default=None,
                        help="scale every simulated source to a true peak SNR in LO,HI (e.g. 3,6); skips the CASA cubes")
    parser.add_argument("--casa-dir", type=Path, action="append", default=[],
                        help="also the CASA cubes in DIR made by benchmarks/alma_casa_cubes.py (mlsky skies, CASA "
                             "noise); may be given more than once")
    parser.add_argument("--casa-only", action="store_true",
                        help="skip the held-out simulated cubes (tune on the validation cubes, then the CASA cubes only)")
    args = parser.parse_args()
    casa_sets = {folder: casa_reference_names(folder) for folder in args.casa_dir}
    for folder, names in casa_sets.items():
        if not names:
            print(f"--casa-dir {folder}: no CASA cubes (casa_*_truth.json) there", file=sys.stderr)
            return 2
    print(mlsky.describe())
    sky = dict(shape=args.shape, peak_snr=args.peak_snr)
    faint = f", every source at a true peak SNR in {list(args.peak_snr)}" if args.peak_snr else ""
    validation = [random_cube(VALIDATION_SEED + i, **sky) for i in range(args.n_val)]
    print(f"tuning on {len(validation)} simulated cubes of shape {args.shape} (channels, y, x){faint}")
    finders = tuned_finders(validation, args.weights)
    if not args.casa_only:
        report(f"held-out simulated cubes of shape {args.shape}{faint}",
               finders, [random_cube(TEST_SEED + i, **sky) for i in range(args.n)])
    if args.peak_snr:
        return 0
    try:
        references = [load_casa_reference(n) for n in casa_reference_names()]
    except DataUnavailableError as err:
        print(f"\nSKIPPED the CASA reference cubes: {err}")
    else:
        report("CASA reference cubes", finders, references)
    for folder, names in casa_sets.items():
        report(f"CASA cubes of mlsky skies in {folder}", finders, [load_casa_reference(n, folder) for n in names])
    return 0


if __name__ == "__main__":
    sys.exit(main())
