"""The SDSS SkyServer: SQL search and image cutouts, within the limits the service sets.

SkyServer's SQL search answers at most :data:`SQL_ROW_LIMIT` rows, stops a query after
:data:`SQL_TIME_LIMIT` seconds, allows :data:`RATE` requests a minute per client, and reports
a failed query as an HTML page with HTTP status 200. This module turns each of those into
something a long fetch can rely on:

- :func:`query_sql` asks astroquery with ``cache=False`` (astroquery would otherwise keep any
  200 answer, error pages included, for a week and replay it), sends a real timeout, checks
  the status and turns an HTML page into a :class:`ServiceError` that quotes what the
  service said;
- :func:`query_sql_pages` fetches a large selection in pages ordered by an id (``id > last``),
  checks the total against a ``COUNT(*)`` and refuses a page that reaches the row limit;
- :func:`download_jpeg` retries with exponential back-off and checks the JPEG start
  (``FFD8``) and end (``FFD9``) markers, so a truncated image is never kept;
- :class:`RateLimit` spaces requests so a fetch stays within the allowed rate.

The service's address is astroquery's ``astroquery.sdss.conf.skyserver_baseurl`` for both the
SQL search and the cutouts, so one setting points every request elsewhere (a mirror, or the
imitation of the service the tests run against).
"""

from __future__ import annotations

import html
import math
import re
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import requests
from astropy.table import Table, vstack
from astropy.utils.exceptions import AstropyWarning

from mlsky.config import progress_options
from mlsky.data import DataUnavailableError

#: Most rows one SkyServer SQL answer holds; a longer result is cut without notice.
SQL_ROW_LIMIT = 500_000
#: Seconds after which SkyServer stops a query.
SQL_TIME_LIMIT = 600.0
#: Rows asked for per page by :func:`query_sql_pages` (well below the row limit).
SQL_PAGE_SIZE = 100_000
#: Requests a minute SkyServer allows one client.
RATE = 60.0
#: Attempts after the first one for a request that failed in a way that may pass.
RETRIES = 4
#: Seconds waited before the first retry; doubled before each further one.
BACKOFF = 2.0
#: Seconds to wait for a cutout (connect, read).
CUTOUT_TIMEOUT = (10.0, 60.0)

T = TypeVar("T")


class ServiceError(DataUnavailableError):
    """SkyServer answered, but not with the data asked for (its message is quoted)."""


class _Transient(Exception):
    """A failure that may pass on a later attempt (server busy, connection lost, cut body)."""


class RateLimit:
    """Space calls so that at most ``per_minute`` of them start in any minute.

    Parameters
    ----------
    per_minute
        Allowed calls per minute (SkyServer: 60 per client); ``inf`` for no limit.
    """

    def __init__(self, per_minute: float = RATE):
        if not per_minute > 0:
            raise ValueError(f"rate={per_minute}: a rate must be a positive number of requests a minute.")
        self.interval = 60.0 / per_minute
        self._next = time.monotonic()

    def wait(self) -> None:
        """Sleep until the next call is allowed."""
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


def base_url(data_release: int = 16) -> str:
    """The SkyServer address of a data release (from astroquery's configuration)."""
    from astroquery.sdss import conf

    return f"{conf.skyserver_baseurl.rstrip('/')}/dr{int(data_release)}"


def _said(text: str, limit: int = 300) -> str:
    """The words of an HTML or text answer, without tags, shortened to ``limit`` characters."""
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def check_answer(response: requests.Response, what: str) -> None:
    """Raise if ``response`` is not data: an HTTP error, or an HTML (error) page.

    Raises
    ------
    _Transient
        On a 429 or 5xx status, which may pass on a later attempt.
    ServiceError
        On any other error status, or an HTML page where data was asked for (SkyServer
        reports a failed query so, with status 200), quoting what the service said.
    """
    def said() -> str:
        return _said(response.text) if response.content else "an empty answer"

    if response.status_code == 429 or response.status_code >= 500:
        raise _Transient(f"HTTP {response.status_code} {response.reason}: {said()}")
    if response.status_code >= 400:
        raise ServiceError(f"{what}: SkyServer answered HTTP {response.status_code} {response.reason}: {said()}")
    head = response.content[:512].lstrip().lower()
    if "html" in response.headers.get("Content-Type", "") or head.startswith((b"<!doctype", b"<html")):
        raise ServiceError(f"{what}: SkyServer sent an error page instead of data: {said()}")


