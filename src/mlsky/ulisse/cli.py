"""``mlsky ulisse embed``, ``search`` and ``train-sky``: ULISSE from the command line.

Examples
--------
.. code-block:: bash

    mlsky ulisse embed cutouts/ -o features.npz
    mlsky ulisse embed survey/ -o features.npz --scheduler tcp://scheduler:8786   # on a Dask cluster
    mlsky ulisse search features.npz --prototype 587722981742084144 -n 20 --labels labels.csv
    mlsky ulisse search features.npz --prototype 587722981742084144 -n 10 --recursive 3
    mlsky ulisse embed cutouts/ -o sky.npz --backbone sky     # the encoder trained on the sky
    MLSKY_SCALE=laptop mlsky ulisse train-sky --ship --seed 0  # how its shipped weights were made
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np

from mlsky.ulisse.cutouts import list_images


def embed(args: argparse.Namespace) -> int:
    """Features of every image of a folder, written to an ``.npz``.

    The features are cached in shards keyed on the images' content: a killed run resumes from
    its last complete shard, and a re-run reads them back.
    """
    from mlsky.ulisse.features import FeatureExtractor

    if args.output.exists() and not args.overwrite:
        raise ValueError(f"{args.output}: already exists; use --overwrite to replace it.")
    if args.output.suffix != ".npz":
        raise ValueError(f"{args.output}: features are written as .npz; name the output *.npz.")
    paths = list_images(args.folder)
    extractor = FeatureExtractor(backbone=args.backbone, crop=args.crop, align=args.align, tta=args.tta,
                                 layer=args.layer, batch_size=args.batch_size, compile=args.compile, progress=True)
    extractor.fit()
    if extractor.backbone_.fallback:
        print(f"note: {extractor.backbone_.fallback}; running {extractor.backbone_.name} instead.")
    result = extractor.extract(paths, on_error="skip", scheduler=args.scheduler, shard_size=args.shard_size,
                               all_layers=False)
    result.save(args.output)
    print(f"{len(result.ids)} images -> {args.output} ({result.features.shape[1]} features, "
          f"backbone {result.backbone}, weights {result.weights}, {extractor.precision_})")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable files:")
        for path, reason in result.skipped:
            print(f"  {reason}")
    return 0


def _batch_size(text: str) -> int | str:
    """``--batch-size``: ``auto`` or a whole number (its range is checked by the extractor)."""
    return text if text == "auto" else int(text)


def _read_labels(path: Path, ids: set[str]) -> dict[str, str]:
    """Labels by id from a CSV whose first line is a header (id, label).

    Raises
    ------
    ValueError
        If the file has fewer than two columns, its first line is a data row (its first cell
        is one of ``ids``: without a header that row would be lost), or an id repeats.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels file.")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or len(header) < 2:
            raise ValueError(f"{path}: needs a header and two columns (id, label).")
        if header[0].strip() in ids:
            raise ValueError(f"{path}: the first line ({','.join(header)}) is a data row, not a header; "
                             "add a header line such as 'id,label'.")
        labels: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            if len(row) < 2:
                continue
            ident = row[0].strip()
            if ident in labels:
                raise ValueError(f"{path}: line {line} repeats the id {ident!r}.")
            labels[ident] = row[1].strip()
        return labels


def search(args: argparse.Namespace) -> int:
    """Neighbours of a prototype in a features file, with class fractions when labels are given."""
    from mlsky.ulisse.features import Features
    from mlsky.ulisse.search import SimilaritySearch

    if args.n < 1:
        raise ValueError(f"-n {args.n}: give a positive number of neighbours.")
    feats = Features.load(args.features)
    # An index, when one is built, is kept next to the features and reused while they match.
    engine = SimilaritySearch(n_neighbors=args.n, metric=args.metric, index=args.index).fit(
        feats.features, ids=feats.ids, index_file=args.features.with_suffix(f".{args.metric}-k{args.n}.index.npz"))
    try:
        row = engine.index_of(args.prototype)
    except KeyError as err:
        raise ValueError(f"{args.features}: {err.args[0]}") from None
    if args.recursive:
        table = engine.expand(row, n_neighbors=args.n, iterations=args.recursive)
    else:
        table = engine.query(row)
    labels = _read_labels(Path(args.labels), set(feats.ids)) if args.labels else None
    if labels is not None:
        unknown = sum(1 for k in labels if k not in set(feats.ids))
        if unknown == len(labels):
            raise ValueError(f"{args.labels}: none of its {len(labels)} ids is in {args.features}.")
        if unknown:
            print(f"note: {unknown} of {len(labels)} label rows name objects not in {args.features}; ignored.")
    print(f"search: {engine.method_}")
    print(f"prototype {args.prototype} ({feats.backbone}, {args.metric}); {len(table)} objects:")
    columns = ["id", "distance"] + (["iteration"] if args.recursive else [])
    print("  ".join(columns + (["label"] if labels else [])))
    for r in table:
        cells = [str(r["id"]), f"{r['distance']:.4f}"] + ([str(r["iteration"])] if args.recursive else [])
        if labels is not None:
            cells.append(labels.get(str(r["id"]), "?"))
        print("  ".join(cells))
    if labels is not None:
        mine = labels.get(str(args.prototype), "?")
        counts = Counter(labels.get(str(i), "?") for i in table["id"])
        known = [v for k, v in labels.items() if k in set(feats.ids)]
        print(f"class fractions among the {len(table)} found (prototype class {mine!r}):")
        for label, count in counts.most_common():
            base = np.mean([v == label for v in known]) if known else float("nan")
            print(f"  {label:>12s}: {count / len(table):.3f} (base rate {base:.3f})")
    return 0


