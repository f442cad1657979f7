"""The built book, read as a student reads it: every page of ``_build/html`` opened in Chromium.

Run after ``make book`` with ``make check-html`` (``pytest -m html``). It drives Debian's
``chromium`` (``apt-get install chromium``) through Playwright, headless, offline (every
request off this machine is refused, so the book must not need one), with a new empty
profile. A failure names the page and the element. One full-page screenshot per chapter
is saved under ``_build/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.html

REPO = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("MLSKY_BOOK_HTML", REPO / "_build" / "html"))
SCREENSHOTS = HTML.parent / "screenshots"
CHAPTERS = {p.stem for p in (REPO / "book").glob("*.ipynb")}
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = sorted(p for p in HTML.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts))
#: Widest PNG a figure may be: 7 in at 150 dpi, with a little room for a tight bounding box.
MAX_IMAGE_WIDTH = 1100

# Errors of third-party page scripts that no setting of the book can avoid, and why they are harmless.
KNOWN_JS_ERRORS = {
    "Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-thebe 0.3 adds its configuration script twice under Sphinx 7; the first copy is used",
}
REDIRECT = re.compile(r'<meta http-equiv="refresh" content="\d+;\s*url=([^"]+)"', re.I)

# A tqdm bar ("37%|███▋      | 37/100 [00:02<00:04, 15.1it/s]") or a Python warning's header line.
PROGRESS_BAR = re.compile(r"\d+%\|.*\||\d+/\d+ \[\d+:\d+|it/s\]")
WARNING = re.compile(r"\w*Warning\b|warnings\.warn\(")
# astropy's raw table display: a dtype row ("str5 float64 int64") or "Table length=".
DTYPE_ROW = re.compile(r"^\s*(?:(?:str|bytes|int|uint|float|complex|bool|object)\d*\s*){2,}$", re.M)

CHECKS = r"""
async () => {
  const article = document.querySelector("article") || document.body;
  const describe = el => {
    const cls = el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\s+/).join(".") : "";
    const id = el.id ? "#" + el.id : "";
    const section = el.closest("section[id]");
    return `<${el.tagName.toLowerCase()}${id}${cls}>` + (section ? ` in section #${section.id}` : "");
  };
  for (const img of document.images) img.loading = "eager";
  await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
  if (document.querySelector(".math")) {
    const start = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - start < 10000)
      await new Promise(r => setTimeout(r, 100));
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  }
  const outputs = [...article.querySelectorAll(".cell_output .output, .cell_output pre, div.output")];
  return {
    images: [...document.images].map(img => ({
      src: img.getAttribute("src"), alt: img.getAttribute("alt") || "", loaded: img.complete && img.naturalWidth > 0,
      naturalWidth: img.naturalWidth, inArticle: article.contains(img),
      numbered: !!(img.closest("figure") && img.closest("figure").querySelector("figcaption .caption-number")),
      where: describe(img.closest("figure") || img.parentElement)})),
    mathjax: !!window.MathJax,
    math: [...article.querySelectorAll(".math")].map(el => ({
      rendered: !!el.querySelector("mjx-container") || el.tagName.toLowerCase() === "mjx-container",
      error: !!el.querySelector("mjx-merror"), tex: el.textContent.slice(0, 60), where: describe(el)})),
    outputs: outputs.map(el => ({classes: el.className, text: el.innerText, where: describe(el)})),
    tracebacks: [...article.querySelectorAll(".output.traceback, .output.error, .cell_output .traceback")]
      .map(el => describe(el) + ": " + el.innerText.slice(0, 200)),
    wideTables: [...article.querySelectorAll("table")].filter(t => {
      const box = t.closest(".cell_output, .pst-scrollable-table-container, .table-wrapper") || t.parentElement;
      return t.scrollWidth > Math.min(box.clientWidth, article.clientWidth) + 2;
    }).map(t => describe(t) + ` (${t.scrollWidth} px in a ${article.clientWidth} px column): ` +
                (t.querySelector("tr") ? t.querySelector("tr").innerText.slice(0, 80) : "")),
    links: [...document.querySelectorAll("a[href]")].map(a => ({href: a.href, where: describe(a), text: a.innerText.slice(0, 40)})),
  };
}
"""


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name in ("id", "name") and value)


@cache
def _anchors(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(errors="replace"))
    return frozenset(parser.ids)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": 1280, "height": 900}, chromium_sandbox=False)
        # The book must work offline: nothing off this machine is fetched.
        context.route(re.compile(r"^(https?|wss?)://"), lambda route: route.abort())
        yield context
        context.close()


def _link_problems(page: Path, links: list[dict]) -> list[str]:
    problems = []
    for link in links:
        url = urlparse(link["href"])
        if url.scheme != "file":
            continue
        target = Path(unquote(url.path))
        if target.is_dir():
            target = target / "index.html"
        where = f"link {link['text']!r} {link['where']}"
        if not target.exists():
            problems.append(f"{where} points to a missing file {target.relative_to(HTML) if target.is_relative_to(HTML) else target}")
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _anchors(target):
            problems.append(f"{where} points to #{url.fragment}, which {target.name} does not have")
    return problems


def _output_problems(outputs: list[dict]) -> list[str]:
    problems = []
    for output in outputs:
        text, where = output["text"], output["where"]
        if "stderr" in output["classes"] and WARNING.search(text):
            problems.append(f"a warning in a stderr block {where}: {WARNING.search(text).group(0)}: {text[:160]!r}")
        if PROGRESS_BAR.search(text):
            problems.append(f"a progress bar in an output {where}: {text[:120]!r}")
        if "Traceback (most recent call last)" in text:
            problems.append(f"a traceback in an output {where}: {text[:160]!r}")
        if "Table length=" in text or DTYPE_ROW.search(text):
            problems.append(f"astropy's raw table display (dtype row or length line) {where}: use mlsky.book.format_table")
    return problems


def test_the_book_is_built():
    assert (HTML / "index.html").exists(), f"no built book in {HTML}: run `make book` first"
    missing = sorted(c for c in CHAPTERS if not (HTML / "book" / f"{c}.html").exists())
    assert not missing, f"chapters without a page: {missing}"


def page_problems(path: Path, browser, *, is_chapter: bool = False, screenshot: Path | None = None) -> list[str]:
    """Open one page in the browser and say what a reader would find wrong with it."""
    redirect = REDIRECT.search(path.read_text(errors="replace"))
    if redirect:  # the book's index.html only forwards to the first page
        target = (path.parent / unquote(redirect.group(1)).split("#")[0]).resolve()
        return [] if target.exists() else [f"forwards to {redirect.group(1)}, which does not exist"]
    page = browser.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda error: js_errors.append(str(error)))
    page.goto(path.as_uri(), wait_until="load")
    found = page.evaluate(CHECKS)
    problems = [f"JavaScript error: {e}" for e in js_errors if e not in KNOWN_JS_ERRORS]

    for img in found["images"]:
        if not img["loaded"]:
            problems.append(f"image {img['src']} did not load {img['where']}")
        if img["inArticle"] and img["src"] and img["src"].endswith(".png") and img["naturalWidth"] > MAX_IMAGE_WIDTH:
            problems.append(f"image {img['src']} is {img['naturalWidth']} px wide (at most {MAX_IMAGE_WIDTH}: "
                            f"7 in at 150 dpi) {img['where']}")
        if is_chapter and img["inArticle"]:
            alt = img["alt"]
            if len(alt.split()) < 5 or re.search(r"[/\\]|\.(png|svg|jpe?g)$", alt):
                problems.append(f"image {img['src']} has no real alt text ({alt!r}) {img['where']}")
            if not img["numbered"]:
                problems.append(f"image {img['src']} is not in a numbered figure with a caption {img['where']}")

    if found["math"]:
        if not found["mathjax"]:
            problems.append("the page has math but MathJax did not load")
        problems += [f"math not rendered by MathJax {m['where']}: {m['tex']!r}" for m in found["math"] if not m["rendered"]]
        problems += [f"MathJax could not typeset {m['where']}: {m['tex']!r}" for m in found["math"] if m["error"]]

    problems += [f"an error in a cell output {t}" for t in found["tracebacks"]]
    problems += _output_problems(found["outputs"])
    problems += [f"table wider than the column {t}" for t in found["wideTables"]]
    problems += _link_problems(path, found["links"])

    hrefs = [link["href"] for link in found["links"]]
    if is_chapter:
        for service in ("https://colab.research.google.com/github/", "https://mybinder.org/v2/gh/"):
            if not any(h.startswith(service) for h in hrefs):
                problems.append(f"no launch button to {service}")
        if not any(urlparse(h).path.endswith("references.html") and urlparse(h).fragment for h in hrefs):
            problems.append("no citation links to the bibliography (references.html)")
    if path.stem == "references" and page.locator(".citation").count() == 0:
        problems.append("the bibliography has no entries (.citation)")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot, full_page=True)
    page.close()
    return problems


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_page_reads_well_in_a_browser(path, browser):
    is_chapter = path.stem in CHAPTERS
    problems = page_problems(path, browser, is_chapter=is_chapter,
                             screenshot=SCREENSHOTS / f"{path.stem}.png" if is_chapter else None)
    assert not problems, f"{path.relative_to(HTML)}:\n  " + "\n  ".join(problems)


def test_the_check_finds_what_a_reader_would(tmp_path, browser):
    page = tmp_path / "chapter.html"
    page.write_text(
        '<html><body><article><section id="s"><p>see <a href="missing.html">this</a> and '
        '<a href="chapter.html#nowhere">that</a></p><img src="gone.png" alt="gone.png">'
        '<span class="math notranslate nohighlight">\\(x^2\\)</span>'
        '<div class="cell_output"><div class="output stderr"><pre>UserWarning: /home/me/x.py:3 converged badly</pre></div>'
        '<div class="output stream"><pre> 40%|####      | 4/10 [00:01<00:02, 3.1it/s]</pre></div>'
        '<div class="output text_plain"><pre>&lt;Table length=3&gt;\nname  z\nstr5 float64\n</pre></div></div>'
        '<div style="width:300px"><table><tr><td style="min-width:900px">wide</td></tr></table></div>'
        "</section></article></body></html>")
    problems = "\n".join(page_problems(page, browser, is_chapter=True))
    for expected in ("missing.html", "#nowhere", "image gone.png did not load", "no real alt text",
                     "not in a numbered figure", "MathJax did not load", "a warning in a stderr block",
                     "a progress bar", "raw table display", "table wider than the column", "no launch button"):
        assert expected in problems, f"the check missed: {expected}\n{problems}"