def with_retries(call: Callable[[], T], what: str, *, retries: int = RETRIES, backoff: float = BACKOFF) -> T:
    """``call()``, tried again after ``backoff``, 2 ``backoff``... seconds while it fails transiently.

    Connection errors, timeouts, bodies cut short and 429/5xx answers count as transient;
    anything else (an error page, a 404) is raised at once.

    Raises
    ------
    ServiceError
        When every attempt failed, with the last failure.
    """
    attempt = 0
    while True:
        try:
            return call()
        except (_Transient, requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as err:
            if attempt == retries:
                raise ServiceError(f"{what}: failed {retries + 1} times; the last time: "
                                   f"{type(err).__name__}: {err}") from err
            time.sleep(backoff * 2**attempt)
            attempt += 1


def query_sql(sql: str, *, data_release: int = 16, timeout: float = SQL_TIME_LIMIT + 30,
              rate: RateLimit | None = None, retries: int = RETRIES, backoff: float = BACKOFF) -> Table:
    """Run ``sql`` on SkyServer's SQL search and return its answer as a Table.

    Parameters
    ----------
    sql
        The query (SkyServer's SQL Server dialect).
    data_release
        The SDSS data release.
    timeout
        Seconds to wait for the answer (default: just over the service's own limit, since
        SkyServer stops the query itself at :data:`SQL_TIME_LIMIT`).
    rate
        Shared limit of the requests of a fetch; None for none.
    retries, backoff
        See :func:`with_retries`.

    Returns
    -------
    astropy.table.Table
        Possibly with no rows. Nothing is cached: a failed answer is never replayed.

    Raises
    ------
    ServiceError
        An error page, an HTTP error, an answer that is not a readable CSV table (cut short),
        or a service that did not answer within ``timeout`` (not retried: the same query
        would be as slow again).
    """
    from astroquery.sdss import SDSS

    what = f"SkyServer DR{data_release} SQL query ({' '.join(sql.split())[:120]})"

    def ask() -> requests.Response:
        if rate is not None:
            rate.wait()
        try:
            response = SDSS.query_sql_async(sql, timeout=timeout, data_release=data_release, cache=False)
        except requests.ReadTimeout as err:  # the same query would be as slow again: not retried
            raise ServiceError(f"{what}: no answer within {timeout:g} s ({err}).") from err
        check_answer(response, what)
        return response

    try:
        response = with_retries(ask, what, retries=retries, backoff=backoff)
    except requests.RequestException as err:
        raise ServiceError(f"{what}: {type(err).__name__}: {err}") from err
    text = response.text
    try:
        with warnings.catch_warnings():
            # SDSS ids above 2**63 (specObjIDs of high plate numbers) overflow int64 and are read
            # as text; they are made unsigned integers below, so every page has the same type.
            warnings.filterwarnings("ignore", message="OverflowError converting to IntType", category=AstropyWarning)
            table = Table.read(text, format="ascii.csv", comment="#", guess=False)
    except Exception as err:  # astropy's readers raise several types; all mean "not a table"
        raise ServiceError(f"{what}: the answer is not a readable CSV table (cut short?): {err}. "
                           f"It begins: {_said(text, 160)!r}") from err
    for name in table.colnames:
        if name.lower().endswith("objid") and len(table):
            table[name] = np.asarray(table[name]).astype(np.uint64)
    return table


def query_sql_pages(select: str, where: str, id_column: str, *, data_release: int = 16,
                    page_size: int = SQL_PAGE_SIZE, row_limit: int = SQL_ROW_LIMIT,
                    rate: RateLimit | None = None, progress: bool = True, **kwargs) -> Table:
    """All rows of ``SELECT {select} {where}``, fetched in pages of ``page_size`` ordered by an id.

    Each page asks for ``TOP page_size`` rows with ``id_column > `` the last id of the
    previous page, ordered by ``id_column``, so no page can reach the service's row limit
    and no row is fetched twice or skipped. The number of rows is counted first
    (``COUNT(*)``) and the pages must add up to it.

    Parameters
    ----------
    select
        The column list, as after ``SELECT``.
    where
        ``FROM ... WHERE ...`` (a WHERE clause is required; pages add to it).
    id_column
        A unique integer column of the result, as written in SQL (``s.specObjID``).
    page_size
        Rows per page; must be below ``row_limit``.
    row_limit
        The most rows the service returns in one answer.
    **kwargs
        Passed to :func:`query_sql` (timeout, retries, backoff).

    Raises
    ------
    ServiceError
        A page holds ``row_limit`` rows (it may have been cut), or the pages do not add up
        to the count, or a query failed.
    """
    from tqdm.auto import tqdm

    if not 0 < page_size < row_limit:
        raise ValueError(f"page_size={page_size}: pages must hold fewer rows than the service's limit "
                         f"({row_limit}), or a cut page could not be told from a full one.")
    counted = query_sql(f"SELECT COUNT(*) AS n {where}", data_release=data_release, rate=rate, **kwargs)
    if len(counted) != 1 or "n" not in counted.colnames:
        raise ServiceError(f"SkyServer DR{data_release}: the COUNT(*) query gave no count: {counted}")
    total = int(counted["n"][0])
    pages: list[Table] = []
    last = None
    with tqdm(total=total, unit="rows", desc="SQL pages", **progress_options(progress)) as bar:
        while sum(len(p) for p in pages) < total:
            after = "" if last is None else f" AND {id_column} > {last}"
            page = query_sql(f"SELECT TOP {page_size} {select} {where}{after} ORDER BY {id_column}",
                             data_release=data_release, rate=rate, **kwargs)
            if len(page) >= row_limit:
                raise ServiceError(f"SkyServer DR{data_release}: a page holds {len(page)} rows, the service's "
                                   "limit: it may have been cut. Use smaller pages.")
            if len(page) == 0:
                break
            pages.append(page)
            bar.update(len(page))
            last = int(page[_column_name(page, id_column)][-1])
    fetched = sum(len(p) for p in pages)
    if fetched != total:
        raise ServiceError(f"SkyServer DR{data_release}: the pages hold {fetched} rows, but COUNT(*) "
                           f"counted {total}: the answer is incomplete (or the table changed).")
    return vstack(pages, metadata_conflicts="silent") if pages else Table()


def _column_name(page: Table, id_column: str) -> str:
    """The name in ``page`` of the SQL column ``id_column`` (``s.specObjID`` -> ``specObjID``)."""
    name = id_column.rsplit(".", 1)[-1]
    for column in page.colnames:
        if column.lower() == name.lower():  # SQL names are case-insensitive
            return column
    raise ServiceError(f"the SkyServer answer has no column {name!r} to page on (columns: {page.colnames}).")


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` is a whole JPEG: the start (``FFD8``) and end (``FFD9``) markers."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\0\r\n ")[-2:] == b"\xff\xd9"


def download_jpeg(session: requests.Session, url: str, params: dict, what: str, *,
                  rate: RateLimit | None = None, timeout=CUTOUT_TIMEOUT, retries: int = RETRIES,
                  backoff: float = BACKOFF) -> bytes:
    """A JPEG from ``url``, retried with back-off while the service is busy or the image is cut.

    Raises
    ------
    ServiceError
        When all attempts failed, or the service answered something else than an image.
    """

    def get() -> bytes:
        if rate is not None:
            rate.wait()
        response = session.get(url, params=params, timeout=timeout)
        check_answer(response, what)
        if not response.content.startswith(b"\xff\xd8"):
            raise ServiceError(f"{what}: the cutout service sent no JPEG: {_said(response.text, 160)!r}")
        if not is_jpeg(response.content):
            raise _Transient(f"the JPEG is cut short ({len(response.content)} bytes, no end marker)")
        return response.content

    return with_retries(get, what, retries=retries, backoff=backoff)


#: Prime modulus of :func:`sample_key` (ids are reduced modulo it, then mapped affinely).
SAMPLE_PRIME = 1_000_003


def sample_key(id_expr: str, seed: int) -> str:
    """An SQL expression that puts rows in a pseudo-random order of their id, one order per seed.

    ``((id % p) * a + b) % p`` with ``a, b`` drawn from ``seed``: an affine map modulo the
    prime ``p``, so different seeds order the rows differently (a shift of the id alone,
    ``(id + seed) % p``, only rotates one order, and two seeds' first rows nearly coincide).
    SDSS ids number objects along imaging runs and plates, so the ids reduced modulo ``p``
    spread any selection over the whole sky.
    """
    rng = np.random.default_rng(seed)
    a, b = int(rng.integers(1, SAMPLE_PRIME)), int(rng.integers(0, SAMPLE_PRIME))
    return f"((({id_expr}) % {SAMPLE_PRIME}) * {a} + {b}) % {SAMPLE_PRIME}"


def query_sample(select: str, where: str, id_expr: str, n: int, *, seed: int = 0, data_release: int = 16,
                 rate: RateLimit | None = None, **kwargs) -> Table:
    """``n`` rows of ``SELECT {select} {where}`` drawn across the whole selection with ``seed``.

    The rows are counted first; the query then keeps only the rows whose :func:`sample_key`
    falls in a fraction of its range sized for about twice ``n`` rows (widened in the rare case
    that too few fall in it), and orders just those, so the service never sorts the whole
    selection (SkyServer stops a query after
    :data:`SQL_TIME_LIMIT` seconds).

    Parameters
    ----------
    where
        ``FROM ... WHERE ...`` (a WHERE clause is required; the sample adds to it).
    id_expr
        A unique integer id of the rows, as an SQL expression.
    **kwargs
        Passed to :func:`query_sql` (timeout, retries, backoff).

    Raises
    ------
    ValueError
        If the selection holds fewer than ``n`` rows.
    ServiceError
        If a query failed, or the answer does not hold ``n`` rows.
    """
    counted = query_sql(f"SELECT COUNT(*) AS n {where}", data_release=data_release, rate=rate, **kwargs)
    total = int(counted["n"][0])
    if not 0 < n <= total:
        raise ValueError(f"n={n} rows asked for; the selection holds {total}.")
    key = sample_key(id_expr, seed)
    cut = min(SAMPLE_PRIME, math.ceil(SAMPLE_PRIME * 2 * n / total))
    while True:
        table = query_sql(f"SELECT TOP {int(n)} {select} {where} AND {key} < {cut} ORDER BY {key}",
                          data_release=data_release, rate=rate, **kwargs)
        if len(table) >= n or cut == SAMPLE_PRIME:
            break
        cut = min(SAMPLE_PRIME, 2 * cut)  # too few rows fell below the cut: widen it
    if len(table) != n:
        raise ServiceError(f"SkyServer DR{data_release}: the sample query returned {len(table)} rows, not {n}.")
    return table
