"""Imitations of the online services, served on 127.0.0.1 by real HTTP servers.

- :class:`FakeSkyServer`: SkyServer's SQL search (``/drN/en/tools/search/x_results.aspx``),
  which runs the SQL it is sent on an SQLite database holding small versions of the SDSS
  tables the code queries and answers CSV as SkyServer does (a ``#Table1`` line, a header,
  rows, at most ``row_limit`` of them), and the image cutout service
  (``/drN/SkyServerWS/ImgCutout/getjpeg``), which answers a JPEG.
- :class:`FakeVizier`: VizieR's VOTable answer (``/viz-bin/votable``), over HTTPS (astroquery
  always asks VizieR over HTTPS) with a certificate made for the test.

Faults are queued per service, and each is played on one request: ``"html"`` (an error page
with status 200, as SkyServer reports a bad query), ``"500"``, ``"503"``, ``"truncated"``
(a body shorter than its Content-Length, then the connection closes), ``"slow"`` (no answer
for ``slow_seconds``) and, for cutouts, ``"cut_jpeg"`` (a JPEG without its end marker).
"""

from __future__ import annotations

import datetime
import io
import re
import sqlite3
import ssl
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

ERROR_PAGE = ("<!DOCTYPE html><html><head><title>SkyServer error</title><style>p {{color: red}}</style></head>"
              "<body><h1>SQL error</h1><p>{message}</p></body></html>")


def _jpeg(seed: float, size: int = 16) -> bytes:
    rng = np.random.default_rng(abs(hash(seed)) % 2**32)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


class _QuietServer(ThreadingHTTPServer):
    """Says nothing when a client leaves first: the faults "slow" and "truncated" are there to
    make clients give up, and a server thread still answering afterwards would otherwise print
    its BrokenPipeError into whichever test captures stderr at that moment."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server:
    """A threaded HTTP(S) server on 127.0.0.1 whose requests go to ``self.answer``."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.faults: deque[str] = deque()
        self.requests: list[str] = []
        self.slow_seconds = 3.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner._handle(self, parse_qs(urlparse(self.path).query))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                owner._handle(self, parse_qs(body))

            def log_message(self, *args):
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> None:
        self.requests.append(urlparse(handler.path).path)
        fault = self.take_fault(urlparse(handler.path).path, params)
        if fault == "slow":
            time.sleep(self.slow_seconds)
            fault = None
        if fault == "html":
            return self._send(handler, 200, "text/html", ERROR_PAGE.format(message="Timeout expired. The "
                              "timeout period elapsed prior to completion of the operation.").encode())
        if fault in ("500", "503"):
            return self._send(handler, int(fault), "text/plain", b"Service Unavailable")
        status, ctype, body = self.answer(urlparse(handler.path).path, params)
        if fault == "truncated":
            return self._send(handler, status, ctype, body, cut=True)
        if fault == "cut_jpeg":
            body = body[: len(body) // 2]
        self._send(handler, status, ctype, body)

    def take_fault(self, path: str, params: dict[str, list[str]]) -> str | None:
        return self.faults.popleft() if self.faults else None

    @staticmethod
    def _send(handler, status: int, ctype: str, body: bytes, cut: bool = False) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            handler.close_connection = True

    def answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, str, bytes]:
        raise NotImplementedError


class FakeSkyServer(_Server):
    """SkyServer's SQL search and cutout service, answering from an SQLite database.

    Attributes
    ----------
    db : sqlite3.Connection
        The tables (``SpecObj``, ``PhotoObj``, ``zooSpec``, ``galSpecExtra``...), filled by
        the test.
    row_limit : int
        The most rows one SQL answer holds (SkyServer: 500,000); longer answers are cut
        silently, as SkyServer cuts them.
    cutout_faults : dict
        ``"ra"`` (as sent, 6 decimals) -> queue of faults of that cutout only.
    """

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.lock = threading.Lock()
        self.row_limit = 500_000
        self.cutout_faults: dict[str, deque[str]] = {}
        self.sql: list[str] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def take_fault(self, path, params):
        if path.endswith("/getjpeg"):
            queue = self.cutout_faults.get(params["ra"][0])
            return queue.popleft() if queue else None
        return super().take_fault(path, params)

    def answer(self, path, params):
        if path.endswith("/en/tools/search/x_results.aspx"):
            return self._sql(params["cmd"][0])
        if path.endswith("/SkyServerWS/ImgCutout/getjpeg"):
            return 200, "image/jpeg", _jpeg(float(params["ra"][0]))
        return 404, "text/html", b"<html><body>404 Not Found</body></html>"

    def _sql(self, sql: str) -> tuple[int, str, bytes]:
        sql = sql.strip()  # astroquery sends the query with a leading space
        self.sql.append(sql)
        # SQL Server's "SELECT TOP n" is SQLite's "LIMIT n".
        top = re.search(r"(?i)^\s*SELECT\s+TOP\s+(\d+)\s", sql)
        if top:
            sql = sql[: top.start(1) - 4] + sql[top.end(1):] + f" LIMIT {top.group(1)}"
        try:
            with self.lock:
                cursor = self.db.execute(sql)
                rows = cursor.fetchmany(self.row_limit)
                names = [d[0] for d in cursor.description]
        except sqlite3.Error as err:
            return 200, "text/html; charset=utf-8", ERROR_PAGE.format(message=f"SQL error: {err}").encode()
        lines = ["#Table1", ",".join(names)] + [",".join(str(v) for v in row) for row in rows]
        return 200, "text/plain", ("\n".join(lines) + "\n").encode()


class FakeVizier(_Server):
    """VizieR's VOTable answer for one catalogue, over HTTPS with a certificate made here."""

    def __init__(self, votable: bytes, folder: Path):
        self.votable = votable
        self.ca_file = folder / "fake-vizier.pem"
        super().__init__(tls=self._tls(folder))

    def answer(self, path, params):
        if path == "/viz-bin/votable":
            return 200, "application/x-votable+xml", self.votable
        return 404, "text/html", b"<html>404</html>"

    def _tls(self, folder: Path) -> ssl.SSLContext:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = folder / "fake-vizier.key"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        return context
