"""The book's sources: chapters committed clean, in the table of contents, citing real keys, quoting their run.

Also the helpers the chapters share (``mlsky.book``) and the Colab/Binder install spec.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.table import Table

import mlsky
from mlsky import book

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "book").glob("*.ipynb"))


def test_there_are_chapters():
    assert CHAPTERS


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_the_colab_install_and_prints_its_scale(path):
    cells = json.loads(path.read_text())["cells"]
    first = cells[0]
    assert "remove-cell" in first["metadata"].get("tags", [])
    assert "google.colab" in "".join(first["source"])
    assert any("describe()" in "".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_every_chapter_is_in_the_toc():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    listed = {entry["file"] for part in toc.get("parts", [toc]) for entry in part["chapters"]}
    assert {f"book/{p.stem}" for p in CHAPTERS} | {"book/run_it_yourself", "book/references"} <= listed
    assert all((REPO / f"{name}.ipynb").exists() or (REPO / f"{name}.md").exists() for name in listed)


def test_every_citation_is_in_the_bibliography():
    keys = set(re.findall(r"@\w+\{([^,]+),", (REPO / "book" / "references.bib").read_text()))
    texts = [p.read_text() for p in [*CHAPTERS, REPO / "book" / "intro.md"]]
    cited = {k.strip() for t in texts for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", t) for k in group.split(",")}
    assert cited and cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_uses_no_api_cross_references(path):
    # The book has no API pages: a {class}`...` role is an unresolved reference, and the
    # book build (sphinx -n -W) fails on it.
    text = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
    assert not re.findall(r"\{(?:py:)?(?:class|func|meth|mod|attr|obj)\}`", text)


# --- The chapters follow the book's conventions (see mlsky.book) -------------------------------

PAGES = [*CHAPTERS, REPO / "book" / "intro.md", REPO / "book" / "run_it_yourself.md"]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _markdown(path):
    if path.suffix == ".md":
        return [path.read_text()]
    return ["".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown"]


def _code(path):
    return [c for c in _cells(path) if c["cell_type"] == "code"]


# A result figure: a decimal, a number of three or more digits (with or without thousands
# separators) or a percentage. Years, and counts below 100 (steps, chapters, k), are prose.
_RESULT_NUMBER = re.compile(r"(?<![\w.,-])(\d{1,3}(?:,\d{3})+|\d+\.\d+|\d{3,}|\d+\s?%)(?![\w])")
_YEAR = re.compile(r"(19|20)\d\d")
_STRIP = [
    re.compile(r"```(?!\{)[^\n]*\n.*?```", re.S),       # code blocks (directives keep their text)
    re.compile(r"^```\{[^}]+\}.*$", re.M),               # a directive's name and argument
    re.compile(r"^:(?!alt:)[\w-]+:.*$", re.M),           # a directive's options, but its alt text
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"\$\$.*?\$\$", re.S),
    re.compile(r"\$[^$]+\$"),
    re.compile(r"\{[\w:-]+\}`[^`]*`"),                   # roles: glue, cite, ref, doc
    re.compile(r"`[^`]*`"),
    re.compile(r"\]\([^)]*\)"),                          # link targets
]


def hand_typed_results(text: str, fixed: frozenset[str] = frozenset()) -> list[str]:
    """Numbers in markdown that look like results but are neither glued nor from a cited source.

    ``fixed`` lists numbers no run can change (a network's 1280 channels), which a chapter
    declares in its notebook metadata ``mlsky.fixed_numbers``.
    """
    found = []
    cited_before = False
    for paragraph in re.split(r"\n\s*\n", text):
        for pattern in _STRIP[:6]:
            paragraph = pattern.sub(" ", paragraph)
        is_table = paragraph.lstrip().startswith("|")
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z(*])", paragraph):
            # a published value, attributed in the same sentence (or a table, just before it)
            if "{cite" in sentence or (is_table and cited_before):
                continue
            for pattern in _STRIP[6:]:
                sentence = pattern.sub(" ", sentence)
            found += [f"{m.group(1)!r} in: {' '.join(sentence.split())[:120]}"
                      for m in _RESULT_NUMBER.finditer(sentence)
                      if not _YEAR.fullmatch(m.group(1)) and m.group(1) not in fixed]
        cited_before = "{cite" in paragraph
    return found


def test_the_hand_typed_result_check_finds_typed_numbers_and_passes_glued_ones():
    assert hand_typed_results("The run used 29,939 quasars.")
    assert hand_typed_results("It reached F1 0.71, and 30% more.")
    assert not hand_typed_results("The run used {glue:text}`n_quasars:,d` quasars, in 3 folds.")
    assert not hand_typed_results("Six experts classified 831 galaxies {cite}`naim1995`.")
    assert not hand_typed_results("The law $y = 1.5 x$ and `knn(k=15)` in 1995.")
    assert not hand_typed_results("A network of 1280 channels.", fixed=frozenset({"1280"}))
    assert not hand_typed_results("Table 4 of {cite}`naim1995`:\n\n| a | b |\n|---|---|\n| 0.53 | 0.61 |")


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_the_prose_quotes_no_hand_typed_result(path):
    # A number in the text comes from the cell that computed it ({glue:text}), or from a source
    # cited in the same sentence; a typed one goes stale when the run changes.
    fixed = frozenset(json.loads(path.read_text())["metadata"].get("mlsky", {}).get("fixed_numbers", [])
                      if path.suffix == ".ipynb" else [])
    found = [hit for text in _markdown(path) for hit in hand_typed_results(text, fixed)]
    assert not found, (f"{path.name}: glue these from the run, cite their source in the same sentence, or (a "
                       "number no run can change) list it in the notebook's metadata mlsky.fixed_numbers:\n"
                       + "\n".join(found))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_assert_cells_are_hidden_from_readers_and_still_run(path):
    shown = [i for i, c in enumerate(_cells(path)) if c["cell_type"] == "code"
             and re.search(r"^\s*assert\b", "".join(c["source"]), re.M)
             and not {"remove-cell", "remove-input"} & set(c["metadata"].get("tags", []))]
    assert not shown, f"{path.name}: cells {shown} assert in the reading flow; tag them remove-cell"
    skipped = [i for i, c in enumerate(_cells(path)) if c["metadata"].get("tags") and
               {"skip-execution", "raises-exception"} & set(c["metadata"]["tags"])]
    assert not skipped, f"{path.name}: cells {skipped} are not run by the build"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_goals_prerequisites_and_times(path):
    opening = _markdown(path)[0]
    assert "What you will learn" in opening, f"{path.name}: no learning goals in the opening cell"
    prerequisites = re.search(r"\*\*Prerequisites\*\*:?(.*?)(?:\n\s*\n|$)", opening, re.S)
    assert prerequisites, f"{path.name}: no **Prerequisites** paragraph in the opening cell"
    assert re.search(r"\]\(|\{doc\}|\{ref\}", prerequisites.group(1)), f"{path.name}: prerequisites without a link"
    times = re.search(r"\*\*Time\*\*:?(.*?)(?:\n\s*\n|$)", opening, re.S)
    assert times, f"{path.name}: no **Time** paragraph (expected run time at each scale) in the opening cell"
    assert all(f"`{scale}`" in times.group(1) for scale in ("ci", "laptop", "paper")), times.group(1)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_exercise_has_a_worked_solution_that_runs(path):
    # The chapter as one stream, each non-empty code cell a marker: a solution may open and
    # close in any markdown cell, and must hold code that the build runs.
    stream = "\n".join("".join(c["source"]) if c["cell_type"] == "markdown" else "\n<CODE CELL>\n"
                       for c in _cells(path) if "".join(c["source"]).strip())
    labels = re.findall(r"```\{exercise\}[^\n]*\n:label: ([\w-]+)", stream)
    assert labels, f"{path.name}: no {{exercise}} directives"
    for label in labels:
        solution = re.search(rf"```\{{solution-start\}} {label}\s*\n:class: dropdown\n(.*?)```\{{solution-end\}}",
                             stream, re.S)
        assert solution, f"{path.name}: exercise {label} has no {{solution-start}} {label} (:class: dropdown) ... {{solution-end}}"
        assert "<CODE CELL>" in solution.group(1), f"{path.name}: the solution of {label} has no code for the build to run"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_figures_are_checked_and_shown_with_caption_and_alt_text(path):
    code = "\n".join("".join(c["source"]) for c in _code(path))
    assert "use_style()" in code, f"{path.name}: call mlsky.book.use_style() before the first figure"
    text = "\n".join(_markdown(path))
    for cell in _code(path):
        source = "".join(cell["source"])
        if re.search(r"plt\.(subplots|figure)\(", source):
            assert "glue_figure(" in source, f"{path.name}: a figure not shown with glue_figure:\n{source[:200]}"
        for name in re.findall(r"glue_figure\(\s*[\"']([\w-]+)[\"']", source):
            assert "remove-output" in cell["metadata"].get("tags", []), \
                f"{path.name}: tag the cell gluing {name} remove-output (the book shows it in its figure)"
            directive = re.search(rf"```\{{glue:figure\}} {name}\n((?::[\w-]+:[^\n]*\n)*)\n*(.*?)```", text, re.S)
            assert directive, f"{path.name}: no {{glue:figure}} {name} directive"
            options, caption = directive.groups()
            alt = re.search(r"^:alt: (.+)$", options, re.M)
            assert alt and len(alt.group(1).split()) >= 5, f"{path.name}: figure {name} needs alt text that describes it"
            assert re.search(r"^:name: ", options, re.M), f"{path.name}: figure {name} needs :name: to be referred to"
            assert len(caption.split()) >= 8, f"{path.name}: figure {name} needs a caption saying what to look at"


def _install_spec(text: str) -> str | None:
    found = re.search(r"(mlsky\[[\w,]+\] @ git\+https://\S+?@[\w.]+)\"?\s*$", text, re.M)
    return found and found.group(1)


def test_binder_installs_the_release_of_this_version_with_cpu_torch():
    text = (REPO / "environment.yml").read_text()
    binder = _install_spec(text)
    assert binder and binder.endswith(f"@v{mlsky.__version__}"), f"environment.yml installs {binder}, not release v{mlsky.__version__}"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_colab_installs_what_binder_installs(path):
    binder = _install_spec((REPO / "environment.yml").read_text())
    colab = _install_spec("".join(_cells(path)[0]["source"]))
    assert colab == binder, f"{path.name}: the Colab cell installs {colab}, environment.yml {binder}"


def test_significant_figures():
    assert [book.significant(v) for v in (0.041234, 1234.5, 0.1, 1.2e-7, 123456.0, -0.5, 0.0)] == \
        ["0.0412", "1230", "0.100", "1.20e-07", "1.23e+05", "-0.500", "0"]


def test_format_table_shows_no_dtype_and_three_significant_figures():
    table = Table({"name": ["a", "b"], "n": [3, 40_000], "nmad": [0.0412345, 1.23456], "mse": [1e-9, 2e-3]})
    shown = book.format_table(table, formats={"mse": ".1e"})
    text, html = str(shown), shown._repr_html_()
    assert "0.0412" in text and "1.23" in text and "1.0e-09" in text and "0.0412345" not in text
    assert "float64" not in text + html and "int64" not in text + html and "length=" not in html
    assert table["nmad"].format is None, "the caller's table is left as it was"
    with pytest.raises(KeyError, match="nope"):
        book.format_table(table, formats={"nope": ".1f"})


def test_check_figure_refuses_wide_figures_and_small_text():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    book.use_style()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 2], label="kNN")
    ax.set(xlabel="redshift", ylabel="NMAD")
    book.check_figure(fig)
    ax.legend(fontsize=6)
    with pytest.raises(ValueError, match="6.0 pt"):
        book.check_figure(fig)
    fig.set_figwidth(16)
    with pytest.raises(ValueError, match="16.0 in wide"):
        book.check_figure(fig)
    plt.close(fig)


def test_build_config_names_its_cache_by_scale_and_package(tmp_path, monkeypatch):
    import yaml

    config = tmp_path / "_config.yml"
    config.write_text("title: t\nexecute:\n  execute_notebooks: cache\n")
    monkeypatch.setenv("MLSKY_DEVICE", "cpu")
    monkeypatch.setenv("MLSKY_SCALE", "ci")
    ci = book.write_build_config(config, tmp_path / "b" / "c.yml", tmp_path / "_build")
    monkeypatch.setenv("MLSKY_SCALE", "laptop")
    laptop = book.write_build_config(config, tmp_path / "b" / "c.yml", tmp_path / "_build")
    written = yaml.safe_load((tmp_path / "b" / "c.yml").read_text())
    assert ci != laptop and ci.name.startswith("ci-cpu-") and laptop.name.startswith("laptop-cpu-")
    assert written["execute"] == {"execute_notebooks": "cache", "cache": str(laptop)} and written["title"] == "t"


def test_execution_times_come_from_the_jupyter_cache(tmp_path, capsys):
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    chapter = tmp_path / "book" / "01_x.ipynb"
    chapter.parent.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(notebook, chapter)
    get_cache(tmp_path / "cache").cache_notebook_bundle(
        CacheBundleIn(notebook, str(chapter), data={"execution_seconds": 42.5}), check_validity=False)
    times = book.execution_times(tmp_path / "cache", root=tmp_path)
    assert list(times["chapter"]) == ["book/01_x.ipynb"] and np.isclose(times["seconds"][0], 42.5)
    assert len(book.execution_times(tmp_path / "empty")) == 0

    (tmp_path / "c.yml").write_text(f"execute:\n  cache: {tmp_path / 'cache'}\n")
    assert book.main(["times", str(tmp_path / "c.yml")]) == 0
    assert "total: 42 s for 1 chapters" in capsys.readouterr().out
    assert book.main(["times", str(tmp_path / "missing.yml")]) == 2

    # a laptop-scale cache names the chapters over their budget
    slow = tmp_path / "_build" / "laptop-cpu-0"
    get_cache(slow).cache_notebook_bundle(
        CacheBundleIn(notebook, str(chapter), data={"execution_seconds": book.LAPTOP_BUDGET + 60.0}), check_validity=False)
    (tmp_path / "c.yml").write_text(f"execute:\n  cache: {slow}\n")
    capsys.readouterr()
    assert book.main(["times", str(tmp_path / "c.yml")]) == 0
    assert f"over the laptop budget of {book.LAPTOP_BUDGET} s" in capsys.readouterr().out
