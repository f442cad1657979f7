"""``mlsky photoz``: forward feature selection for quasar photometric redshifts.

    mlsky photoz select --n-features 10 --n 5000 --derived
"""

from __future__ import annotations

import argparse
import warnings


def select(args: argparse.Namespace) -> int:
    """Run the forward selection on DR5Q quasars and print the selection path."""
    from sklearn.preprocessing import StandardScaler

    import mlsky
    from mlsky.data.sdss import load_dr5q
    from mlsky.photoz import ForwardSelector
    from mlsky.photoz.features import dr5q_features

    print(mlsky.describe())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space = dr5q_features(load_dr5q(args.n, seed=args.seed), derived=args.derived)
    for w in caught:
        print(f"note: {w.message}")
    # StandardScaler leaves a constant column (std 0, common in a small draw) as it is,
    # where dividing by its std would fill it with NaN.
    X = StandardScaler().fit_transform(space.to_numpy())
    print(f"{len(X)} quasars, {space.n_features} features, C({space.n_features}, {args.n_features}) = "
          f"{space.n_subsets(args.n_features):.3g} possible sets")
    selector = ForwardSelector(args.n_features, n_neighbors=args.k, cv=args.folds, scoring=args.scoring,
                               progress=True).fit(X, space.z)
    for row in selector.selection_path_:
        print(f"{row['step']:3d}  {space.names[row['feature']]:28s} {-row['score']:.5f} ± {row['score_std']:.5f}")
    return 0


def register(subparsers) -> None:
    """Add ``mlsky photoz select`` to the command line."""
    photoz = subparsers.add_parser("photoz", help="photometric redshifts by forward feature selection")
    sub = photoz.add_subparsers(dest="photoz_command", required=True)
    p = sub.add_parser("select", help="select features of DR5Q quasars with kNN forward selection")
    p.add_argument("--n-features", type=int, default=10, help="features to select (default 10)")
    p.add_argument("--n", type=int, default=5000, help="quasars drawn from DR5Q (default 5000)")
    p.add_argument("--derived", action="store_true", help="use the 203 derived features, not the 22 native")
    p.add_argument("--k", type=int, default=15, help="neighbours (default 15)")
    p.add_argument("--folds", type=int, default=3, help="cross-validation folds (default 3)")
    p.add_argument("--scoring", choices=("nmad", "eta", "crps"), default="nmad")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=select)
