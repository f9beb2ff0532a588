"""The REDCap API client: PyCap underneath, HTTP status checks, retries and token-safe errors.

This is the only module of the package that imports `redcap` (PyCap 2.7). PyCap posts through
`requests` and detects errors from the response body only; it never looks at the HTTP status.
We therefore hand PyCap a `requests` response hook (via its request kwargs, the one place every
call goes through) that inspects the status before PyCap parses the body, and we translate
everything PyCap or `requests` raise into `imt_etl.errors`:

- 401/403                          -> RedcapAuthError, never retried
- 408/429/5xx (not 501), timeouts,
  connection resets, bad JSON      -> RedcapError(retryable=True) (429/503 honour Retry-After)
- other 4xx, 3xx, 501, an error
  body on a 2xx answer             -> RedcapError(retryable=False) with the server's error text

Every message that can leave this module goes through `_scrub`, which removes the token: the
token travels in the POST body, which `requests` keeps on its exceptions and a server may echo.

REDCap has no clock endpoint, so the client offers no server time: the incremental watermark is
the caller's run time minus a safety overlap (see `imt_etl.redcap.extract.plan_sync`).
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import redcap
import requests

from imt_etl.config import Settings
from imt_etl.errors import ConfigError, RedcapAuthError, RedcapError
from imt_etl.redact import scrub
from imt_etl.redcap.retry import call_with_retries

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{32}$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_ERROR_TEXT_MAX = 500
# REDCap's answer when a longitudinal-only content is asked of a classic project.
_CLASSIC_RE = re.compile(r"classic project", re.IGNORECASE)
# How a record deletion shows in the log's `action`: "Deleted Record 12" (REDCap 9-14 also write
# "Delete record 12"); a trailing "(API)" or "(Auto calculation)" marks the source.
_DELETE_ACTION_RE = re.compile(r"^\s*delete(?:d)?\s+record\s+(.+?)\s*(?:\([^)]*\))?\s*$", re.I)


def validate_url(url: str, *, allow_insecure: bool = False) -> str:
    """Check the API URL: ends in /api/, https unless loopback (or explicitly allowed)."""
    parts = urlsplit(url)
    if not url.endswith("/api/") or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"REDCap URL must be http(s)://host/.../api/ (got {url!r})")
    if parts.query or parts.fragment:
        raise ConfigError(f"REDCap URL must not carry a query or fragment (got {url!r})")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        if not allow_insecure:
            raise ConfigError(
                f"REDCap URL {url!r} is not https: the token would travel in clear text "
                "(`imt-etl sync --insecure` or allow_insecure=True accepts that)"
            )
        log.warning("REDCap URL %s is not https: the API token travels unencrypted", url)
    return url


def validate_token(token: str) -> str:
    """A REDCap API token is 32 letters or digits (checked here: PyCap's asserts vanish with -O)."""
    if not isinstance(token, str) or not _TOKEN_RE.match(token):
        raise ConfigError("the REDCap API token must be 32 letters or digits")
    return token


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def server_error_text(text: str) -> str:
    """The server's error message from a body: JSON {"error": ...}, XML <error>, or plain text."""
    stripped = text.strip()
    try:
        parsed = json.loads(stripped)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:
        return str(parsed["error"])
    match = re.search(r"<error>(.*?)</error>", stripped, re.IGNORECASE | re.DOTALL)
    if match:
        return match.group(1).strip()
    return stripped[:_ERROR_TEXT_MAX] or "(empty response body)"


def redcap_error(
    message: str,
    *,
    status: int | None = None,
    retryable: bool = False,
    retry_after: float | None = None,
) -> RedcapError:
    """Build the right error class for a status; `retry_after` rides along for the retry loop."""
    cls = RedcapAuthError if status in (401, 403) else RedcapError
    error = cls(message, status=status, retryable=retryable and cls is RedcapError)
    error.retry_after = retry_after  # type: ignore[attr-defined]
    return error


class RedcapClient:
    """One REDCap project over the API. Every public call is retried per the retry settings.

    The PyCap Project is built on first use, so constructing a client never touches the network.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        allow_insecure: bool = False,
        ca_bundle: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.url = validate_url(url, allow_insecure=allow_insecure)
        self._token = validate_token(token)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # TLS verification stays on; a private CA can be given, verification cannot be disabled.
        self._verify: bool | str = ca_bundle or True
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._project: Any = None
        self._record_id_field: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RedcapClient:
        """A client configured from the run settings (verify_tls=False means allow_insecure)."""
        kwargs: dict[str, Any] = {
            "timeout": settings.timeout,
            "max_retries": settings.max_retries,
            "backoff_base": settings.backoff_base,
            "backoff_max": settings.backoff_max,
            "allow_insecure": not settings.verify_tls,
        }
        kwargs.update(overrides)
        return cls(settings.redcap_url, settings.token, **kwargs)

    def __repr__(self) -> str:
        return f"RedcapClient(url={self.url!r})"

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def project(self) -> Any:
        """The PyCap Project, built lazily with our timeout, no redirects and the status hook."""
        if self._project is None:
            self._project = redcap.Project(
                self.url,
                self._token,
                verify_ssl=self._verify,
                timeout=self.timeout,
                # A redirect could replay the token-bearing POST body to another host.
                allow_redirects=False,
                hooks={"response": [self._check_response]},
            )
        return self._project

    def _scrub(self, text: str) -> str:
        return scrub(str(text), [self._token])

    def _check_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """requests response hook: turn a non-2xx status into our error before PyCap parses."""
        status = response.status_code
        if 200 <= status < 300:
            _decode_with_orjson(response)
            return None
        if 300 <= status < 400:
            location = self._scrub(response.headers.get("Location", "?"))
            raise redcap_error(
                f"the server redirected to {location}; configure the final API URL",
                status=status,
            )
        text = self._scrub(server_error_text(response.text))
        retryable = status in _RETRYABLE_STATUS
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if retryable else None
        raise redcap_error(text, status=status, retryable=retryable, retry_after=retry_after)

    def _translate(self, what: str, exc: BaseException) -> RedcapError:
        """Map a PyCap / requests exception to our error, with a token-free message."""
        if isinstance(exc, requests.exceptions.JSONDecodeError):
            return redcap_error(f"{what}: the answer is not valid JSON ({exc})", retryable=True)
        if isinstance(exc, requests.exceptions.SSLError):
            return redcap_error(f"{what}: TLS failure: {self._scrub(exc)}")
        if isinstance(
            exc,
            requests.exceptions.Timeout
            | requests.exceptions.ConnectionError
            | requests.exceptions.ChunkedEncodingError
            | requests.exceptions.ContentDecodingError,
        ):
            detail = self._scrub(exc)[:_ERROR_TEXT_MAX]
            return redcap_error(
                f"{what}: {type(exc).__name__} talking to {self.url}: {detail}", retryable=True
            )
        if type(exc) is requests.RequestException and exc.args:
            # PyCap's own "RedcapError" (an alias of RequestException): an error body on a 2xx.
            body = exc.args[0]
            text = str(body.get("error", body)) if isinstance(body, dict) else str(body)
            return redcap_error(f"{what}: {self._scrub(server_error_text(text))}")
        return redcap_error(f"{what}: {type(exc).__name__}: {self._scrub(exc)}")

    def _once(self, what: str, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self.project)
        except RedcapError:
            raise  # raised by our response hook, message already scrubbed
        except (requests.RequestException, ValueError, AssertionError) as exc:
            error = self._translate(what, exc)
            # Chain the cause only when its text is token-free (tracebacks print it).
            if self._token in str(exc):
                raise error from None
            raise error from exc

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        return call_with_retries(
            lambda: self._once(what, fn),
            max_retries=self.max_retries,
            base=self.backoff_base,
            cap=self.backoff_max,
            sleep=self._sleep,
            rng=self._rng,
            what=what,
        )

    @staticmethod
    def _expect_list(what: str, value: Any) -> list[dict]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            kind = type(value).__name__
            raise redcap_error(f"{what}: expected a JSON list of objects, got {kind}")
        return value

    def _empty_if_classic(self, what: str, fn: Callable[[Any], Any]) -> list[dict]:
        try:
            return self._expect_list(what, self._call(what, fn))
        except RedcapError as error:
            if error.status in (400, None) and _CLASSIC_RE.search(str(error)):
                return []
            raise

    # -- project design ---------------------------------------------------------------------

    def metadata(self) -> list[dict]:
        """The data dictionary rows (18 string keys each)."""
        rows = self._expect_list(
            "export metadata", self._call("export metadata", lambda p: p.export_metadata())
        )
        if rows:
            self._record_id_field = str(rows[0].get("field_name", "")) or None
        # PyCap's export_records fills fields[] from its own cached metadata; seeding the cache
        # saves it a second, un-retried-by-name metadata call per client.
        self.project._metadata = rows
        return rows

    def project_info(self) -> dict:
        info = self._call("export project info", lambda p: p.export_project_info())
        if not isinstance(info, dict):
            raise redcap_error(f"export project info: expected a JSON object, got {type(info)}")
        return info

    def events(self) -> list[dict]:
        """Events of a longitudinal project ([] for classic projects)."""
        return self._empty_if_classic("export events", lambda p: p.export_events())

    def arms(self) -> list[dict]:
        """Arms of a longitudinal project ([] for classic projects)."""
        return self._empty_if_classic("export arms", lambda p: p.export_arms())

    def form_event_mapping(self) -> list[dict]:
        """[{arm_num, unique_event_name, form}]; [] for classic projects (REDCap answers 400)."""
        return self._empty_if_classic(
            "export form-event mapping", lambda p: p.export_instrument_event_mappings()
        )

    def repeating(self) -> list[dict]:
        """Repeating instruments and events: [{event_name, form_name, custom_form_label}]."""
        return self._expect_list(
            "export repeating setup",
            self._call(
                "export repeating setup", lambda p: p.export_repeating_instruments_events()
            ),
        )

    def version(self) -> str:
        """The REDCap version, e.g. "14.5.10" (for provenance)."""
        return str(self._call("export version", lambda p: p.export_version())).strip()

    @property
    def record_id_field(self) -> str:
        if self._record_id_field is None:
            self.metadata()
        if not self._record_id_field:
            raise redcap_error("the project's data dictionary is empty")
        return self._record_id_field

    # -- records ----------------------------------------------------------------------------

    def record_ids(
        self,
        *,
        date_begin: datetime | None = None,
        date_end: datetime | None = None,
        filter_logic: str | None = None,
    ) -> list[str]:
        """Record ids (first-seen order, deduplicated), optionally only those created or
        modified since `date_begin` (REDCap server local time, naive)."""
        rid = self.record_id_field
        rows = self._expect_list(
            "export record ids",
            self._call(
                "export record ids",
                lambda p: p.export_records(
                    format_type="json",
                    fields=[rid],
                    date_begin=date_begin,
                    date_end=date_end,
                    filter_logic=filter_logic,
                ),
            ),
        )
        ids = []
        for row in rows:
            if rid not in row:
                raise redcap_error(f"export record ids: a row has no {rid!r} field")
            ids.append(str(row[rid]))
        return list(dict.fromkeys(ids))

    def export_batch(
        self,
        record_ids: Iterable[str],
        fields: list[str] | None = None,
        forms: list[str] | None = None,
    ) -> list[dict[str, str]]:
        """Flat raw JSON rows of the given records, every value a string.

        Gray (never saved) forms come back with an empty `<form>_complete`, so "has data" can be
        told apart from "saved as Incomplete".
        """
        ids = [str(r) for r in record_ids]
        if not ids:
            return []  # an empty records[] would make REDCap export every record
        self.record_id_field  # noqa: B018 -- loads the dictionary PyCap needs for fields[]
        what = f"export records ({len(ids)} records, first {ids[0]!r})"
        rows = self._expect_list(
            what,
            self._call(
                what,
                lambda p: p.export_records(
                    format_type="json",
                    records=ids,
                    fields=fields,
                    forms=forms,
                    raw_or_label="raw",
                    export_blank_for_gray_form_status=True,
                    # REDCap adds the column only when the project has groups.
                    export_data_access_groups=True,
                ),
            ),
        )
        return [_strings(row) for row in rows]

    def deleted_since(self, begin: datetime) -> list[str]:
        """Ids of records deleted at or after `begin` (server local time), from the log."""
        entries = self._expect_list(
            "export log",
            self._call(
                "export log",
                lambda p: p.export_logging(log_type="record_delete", begin_time=begin),
            ),
        )
        rid_field = self.record_id_field
        ids = [rid for entry in entries if (rid := deleted_record_id(entry, rid_field))]
        return list(dict.fromkeys(ids))


class _OrjsonResponse(requests.Response):
    """A response whose `json()` (which PyCap calls) parses with orjson: an export's JSON is
    most of the client's work, and orjson reads it in ~60 % of the json module's time (20,000
    flat rows of 334 fields: 0.83 vs 1.37 s, measured).
    Anything orjson refuses (a body that is not UTF-8, say) goes to requests' own decoder, so
    what decodes and which error a bad body raises stay as they were."""

    def json(self, **kwargs: Any) -> Any:
        if not kwargs:
            try:
                return orjson.loads(self.content)
            except orjson.JSONDecodeError:
                pass
        return super().json(**kwargs)


def _decode_with_orjson(response: requests.Response) -> None:
    # A subclass, not a closure stored on the response: that would be a reference cycle, and
    # every exported batch's body would wait in memory for the (rare, gcpolicy) collection.
    if type(response) is requests.Response:
        response.__class__ = _OrjsonResponse


def _strings(row: dict) -> dict[str, str]:
    """An exported row with every key and value a string (None as ""): a converted copy, or
    the row itself when it already is a plain dict of strings.

    JSON rows nearly always are already: two C-level joins check that (TypeError on a
    non-string) instead of converting value by value, which was the main cost of an export.
    The parsed JSON is ours alone, so such a row is not copied (the snapshot compacts it)."""
    try:
        "".join(row)
        "".join(row.values())
    except TypeError:
        return {str(k): "" if v is None else str(v) for k, v in row.items()}
    return row if type(row) is dict else dict(row)


def deleted_record_id(entry: dict, record_id_field: str | None = None) -> str | None:
    """The record id a `record_delete` log entry is about, or None when it names none.

    REDCap 12+ fills `record`; older versions only say it in `action` ("Deleted Record 12") and
    in `details` ("record_id = '12'").
    """
    record = str(entry.get("record") or "").strip()
    if record:
        return record
    match = _DELETE_ACTION_RE.match(str(entry.get("action") or ""))
    if match:
        return match.group(1)
    if record_id_field:
        found = re.search(
            rf"\b{re.escape(record_id_field)}\s*=\s*'([^']*)'", str(entry.get("details") or "")
        )
        if found:
            return found.group(1)
    log.warning("log entry at %s names no record: %r", entry.get("timestamp"), entry.get("action"))
    return None
