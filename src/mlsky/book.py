"""What the chapters of the mlsky book share: one figure style, readable tables, glued results.

A chapter calls :func:`use_style` once, shows every result table through
:func:`format_table`, hands every number its prose quotes to :func:`glue`, and every figure to
:func:`glue_figure`, which refuses a figure a reader could not read on the page. The book's
build reports how long each chapter ran with :func:`execution_times` (``make book-times``).

What the book's checks (``tests/test_book.py``, ``tests/test_html.py``) expect of a chapter:

- a number in its markdown is pasted from the run, ``{glue:text}`name:.3f``` (the format
  ends in its type, ``d``, ``f``, ``g``, ``e``, ``%``); a published one is cited in the same
  sentence; one no run can change is listed in the notebook metadata ``mlsky.fixed_numbers``;
- a figure cell ends with ``glue_figure("fig_x", fig)`` and is tagged ``remove-output``; the
  markdown shows it with a ``{glue:figure} fig_x`` directive that has ``:alt:`` (what the
  figure shows, in words), ``:name: fig-x`` and a caption saying what to look at;
- a cell that asserts holds only the asserts and is tagged ``remove-cell``;
- every ``{exercise}`` has a ``{solution-start}`` (``:class: dropdown``) ... ``{solution-end}``
  with code cells between them, which the build runs.

Examples
--------
>>> from astropy.table import Table
>>> print(format_table(Table({"nmad": [0.0412345, 123456.7]})))  # doctest: +NORMALIZE_WHITESPACE
  nmad
--------
  0.0412
1.23e+05
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

#: Widest figure, in inches: the book's text column is about 7 inches at 96 pixels per inch.
MAX_FIGURE_WIDTH = 7.0
#: Smallest font, in points, of any text in a figure (at :data:`MAX_FIGURE_WIDTH` it shows at this size).
MIN_FONT_SIZE = 9.0
#: Resolution of the PNG figures the book shows.
FIGURE_DPI = 150
#: Seconds a chapter may run at the ``laptop`` scale on 2 CPU cores (a free Colab runtime).
LAPTOP_BUDGET = 8 * 60

_STYLE = {
    "figure.figsize": (6.5, 3.6),
    "figure.dpi": FIGURE_DPI,
    "savefig.dpi": FIGURE_DPI,
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
}


def use_style() -> None:
    """Set matplotlib up for the book: figures at most 7 in wide, fonts of 9 pt or more, 150 dpi.

    Call it after ``import matplotlib.pyplot``: Jupyter's inline backend sets its own
    resolution when pyplot is first imported, and this overrides it.
    """
    import matplotlib as mpl
    import matplotlib.pyplot  # noqa: F401  (loads the inline backend before its defaults are replaced)

    mpl.rcParams.update(_STYLE)


def check_figure(fig: Any) -> None:
    """Raise ``ValueError`` when a figure is too wide for the page or has text too small to read.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        A drawn or undrawn figure; it is drawn here so that every tick label exists.
    """
    from matplotlib.text import Text

    width = fig.get_figwidth()
    if width > MAX_FIGURE_WIDTH + 1e-9:
        raise ValueError(f"figure is {width:.1f} in wide: at most {MAX_FIGURE_WIDTH:g} in fits the page")
    fig.canvas.draw()
    small = sorted(
        {f"{t.get_text()!r} ({t.get_fontsize():.1f} pt)" for t in fig.findobj(Text)
         if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_FONT_SIZE}
    )
    if small:
        raise ValueError(f"text under {MIN_FONT_SIZE:g} pt cannot be read on the page: {', '.join(small[:5])}")


def _plain(value: Any) -> Any:
    # numpy scalars print as ``np.float64(0.1)``, which the book's {glue:text} role cannot format.
    return value.item() if isinstance(value, np.generic) else value


def glue(name: str, value: Any, display: bool = False) -> None:
    """Hand a result to the chapter's prose (myst-nb's ``glue``), so the text quotes the run.

    Parameters
    ----------
    name : str
        Key for ``{glue:text}`name:fmt``` in the chapter's markdown.
    value : object
        The result; numpy scalars are turned into Python numbers so that a format spec applies.
    display : bool
        Also show the value as the cell's output.
    """
    from myst_nb import glue as myst_glue

    myst_glue(name, _plain(value), display=display)


def glue_figure(name: str, fig: Any) -> None:
    """Check a figure (:func:`check_figure`), show it, and glue it for a ``{glue:figure}`` directive.

    The figure is shown as the cell's output too, so it appears in Colab and Binder; tag the
    cell ``remove-output`` so that the book shows it once, with its numbered caption.
    """
    import matplotlib.pyplot as plt

    check_figure(fig)
    glue(name, fig, display=True)
    plt.close(fig)


def significant(value: float, digits: int = 3) -> str:
    """Format a number to ``digits`` significant figures, in scientific notation only when very large or small.

    >>> significant(0.041234), significant(1234.5), significant(0.1), significant(1.2e-7)
    ('0.0412', '1230', '0.100', '1.20e-07')
    """
    if not math.isfinite(value) or value == 0:
        return str(value) if value else "0"
    rounded = float(f"{value:.{digits}g}")
    if not 1e-3 <= abs(rounded) < 1e5:
        return f"{rounded:.{digits - 1}e}"
    if abs(rounded) >= 10 ** (digits - 1):
        return f"{rounded:.0f}"
    return f"{rounded:#.{digits}g}"


class FormattedTable:
    """A table as a reader sees it: no dtype row, no length line, numbers to a few significant figures.

    Jupyter (and the book) show its HTML; ``print`` and ``str`` give the same table as text.
    """

    def __init__(self, table: Table):
        self.table = table

    def _repr_html_(self) -> str:
        return "\n".join(self.table.pformat(max_lines=-1, max_width=-1, show_dtype=False, html=True,
                                            tableclass="table mlsky-table"))

    def __str__(self) -> str:
        return "\n".join(self.table.pformat(max_lines=-1, max_width=-1, show_dtype=False))

    __repr__ = __str__


def format_table(table: Table, digits: int = 3, formats: Mapping[str, str] | None = None) -> FormattedTable:
    """Prepare a table for the page: floats to ``digits`` significant figures, no dtype row.

    Parameters
    ----------
    table : astropy.table.Table
        Left unchanged; its columns' own ``format`` is replaced.
    digits : int
        Significant figures of floating-point columns.
    formats : mapping of str to str, optional
        Format strings (``"{:.2e}"`` or ``".2e"``) for named columns, applied instead.

    Returns
    -------
    FormattedTable
        Displays as HTML in Jupyter and as text with ``print``.
    """
    shown = table.copy(copy_data=False)
    formats = dict(formats or {})
    unknown = set(formats) - set(shown.colnames)
    if unknown:
        raise KeyError(f"no column {sorted(unknown)} in the table (columns: {shown.colnames})")
    for name in shown.colnames:
        column = shown[name]
        if name in formats:
            column.format = formats[name]
        elif column.dtype.kind == "f":
            column.format = lambda value, digits=digits: "--" if value is np.ma.masked else significant(float(value), digits)
    return FormattedTable(shown)


def cache_key() -> str:
    """Name of the jupyter-cache that fits this run: the scale, the device and the package's source.

    jupyter-cache matches a chapter by its code cells alone, so a chapter run at another scale,
    on another device or with another version of the package would otherwise be taken from
    the cache as if it were current.
    """
    import mlsky
    from mlsky.config import get_device, get_scale

    package = Path(mlsky.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{get_scale()}-{get_device().type}-{digest.hexdigest()[:12]}"


def write_build_config(config: str | Path, out: str | Path, build_dir: str | Path = "_build") -> Path:
    """Write the book's configuration for this build, with its jupyter-cache named by :func:`cache_key`.

    Parameters
    ----------
    config : path
        The book's ``_config.yml``.
    out : path
        Where to write the build's configuration (``jupyter-book build --config``).
    build_dir : path
        The build folder; the cache is ``BUILD_DIR/.jupyter_cache/KEY``.

    Returns
    -------
    Path
        The cache folder.
    """
    import yaml

    settings = yaml.safe_load(Path(config).read_text())
    cache = (Path(build_dir) / ".jupyter_cache" / cache_key()).resolve()
    settings.setdefault("execute", {})["cache"] = str(cache)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, prefix=f".{out.name}.", delete=False) as tmp:
        yaml.safe_dump(settings, tmp, sort_keys=False)
    os.replace(tmp.name, out)
    return cache


def execution_times(cache: str | Path, root: str | Path = ".") -> Table:
    """How long each chapter took to execute, as jupyter-cache recorded it in the book's build.

    Parameters
    ----------
    cache : path
        The jupyter-cache folder of the build (``execute.cache`` in the book's configuration).
    root : path
        Chapters are named relative to this folder.

    Returns
    -------
    astropy.table.Table
        Columns ``chapter``, ``seconds`` and ``executed`` (UTC), one row per cached chapter,
        sorted by chapter. Empty when nothing has been executed into this cache.
    """
    from jupyter_cache import get_cache

    cache, root = Path(cache), Path(root).resolve()
    rows = []
    if (cache / "global.db").is_file():
        for record in get_cache(cache).list_cache_records():
            uri = Path(record.uri)
            chapter = uri.relative_to(root).as_posix() if uri.is_relative_to(root) else uri.as_posix()
            rows.append((chapter, float(record.data.get("execution_seconds", np.nan)),
                         record.created.isoformat(" ", "seconds")))
    table = Table(rows=sorted(rows) or None, names=("chapter", "seconds", "executed"),
                  dtype=(str, float, str))
    table["seconds"].format = ".0f"
    return table


def main(argv: list[str] | None = None) -> int:
    """The book's build steps: ``config`` writes the build's configuration, ``times`` prints how long each chapter ran."""
    import yaml

    parser = argparse.ArgumentParser(prog="python -m mlsky.book", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="write the build's configuration, with the cache for this scale and package")
    config.add_argument("config", type=Path, help="the book's _config.yml")
    config.add_argument("-o", "--out", type=Path, required=True, help="the build's configuration file to write")
    config.add_argument("--build-dir", type=Path, default=Path("_build"))
    times = sub.add_parser("times", help="execution time of each chapter, from the build's jupyter-cache")
    times.add_argument("config", type=Path, help="the build's configuration file (from `config`)")
    args = parser.parse_args(argv)
    if args.command == "config":
        if not args.config.is_file():
            print(f"{args.config}: no such file", file=sys.stderr)
            return 2
        print(f"jupyter-cache: {write_build_config(args.config, args.out, args.build_dir)}")
        return 0
    if not args.config.is_file():
        print(f"{args.config}: no build configuration (build the book first: make book)", file=sys.stderr)
        return 2
    cache = Path(yaml.safe_load(args.config.read_text())["execute"]["cache"])
    if not (cache / "global.db").is_file():
        print(f"{cache}: no jupyter-cache here (build the book first: make book)", file=sys.stderr)
        return 2
    table = execution_times(cache)
    print("\n".join(table.pformat(max_lines=-1, max_width=-1, show_dtype=False)))
    print(f"total: {np.nansum(table['seconds']):.0f} s for {len(table)} chapters")
    if cache.name.startswith("laptop-"):
        for row in table[table["seconds"] > LAPTOP_BUDGET]:
            print(f"{row['chapter']}: {row['seconds']:.0f} s, over the laptop budget of {LAPTOP_BUDGET} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
