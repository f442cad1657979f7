"""``mlsky data``: fetch a registered data set from its online service.

    mlsky data fetch galaxyzoo1 --rate 30     # resumable; Ctrl-C keeps what is whole
"""

from __future__ import annotations

import argparse
import sys


def fetch(args: argparse.Namespace) -> int:
    """Fetch a data set into the cache (or report the verified copy already there)."""
    from mlsky import data

    ds = data.get(args.name)
    # Verified: a damaged copy is an error, never skipped (--refetch replaces it).
    found = None if args.refetch else data.find_offline(args.name)
    if found is not None:
        print(f"{args.name}: verified copy in {found} (sha256 of every file checked); "
              "--refetch fetches it again from its service.")
        return 0
    options = {k: v for k, v in (("rate", args.rate), ("seed", args.seed), ("n", args.n)) if v is not None}
    print(f"{args.name}: fetching {ds.title} from {ds.source} into {data.staging_dir(args.name)}")
    try:
        folder = data.fetch_online(args.name, **options)
    except KeyboardInterrupt:
        staging = data.staging_dir(args.name)
        kept = sum(1 for p in staging.rglob("*") if p.is_file()) if staging.is_dir() else 0
        print(f"mlsky data fetch: interrupted; {kept} whole files kept in {staging}: run the same "
              "command again to resume.", file=sys.stderr)
        return 130
    data.verify(ds, folder)
    print(f"{args.name}: fetched into {folder}; sha256 of every file written to {folder / data.MANIFEST}.")
    for name, expected in ds.files.items():
        if (folder / name).is_file():
            same = data.sha256(folder / name) == expected
            print(f"  {name}: {'same as' if same else 'differs from'} the registered offline copy "
                  f"(sha256 {expected[:12]}...)")
    return 0


def register(subparsers) -> None:
    """Add ``mlsky data fetch`` to the command line."""
    from mlsky.data import REGISTRY

    parser = subparsers.add_parser("data", help="fetch the registered data sets from their services")
    sub = parser.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("fetch", help="fetch a data set into the cache, with a progress bar; re-running resumes")
    p.add_argument("name", choices=sorted(REGISTRY), metavar="NAME", help=f"one of {', '.join(sorted(REGISTRY))}")
    p.add_argument("--rate", type=float, help="requests a minute to SDSS (default 60, SkyServer's limit)")
    p.add_argument("--seed", type=int, help="seed of the sample, for data sets drawn from a larger table")
    p.add_argument("--n", type=int, help="objects to fetch, for data sets drawn from a larger table")
    p.add_argument("--refetch", action="store_true", help="fetch again even if a verified copy exists")
    p.set_defaults(func=fetch)
