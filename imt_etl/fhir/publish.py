"""Publish transaction Bundles to a FHIR server: in manifest order, with retries and backoff."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from imt_etl.errors import PublishError
from imt_etl.fhir.bundles import BundleInfo, read_manifest
from imt_etl.redcap.retry import MAX_RETRY_AFTER, backoff_delay

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_DIAGNOSTICS = 600  # characters of OperationOutcome text kept in an error message
_MAX_ISSUES = 5

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BundleOutcome:
    """What happened to one bundle: final HTTP status, entries sent, attempts and seconds."""

    file: str
    status: int
    entries: int
    attempts: int
    duration: float


@dataclass
class PublishReport:
    """Per-bundle outcomes, in the order they were sent."""

    base_url: str
    outcomes: list[BundleOutcome] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(o.entries for o in self.outcomes)

    @property
    def duration(self) -> float:
        return sum(o.duration for o in self.outcomes)


@dataclass(frozen=True)
class _Policy:
    """How one bundle is sent: retry budget, backoff, timeout and TLS checking."""

    max_retries: int
    backoff: float
    backoff_max: float
    timeout: float
    verify: bool
    sleep: Callable[[float], None]
    rng: random.Random


class _Retryable(Exception):
    """A failure worth another attempt (connection trouble, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def publish_bundles(
    bundle_dir: Path,
    base_url: str,
    *,
    session: requests.Session | None = None,
    max_retries: int = 6,
    backoff: float = 0.5,
    backoff_max: float = 30.0,
    timeout: float = 60.0,
    verify_tls: bool = True,
    allow_insecure_http: bool = False,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> PublishReport:
    """POST every bundle listed in `bundle_dir/manifest.json` to `base_url`, in order.

    Stops at the first bundle the server rejects (PublishError with its OperationOutcome);
    bundles after it are not sent. Retrying a transaction is safe because every entry is a
    PUT or DELETE by id (idempotent). The PublishError carries the partial report as `.report`.
    """
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    base = check_base_url(base_url, allow_insecure_http=allow_insecure_http)
    bundles = _verified_bundles(Path(bundle_dir))
    report = PublishReport(base)
    policy = _Policy(max_retries, backoff, backoff_max, timeout, verify_tls, sleep,
                     rng if rng is not None else random.Random())
    own = session is None
    http = session if session is not None else requests.Session()
    try:
        for done, (info, body) in enumerate(bundles):
            if progress:
                progress("publish", done, len(bundles))
            try:
                outcome = _publish_one(http, base, info, body, policy)
            except PublishError as error:
                error.report = report  # type: ignore[attr-defined]
                raise
            report.outcomes.append(outcome)
        if progress:
            progress("publish", len(bundles), len(bundles))
    finally:
        if own:
            http.close()
    log.info(
        "published %d bundles (%d entries) to %s in %.1fs",
        len(report.outcomes), report.entries, base, report.duration,
    )
    return report


def check_base_url(base_url: str, *, allow_insecure_http: bool = False) -> str:
    """The base URL without a trailing slash; plain http only on loopback unless allowed."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublishError(f"FHIR base URL must be http(s)://host/...: {base_url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        if not allow_insecure_http:
            raise PublishError(
                f"refusing to send study data over plain http to {parts.hostname}: "
                "use https (or allow insecure http explicitly)"
            )
        log.warning("publishing over plain http to %s: data is not encrypted", parts.hostname)
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _verified_bundles(bundle_dir: Path) -> list[tuple[BundleInfo, bytes]]:
    """Every bundle's bytes, checked against the manifest before anything is sent."""
    try:
        manifest = read_manifest(bundle_dir)
    except (OSError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise PublishError(f"cannot read the bundle manifest in {bundle_dir}: {exc}") from exc
    out = []
    for info in manifest.bundles:
        path = bundle_dir / info.file
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise PublishError(f"cannot read bundle {path}: {exc}") from exc
        if hashlib.sha256(body).hexdigest() != info.sha256:
            raise PublishError(f"bundle {path} does not match its manifest hash: rebuild it")
        out.append((info, body))
    return out


def _publish_one(
    http: requests.Session, base: str, info: BundleInfo, body: bytes, policy: _Policy
) -> BundleOutcome:
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            status = _post(http, base, info, body, timeout=policy.timeout, verify=policy.verify)
        except _Retryable as error:
            if attempt >= policy.max_retries:
                raise PublishError(
                    f"{info.file}: gave up after {attempt + 1} attempts: {error}"
                ) from error
            delay = _delay(error, attempt, policy)
            attempt += 1
            log.warning(
                "bundle %s: %s; retry %d of %d in %.2fs",
                info.file, error, attempt, policy.max_retries, delay,
            )
            policy.sleep(delay)
            continue
        duration = time.monotonic() - start
        log.info("bundle %s: HTTP %d, %d entries, %.2fs", info.file, status, info.entries, duration)
        return BundleOutcome(info.file, status, info.entries, attempt + 1, duration)


def _delay(error: _Retryable, attempt: int, policy: _Policy) -> float:
    """The server's Retry-After (capped) wins; otherwise exponential backoff, full jitter."""
    if error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_AFTER)
    return backoff_delay(attempt, base=policy.backoff, cap=policy.backoff_max, rng=policy.rng)


def _post(
    http: requests.Session, base: str, info: BundleInfo, body: bytes, *, timeout: float,
    verify: bool,
) -> int:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    try:
        response = http.post(base, data=body, headers=headers, timeout=timeout, verify=verify)
    except requests.exceptions.SSLError as exc:
        # A certificate problem does not go away by retrying.
        raise PublishError(f"{info.file}: TLS error talking to {base}: {exc}") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retryable(f"cannot reach {base}: {type(exc).__name__}") from exc
    status = response.status_code
    if status in RETRY_STATUSES:
        raise _Retryable(
            f"HTTP {status} {_summary(response)}", _retry_after(response.headers.get("Retry-After"))
        )
    if not 200 <= status < 300:
        raise PublishError(f"{info.file} rejected by {base} (HTTP {status}): "
                           f"{_summary(response)}")
    _check_response_bundle(response, info)
    return status


def _check_response_bundle(response: requests.Response, info: BundleInfo) -> None:
    """A 2xx must be a transaction-response whose every entry succeeded."""
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise PublishError(f"{info.file}: the server's answer is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("type") != "transaction-response":
        raise PublishError(f"{info.file}: expected a transaction-response Bundle, got "
                           f"{_describe(doc)}")
    entries = doc.get("entry") or []
    if len(entries) != info.entries:
        raise PublishError(f"{info.file}: sent {info.entries} entries, the server "
                           f"answered for {len(entries)}")
    for i, entry in enumerate(entries):
        status = str((entry.get("response") or {}).get("status", ""))
        if not status.startswith("2"):
            detail = _diagnostics(entry.get("outcome") or (entry.get("response") or {}).get(
                "outcome"))
            raise PublishError(f"{info.file}, entry {i}: status {status!r} {detail}")


def _describe(doc: Any) -> str:
    if isinstance(doc, dict):
        return f"{doc.get('resourceType')} of type {doc.get('type')!r}"
    return type(doc).__name__


def _summary(response: requests.Response) -> str:
    """The OperationOutcome's issues, or the start of the body when it is not one."""
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:200].strip() or "(empty body)"
    return _diagnostics(doc) or _describe(doc)


def _diagnostics(outcome: Any) -> str:
    """'severity code: diagnostics @ expression; ...' for the first few issues, trimmed."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = [i for i in outcome.get("issue") or [] if isinstance(i, dict)]
    parts = []
    for issue in issues[:_MAX_ISSUES]:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        line = f"{issue.get('severity', '?')} {issue.get('code', '?')}: {text}"
        parts.append(f"{line} @ {where}" if where and where not in text else line)
    if len(issues) > _MAX_ISSUES:
        parts.append(f"and {len(issues) - _MAX_ISSUES} more issues")
    joined = "; ".join(parts)
    return joined if len(joined) <= _MAX_DIAGNOSTICS else joined[: _MAX_DIAGNOSTICS - 3] + "..."


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from FHIR servers: use backoff)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
