"""A REDCap-API-compatible HTTP server for one project (demo, tests, benchmarks), loopback only.

`RedcapEmulator` serves a ProjectDefinition at `/api/` with the standard library's threading HTTP
server; the API semantics live in `emulator_store`, optional seeded faults in `faults`. PyCap works
against it unchanged:

    with RedcapEmulator(project, token=TOKEN) as emu:
        redcap.Project(emu.url, TOKEN).export_records()
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

from imt_etl.errors import ConfigError
from imt_etl.redcap.emulator_store import ApiResponse, ProjectStore, handle_request
from imt_etl.redcap.faults import Fault, FaultProfile
from imt_etl.redcap.model import ProjectDefinition

log = logging.getLogger(__name__)

API_PATH = "/api/"
TOKEN_ENV = "REDCAP_API_TOKEN"
# The token the emulator accepts when none is given: a demo value, not a secret of any server.
DEMO_TOKEN = "DEMO0EMULATOR0TOKEN0000000000000"
DEFAULT_PROJECT = Path(__file__).resolve().parents[1] / "studies" / "imt" / "imt_project.xml"
MAX_BODY = 512 * 1024 * 1024  # refuse absurd uploads rather than read them into memory
_INDEXED_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\[(?P<index>\d*)\]$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{32}$")


def decode_form(body: bytes) -> dict[str, str | list[str]]:
    """Form-encoded POST body to params; `name[0]=a&name[1]=b` (or `name[]=`) become lists."""
    params: dict[str, str | list[str]] = {}
    indexed: dict[str, list[tuple[int, str]]] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        match = _INDEXED_RE.match(key)
        if match:
            items = indexed.setdefault(match["name"], [])
            index = int(match["index"]) if match["index"] else len(items)
            items.append((index, value))
        else:
            params[key] = value
    for name, items in indexed.items():
        params[name] = [v for _, v in sorted(items, key=lambda item: item[0])]
    return params


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._send(ApiResponse(405, "text/plain; charset=utf-8",
                               b"The REDCap API accepts POST requests only"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        started = time.perf_counter()
        if self.path.split("?", 1)[0] != API_PATH:
            self._send(ApiResponse(404, "text/plain; charset=utf-8", b"Not Found"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(ApiResponse(413, "text/plain; charset=utf-8", b"Request too large"))
            return
        body = self.rfile.read(length) if length else b""
        if "multipart/form-data" in (self.headers.get("Content-Type") or ""):
            self._send(ApiResponse(400, "application/json",
                                   b'{"error": "The emulator does not accept file uploads"}'))
            return
        params = decode_form(body)
        fault = self.server.faults.decide() if self.server.faults else None
        if fault is not None:
            # Logged before the client can see it, so the log is complete when the client gives up.
            log.info("fault %s injected on content=%s", fault.value, params.get("content"))
            if self._early_fault(fault):
                return
        response = handle_request(self.server.store, params, self.server.token)
        if fault is not None:
            self._late_fault(fault, response)
        else:
            self._send(response)
        log.debug("content=%s status=%d %d bytes in %.3fs", params.get("content"),
                  response.status, len(response.body), time.perf_counter() - started)

    # ---------------------------------------------------------------- faults

    def _early_fault(self, fault: Fault) -> bool:
        """Act on a fault that replaces the answer; True when the request is finished."""
        profile = self.server.faults
        assert profile is not None
        retry = {"Retry-After": str(profile.retry_after)}
        if fault is Fault.RESET:
            self.close_connection = True
            return True
        if fault is Fault.ERROR_500:
            self._send(ApiResponse(500, "text/html; charset=utf-8",
                                   b"<html><body>Internal Server Error</body></html>"))
        elif fault is Fault.ERROR_503:
            self._send(ApiResponse(503, "text/html; charset=utf-8",
                                   b"<html><body>Service Unavailable</body></html>"), retry)
        elif fault is Fault.ERROR_429:
            self._send(ApiResponse(429, "application/json",
                                   b'{"error": "Too many requests: API rate limit exceeded"}'),
                       retry)
        elif fault is Fault.SLOW:
            self.server.stopping.wait(profile.slow_seconds)
            return False
        elif fault is Fault.TIMEOUT:
            # The answer comes after the client gave up; a stopping server does not wait.
            self.server.stopping.wait(profile.timeout_seconds)
            return False
        else:
            return False
        return True

    def _late_fault(self, fault: Fault, response: ApiResponse) -> None:
        if fault is Fault.TRUNCATED:
            self._send(response, truncate=True)
        elif fault is Fault.MALFORMED:
            cut = response.body[: max(1, len(response.body) // 2)] + b"\x00<!-- proxy error"
            self._send(ApiResponse(200, response.content_type, cut))
        else:
            self._send(response)

    # ---------------------------------------------------------------- sending

    def _send(self, response: ApiResponse, headers: dict[str, str] | None = None,
              truncate: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        body = response.body[: len(response.body) // 2] if truncate else response.body
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away before the answer was sent")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: ProjectStore, token: str,
                 faults: FaultProfile | None):
        self.store = store
        self.token = token
        self.faults = faults if faults is not None and faults.active else None
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class RedcapEmulator:
    """A running REDCap-compatible API for one project; use as a context manager."""

    def __init__(self, project: ProjectDefinition | Path | str, *, token: str = DEMO_TOKEN,
                 host: str = "127.0.0.1", port: int = 0, faults: FaultProfile | None = None,
                 clock: Callable[[], datetime] = datetime.now,
                 load_time: datetime | None = None, allow_remote: bool = False) -> None:
        if not _TOKEN_RE.match(token):
            raise ConfigError("emulator token must be 32 letters or digits (as REDCap's are)")
        if not allow_remote and not is_loopback(host):
            raise ConfigError(f"emulator host {host!r} is not a loopback address; it serves "
                              "unprotected data over plain HTTP (pass allow_remote=True to "
                              "bind it anyway)")
        if not isinstance(project, ProjectDefinition):
            from imt_etl.redcap.project_xml import read_project_xml

            project = read_project_xml(Path(project))
        self.store = ProjectStore(project, clock=clock, load_time=load_time)
        self._token = token
        self._host = host
        self._port = port
        self._faults = faults
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        url = self.url if self._server else None
        return f"RedcapEmulator({self.store.project.title!r}, url={url!r})"

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        host, port = self._server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}{API_PATH}"

    @property
    def faults(self) -> FaultProfile | None:
        return self._server.faults if self._server is not None else self._faults

    def start(self) -> RedcapEmulator:
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), self.store, self._token, self._faults)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="redcap-emulator", daemon=True)
        self._thread.start()
        log.info("REDCap emulator serving %r at %s", self.store.project.title, self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("REDCap emulator stopped")

    def __enter__(self) -> RedcapEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cli_token(token: str | None) -> str:
    """The token to accept: --token, else $REDCAP_API_TOKEN, else the demo token."""
    return token or os.environ.get(TOKEN_ENV, "").strip() or DEMO_TOKEN


def run_emulator_cli(project_path: Path | None, host: str = "127.0.0.1", port: int = 8765,
                     token: str | None = None, faults: str = "",
                     allow_remote: bool = False,
                     stop: threading.Event | None = None) -> None:
    """Serve a project XML until interrupted (Ctrl-C) or `stop` is set; logs the URL only."""
    path = project_path or DEFAULT_PROJECT
    profile = FaultProfile.from_string(faults) if faults else None
    accepted = cli_token(token)
    emulator = RedcapEmulator(path, token=accepted, host=host, port=port, faults=profile,
                              allow_remote=allow_remote)
    with emulator:
        which = "the demo token" if accepted == DEMO_TOKEN else "the given token"
        log.info("REDCap API at %s (project %s, accepting %s%s)", emulator.url, path, which,
                 f", faults {faults}" if profile else "")
        try:
            (stop or threading.Event()).wait()
        except KeyboardInterrupt:
            log.info("interrupted")


def serve(project_path: Path | None, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None) -> None:
    """Blocking: serve a project XML (alias of run_emulator_cli without faults)."""
    run_emulator_cli(project_path, host, port, token)


def new_token() -> str:
    """A random REDCap-shaped token (32 upper-case hex digits) for tests."""
    return secrets.token_hex(16).upper()