def train_sky(args: argparse.Namespace) -> int:
    """Train the sky encoder without labels on a folder of cutouts (default: Galaxy Zoo 1).

    ``--ship`` exports it into the package and registers its sha256 (in a source checkout);
    ``-o FILE`` writes it elsewhere.
    """
    from mlsky.config import get_scale
    from mlsky.data import sha256
    from mlsky.ulisse.data import load_galaxyzoo1
    from mlsky.ulisse.sky.ship import ship_encoder
    from mlsky.ulisse.sky.train import FIELD, export_encoder, train_encoder, training_fields, training_plan

    if args.ship == (args.output is not None):
        raise ValueError("give either --ship (into the package) or -o FILE.pt.")
    if args.output is not None:
        if args.output.suffix != ".pt":
            raise ValueError(f"{args.output}: the encoder is written as .pt; name the output *.pt.")
        if args.output.exists() and not args.overwrite:
            raise ValueError(f"{args.output}: already exists; use --overwrite to replace it.")
    plan = training_plan()
    paths = list_images(args.folder) if args.folder is not None else list(load_galaxyzoo1()["path"])
    if plan.images is not None:
        paths = paths[:plan.images]
    print(f"decoding {len(paths)} cutouts ({'Galaxy Zoo 1' if args.folder is None else args.folder}) ...")
    fields = training_fields(paths, size=round(FIELD * plan.resolution), crop=plan.crop, progress=True)
    encoder, history = train_encoder(fields, plan, seed=args.seed, progress=True)
    if args.ship:
        title = (f"ULISSE sky encoder (SimCLR, no labels, on {len(paths)} Galaxy Zoo 1 cutouts), "
                 f"trained at MLSKY_SCALE={get_scale()} with seed {args.seed}")
        path = ship_encoder(encoder, history, title=title)
    else:
        path = export_encoder(encoder, history, args.output)
    print(f"{plan.epochs} epochs on {len(paths)} images in {history['seconds']:.0f} s ({history['precision']}); "
          f"loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}")
    print(f"encoder -> {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {sha256(path)})")
    return 0


def register(subparsers) -> None:
    """Add ``mlsky ulisse {embed,search,train-sky}`` to the ``mlsky`` command line."""
    parser = subparsers.add_parser("ulisse", help="one-shot similarity search in pretrained CNN features")
    sub = parser.add_subparsers(dest="ulisse_command", required=True)
    p = sub.add_parser("embed", help="features of a folder of cutouts -> .npz")
    p.add_argument("folder", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--backbone", default="auto",
                   help="auto, efficientnet_b0, tf_efficientnet_lite0, or sky (trained on Galaxy Zoo without labels)")
    p.add_argument("--crop", default="centre", choices=("centre", "measured"),
                   help="fixed central stamp (the paper) or one sized from the measured object")
    p.add_argument("--align", action="store_true", help="rotate/flip each measured stamp to a canonical pose")
    p.add_argument("--tta", type=int, default=1, choices=(1, 8), help="average over 8 rotations/flips")
    p.add_argument("--layer", default="head")
    p.add_argument("--batch-size", type=_batch_size, default="auto",
                   help="images per forward pass ('auto': 4 on a CPU, where small batches are fastest; 64 on a GPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network: faster per image after ~30 s of compiling (large folders)")
    p.add_argument("--shard-size", type=int, default=2048,
                   help="images per cached shard (a killed run resumes from its last complete shard)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="compute the shards on a Dask cluster: 'local' for a LocalCluster, or a scheduler "
                        "address (tcp://host:8786); needs mlsky[dask], and workers that see the same files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=embed)
    q = sub.add_parser("search", help="nearest neighbours of a prototype in a features file")
    q.add_argument("features", type=Path)
    q.add_argument("--prototype", required=True, help="id of the prototype image")
    q.add_argument("-n", type=int, default=20, help="neighbours (per query when recursive)")
    q.add_argument("--recursive", type=int, default=0, metavar="K", help="K rounds of recursive expansion")
    q.add_argument("--labels", type=Path, help="CSV (id, label) to report class fractions")
    q.add_argument("--metric", default="euclidean", choices=("euclidean", "cosine", "standardised"))
    q.add_argument("--index", default="auto", choices=("auto", "exact", "ivf"),
                   help="auto: exact below 200,000 objects, a faiss IVF index (saved next to the features) above")
    q.set_defaults(func=search)
    t = sub.add_parser("train-sky", help="train the sky encoder without labels on cutouts (MLSKY_SCALE sizes it)")
    t.add_argument("folder", type=Path, nargs="?", help="folder of cutouts (default: the Galaxy Zoo 1 cutouts)")
    t.add_argument("--ship", action="store_true",
                   help="export into the package and register its sha256 (a source checkout; the shipped weights)")
    t.add_argument("-o", "--output", type=Path, help="write the encoder to this .pt file instead")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    t.set_defaults(func=train_sky)
