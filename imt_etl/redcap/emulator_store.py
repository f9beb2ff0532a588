"""The emulator's in-memory REDCap project and REDCap's API semantics on it (no HTTP here).

`ProjectStore` holds record data, change times and the log; `handle_request` answers one API call
(already decoded into a dict of strings and lists) with status, content type and body.
Rows are indexed by record, so exporting, importing or deleting a record costs the size of that
record, not of the project.

REDCap behaviour reproduced (checked against CSVs real REDCap exported, tests/data/redcap_xml/):
- records in natural order ("2" before "10"); within a record, events in event order, the
  non-repeating row before repeating instances, instances by instrument then number;
- a row carries only the forms that belong to it: a repeating instrument's row only that form, a
  non-repeating row every designated form that does not repeat on its own; other columns are "";
- on a row's own forms, unticked checkboxes export "0" and a form status never saved exports "0"
  (REDCap's gray status, unless exportBlankForGrayFormStatus).
"""

from __future__ import annotations

import logging
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from imt_etl.redcap.dictionary import Field
from imt_etl.redcap.model import (
    DAG_KEY,
    EVENT_KEY,
    REPEAT_INSTANCE_KEY,
    REPEAT_INSTRUMENT_KEY,
    ProjectDefinition,
    RecordRow,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RowKey = tuple[str, str, str, int | None]  # (record, event, repeat instrument, instance)

COMPLETE_LABELS = {"0": "Incomplete", "1": "Unverified", "2": "Complete"}
DEFAULT_USERNAME = "api_user"
_NATURAL_RE = re.compile(r"(\d+)")


def natural_key(record: str) -> tuple:
    """Sort key putting "2" before "10" and "a-2" before "a-10", case-insensitively."""
    parts = _NATURAL_RE.split(record.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


@dataclass(frozen=True)
class LogEntry:
    """One line of the project log (REDCap's `log` content)."""

    time: datetime
    username: str
    action: str
    details: str
    record: str = ""
    logtype: str = ""  # record_add | record_edit | record_delete | export | manage

    def to_api(self) -> dict[str, str]:
        return {
            "timestamp": self.time.strftime("%Y-%m-%d %H:%M"),
            "username": self.username,
            "action": self.action,
            "details": self.details,
            "record": self.record,
        }


@dataclass
class ImportRow:
    """One validated flat import row: its key and the column values to write ("" = blank)."""

    key: RowKey
    values: dict[str, str]
    dag: str | None = None


@dataclass
class _Record:
    rows: dict[RowKey, RecordRow] = field(default_factory=dict)
    created: datetime | None = None
    changes: list[datetime] = field(default_factory=list)  # sorted change times


@dataclass(frozen=True)
class ColumnPlan:
    """What a flat export shows: key columns and the data columns, in REDCap's order."""

    key_columns: tuple[str, ...]
    data_columns: tuple[str, ...]
    record_id_shown: bool

    @property
    def header(self) -> list[str]:
        return list(self.key_columns) + list(self.data_columns)


class ProjectStore:
    """One REDCap project's data and log, safe to share between server threads."""

    def __init__(self, project: ProjectDefinition, *, clock: Clock = datetime.now,
                 load_time: datetime | None = None, username: str = DEFAULT_USERNAME) -> None:
        self.project = project
        self.clock = clock
        self.username = username
        self.lock = threading.RLock()
        self._records: dict[str, _Record] = {}
        self._order: list[str] | None = None
        self._log: list[LogEntry] = []
        self._dags: dict[str, str] = dict(project.record_dags)
        self._build_indexes()
        loaded = load_time or clock()
        self._log.append(LogEntry(loaded, username, "Manage/Design", "Create project",
                                  logtype="manage"))
        for row in project.rows:
            rec = self._records.get(row.record)
            if rec is None:
                rec = self._records[row.record] = _Record(created=loaded, changes=[loaded])
                self._log.append(LogEntry(loaded, username, f"Create record {row.record}",
                                          f"{self.record_id_field} = '{row.record}'",
                                          row.record, "record_add"))
            rec.rows[row.key] = RecordRow(row.record, row.event, row.repeat_instrument,
                                          row.repeat_instance, dict(row.values))
        log.debug("emulator store: %d records loaded at %s", len(self._records), loaded)

    # ------------------------------------------------------------ indexes of the design

    def _build_indexes(self) -> None:
        p = self.project
        d = p.dictionary
        self.record_id_field = d.record_id_field
        self.forms = d.forms
        self.form_index = {f: i for i, f in enumerate(self.forms)}
        self.event_index = {e.unique_event_name: i for i, e in enumerate(p.events)}
        self.data_fields: list[Field] = [f for f in d.fields if f.has_data]
        # export column -> (field or None for a form status, form)
        self.column_form: dict[str, str] = {}
        self.column_field: dict[str, Field | None] = {}
        self.checkbox_code: dict[str, str] = {}  # checkbox export column -> raw choice code
        for f in self.data_fields:
            for col in f.export_columns:
                self.column_form[col] = f.form
                self.column_field[col] = f
            if f.is_checkbox:
                for choice, col in zip(f.choices, f.export_columns, strict=True):
                    self.checkbox_code[col] = choice.code
        for form in self.forms:
            self.column_form[f"{form}_complete"] = form
            self.column_field[f"{form}_complete"] = None
        self._row_forms_cache: dict[tuple[str, str, bool], frozenset[str]] = {}

    def row_forms(self, event: str, instrument: str, instance: int | None) -> frozenset[str]:
        """Forms whose fields belong to a row of this shape."""
        repeating = instance is not None
        key = (event, instrument, repeating)
        cached = self._row_forms_cache.get(key)
        if cached is not None:
            return cached
        p = self.project
        designated = p.forms_for_event(event)
        if instrument:
            forms = frozenset({instrument} & set(designated))
        elif repeating and p.is_repeating_event(event):
            forms = frozenset(designated)
        else:
            forms = frozenset(designated) - p.repeating_forms(event)
        self._row_forms_cache[key] = forms
        return forms

    def row_sort_key(self, key: RowKey) -> tuple:
        _, event, instrument, instance = key
        return (self.event_index.get(event, -1), 0 if instance is None else 1,
                self.form_index.get(instrument, -1), instance or 0)

    # ------------------------------------------------------------ reading

    def record_ids(self) -> list[str]:
        """All record ids in REDCap's (natural) order."""
        with self.lock:
            if self._order is None:
                self._order = sorted(self._records, key=natural_key)
            return list(self._order)

    def has_record(self, record: str) -> bool:
        return record in self._records

    def rows_of(self, record: str) -> list[RecordRow]:
        """A record's rows in export order (copies are not made: do not mutate)."""
        with self.lock:
            rec = self._records.get(record)
            if rec is None:
                return []
            return [rec.rows[k] for k in sorted(rec.rows, key=self.row_sort_key)]

    def dag_of(self, record: str) -> str:
        return self._dags.get(record, "")

    def changed_between(self, record: str, begin: datetime | None, end: datetime | None) -> bool:
        """True when the record was created or modified within [begin, end]."""
        rec = self._records.get(record)
        if rec is None:
            return False
        times = rec.changes
        i = bisect_left(times, begin) if begin is not None else 0
        return i < len(times) and (end is None or times[i] <= end)

    def times_of(self, record: str) -> tuple[datetime | None, datetime | None]:
        """(created, last modified) of a record, (None, None) when it does not exist."""
        rec = self._records.get(record)
        if rec is None:
            return None, None
        return rec.created, (rec.changes[-1] if rec.changes else rec.created)

    def log_entries(self) -> list[LogEntry]:
        with self.lock:
            return list(self._log)

    def add_log(self, action: str, details: str, record: str = "", logtype: str = "") -> None:
        with self.lock:
            self._log.append(LogEntry(self.clock(), self.username, action, details, record,
                                      logtype))

    # ------------------------------------------------------------ writing

    def _touch(self, record: str, now: datetime) -> _Record:
        rec = self._records.get(record)
        if rec is None:
            rec = self._records[record] = _Record(created=now)
            self._order = None
        if rec.changes and rec.changes[-1] > now:  # the clock went backwards (tests): stay sorted
            rec.changes.insert(bisect_left(rec.changes, now), now)
        else:
            rec.changes.append(now)
        return rec

    def apply_import(self, rows: Iterable[ImportRow], overwrite: bool) -> list[str]:
        """Write validated rows (REDCap imports all or nothing); returns distinct record ids.

        Blank values leave stored data alone unless `overwrite`; a form that receives data
        without a status gets "0" (Incomplete), as REDCap saves it.
        """
        with self.lock:
            now = self.clock()
            changes: dict[str, list[str]] = {}
            created: set[str] = set()
            for row in rows:
                record = row.key[0]
                if record not in self._records:
                    created.add(record)
                    self._touch(record, now)
                diff = self._write_row(row, overwrite)
                if row.dag is not None and self._dags.get(record, "") != row.dag:
                    self._set_dag(record, row.dag)
                    diff.append(f"{DAG_KEY} = '{row.dag}'")
                changes.setdefault(record, []).extend(diff)
            for record, diff in changes.items():
                if record in created:
                    self._log.append(LogEntry(now, self.username,
                                              f"Create record {record} (API)",
                                              ", ".join(diff), record, "record_add"))
                elif diff:
                    self._touch(record, now)
                    self._log.append(LogEntry(now, self.username,
                                              f"Update record {record} (API)",
                                              ", ".join(diff), record, "record_edit"))
            return list(changes)

    def _set_dag(self, record: str, dag: str) -> None:
        if dag:
            self._dags[record] = dag
        else:
            self._dags.pop(record, None)

    def _write_row(self, row: ImportRow, overwrite: bool) -> list[str]:
        record, event, instrument, instance = row.key
        rec = self._records[record]
        stored = rec.rows.get(row.key)
        if stored is None:
            stored = rec.rows[row.key] = RecordRow(record, event, instrument, instance)
        values = stored.values
        diff: list[str] = []
        touched_forms: set[str] = set()
        for col, value in row.values.items():
            field_ = self.column_field.get(col)
            if field_ is not None and field_.is_checkbox and value == "0":
                value = ""  # REDCap stores ticked options only
            if value == "" and not overwrite:
                continue
            old = values.get(col, "")
            if value == old:
                continue
            if value == "":
                del values[col]
            else:
                values[col] = value
                touched_forms.add(self.column_form[col])
            diff.append(self._describe(col, value))
        # The record id is stored on every row REDCap creates.
        if self.record_id_field not in values:
            values[self.record_id_field] = record
        for form in touched_forms:
            status = f"{form}_complete"
            if status not in values:
                values[status] = "0"
        return diff

    def _describe(self, column: str, value: str) -> str:
        field_ = self.column_field.get(column)
        if field_ is not None and field_.is_checkbox:
            code = self.checkbox_code[column]
            return f"{field_.name}({code}) = {'checked' if value == '1' else 'unchecked'}"
        return f"{column} = '{value}'"

    def set_values(self, record: str, values: Mapping[str, str], *, event: str = "",
                   repeat_instrument: str = "", repeat_instance: int | None = None) -> None:
        """Test helper: write values on one row (no validation), logged and timed like an import."""
        row = ImportRow((record, event, repeat_instrument, repeat_instance),
                        {k: str(v) for k, v in values.items()})
        self.apply_import([row], overwrite=True)

    def delete_records(self, records: Iterable[str], *, arm: int | None = None,
                       instrument: str = "", event: str = "",
                       instance: int | None = None) -> int:
        """Delete whole records (or one arm's events, or one form's data); returns how many."""
        with self.lock:
            now = self.clock()
            count = 0
            for record in dict.fromkeys(records):
                rec = self._records.get(record)
                if rec is None:
                    continue
                count += 1
                if instrument or event or arm is not None:
                    self._delete_part(record, rec, now, arm, instrument, event, instance)
                    continue
                del self._records[record]
                self._dags.pop(record, None)
                self._order = None
                self._log.append(LogEntry(now, self.username, f"Delete record {record} (API)",
                                          f"{self.record_id_field} = '{record}'", record,
                                          "record_delete"))
            return count

    def _delete_part(self, record: str, rec: _Record, now: datetime, arm: int | None,
                     instrument: str, event: str, instance: int | None) -> None:
        arm_events = {e.unique_event_name for e in self.project.events if e.arm_num == arm}
        for key in list(rec.rows):
            _, ev, instr, inst = key
            if event and ev != event or arm is not None and ev not in arm_events:
                continue
            if instance is not None and inst != instance:
                continue
            if not instrument:
                del rec.rows[key]
                continue
            values = rec.rows[key].values
            for col in [c for c in values if self.column_form.get(c) == instrument]:
                if col != self.record_id_field:
                    del values[col]
            if instr == instrument or set(values) <= {self.record_id_field}:
                del rec.rows[key]
        if not rec.rows:
            del self._records[record]
            self._order = None
            self._log.append(LogEntry(now, self.username, f"Delete record {record} (API)",
                                      f"{self.record_id_field} = '{record}'", record,
                                      "record_delete"))
            return
        self._touch(record, now)
        what = f"instrument {instrument}" if instrument else f"event {event}" if event \
            else f"arm {arm}"
        self._log.append(LogEntry(now, self.username, f"Update record {record} (API)",
                                  f"Delete data of {what}", record, "record_edit"))

    # ------------------------------------------------------------ shaping

    def iter_rows(self, records: Iterable[str], events: set[str] | None = None
                  ) -> Iterator[RecordRow]:
        """Rows of the given records in export order, optionally of some events only."""
        for record in records:
            for row in self.rows_of(record):
                if events is None or row.event in events:
                    yield row


# ==================================================================== the API on top of the store

Params = Mapping[str, "str | list[str]"]
FORMATS = ("json", "csv", "xml")
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_INT_RE = re.compile(r"^[-+]?\d+$")
_NUMBER_RE = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
# Characters that make PHP's fputcsv (REDCap's CSV writer) quote a cell.
_CSV_QUOTE_CHARS = frozenset(',"\\\n\r\t ')
NO_PERMISSION = "You do not have permissions to use the API"


class ApiError(Exception):
    """An API call REDCap would refuse: HTTP status and REDCap's error text."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiResponse:
    status: int
    content_type: str
    body: bytes


def param_str(params: Params, key: str, default: str = "") -> str:
    value = params.get(key, default)
    if isinstance(value, list):
        return value[0] if value else default
    return value


def param_list(params: Params, key: str) -> list[str]:
    """A list parameter: `key[0]=a&key[1]=b` (decoded by the HTTP layer) or `key=a,b`."""
    value = params.get(key)
    if value is None:
        return []
    items = value if isinstance(value, list) else value.split(",")
    return [v.strip() for v in items if v.strip()]


def param_bool(params: Params, key: str) -> bool:
    return param_str(params, key).strip().lower() in _TRUE


def param_time(params: Params, key: str) -> datetime | None:
    text = param_str(params, key).strip()
    if not text:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ApiError(f'The value of the parameter "{key}" is not a valid date/time '
                   "(expected YYYY-MM-DD HH:MM:SS)")


# ------------------------------------------------------------ rendering


def _xml_escape_cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_xml(rows: list[dict[str, object]], root: str = "records") -> bytes:
    parts = ['<?xml version="1.0" encoding="UTF-8" ?>\n', f"<{root}>\n"]
    for row in rows:
        parts.append("<item>")
        for key, value in row.items():
            parts.append(f"<{key}>{_xml_escape_cdata(str(value))}</{key}>")
        parts.append("</item>\n")
    parts.append(f"</{root}>\n")
    return "".join(parts).encode("utf-8")


def csv_cell(value: object) -> str:
    text = str(value)
    if any(c in _CSV_QUOTE_CHARS for c in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def render_csv(header: list[str], rows: Iterable[Iterable[object]]) -> bytes:
    """CSV as REDCap writes it (PHP fputcsv: quotes cells with spaces, commas, quotes, breaks)."""
    lines = [",".join(csv_cell(h) for h in header)]
    lines.extend(",".join(csv_cell(v) for v in row) for row in rows)
    return ("\n".join(lines) + "\n").encode("utf-8")


def render(rows: list[dict[str, object]], fmt: str, header: list[str] | None = None) -> ApiResponse:
    """A list of dicts in the requested format."""
    if fmt == "json":
        import orjson  # imported here: only the emulator needs it

        return ApiResponse(200, "application/json", orjson.dumps(rows))
    if fmt == "csv":
        cols = header if header is not None else (list(rows[0]) if rows else [])
        return ApiResponse(200, "text/csv; charset=utf-8",
                           render_csv(cols, ([r.get(c, "") for c in cols] for r in rows)))
    return ApiResponse(200, "text/xml; charset=utf-8", render_xml(rows))


def error_response(message: str, status: int, fmt: str) -> ApiResponse:
    """REDCap's error body: json {"error": ...}, csv "ERROR: ...", else xml <error>."""
    if fmt == "json":
        import orjson

        return ApiResponse(status, "application/json", orjson.dumps({"error": message}))
    if fmt == "csv":
        return ApiResponse(status, "text/csv; charset=utf-8", f"ERROR: {message}".encode())
    body = ('<?xml version="1.0" encoding="UTF-8" ?>\n<hash>\n  <error>'
            + message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            + "</error>\n</hash>")
    return ApiResponse(status, "text/xml; charset=utf-8", body.encode("utf-8"))


def _format(params: Params, key: str = "format") -> str:
    fmt = param_str(params, key, "xml").strip().lower() or "xml"
    if fmt not in FORMATS:
        raise ApiError(f'The value of the parameter "{key}" is not valid')
    return fmt


def _error_format(params: Params) -> str:
    for key in ("returnFormat", "format"):
        fmt = param_str(params, key).strip().lower()
        if fmt in FORMATS:
            return fmt
    return "xml"


# ------------------------------------------------------------ labels


def form_label(project: ProjectDefinition, form: str) -> str:
    """An instrument's label: REDCap's default for a form made from a dictionary upload."""
    labels = project.settings.get(f"form_label:{form}")
    if labels:
        return labels
    return " ".join(w[:1].upper() + w[1:] for w in form.split("_"))


def event_label(project: ProjectDefinition, event: str) -> str:
    """The event label REDCap exports: with the arm when the project has several arms."""
    for ev in project.events:
        if ev.unique_event_name == event:
            if len(project.arms) > 1:
                arm = next((a.name for a in project.arms if a.arm_num == ev.arm_num), "")
                return f"{ev.event_name} (Arm {ev.arm_num}: {arm})"
            return ev.event_name
    return event


def _missing_labels(project: ProjectDefinition) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in project.missing_data_codes.split("|"):
        code, sep, label = item.partition(",")
        if sep and code.strip():
            labels[code.strip()] = label.strip()
    return labels


def _label_converter(store: ProjectStore, column: str, checkbox_labels: bool
                     ) -> Callable[[str], str] | None:
    field_ = store.column_field[column]
    missing = _missing_labels(store.project)
    if field_ is None:
        return lambda v: COMPLETE_LABELS.get(v, v)
    if field_.is_checkbox:
        label = field_.choice_label(store.checkbox_code[column]) or ""
        if checkbox_labels:
            return lambda v: label if v == "1" else ("" if v == "0" else v)
        return lambda v: {"1": "Checked", "0": "Unchecked"}.get(v, v)
    if field_.choices:
        table = {c.code: c.label for c in field_.choices}
        return lambda v: table.get(v, missing.get(v, v))
    return None


def _header_label(store: ProjectStore, column: str) -> str:
    field_ = store.column_field.get(column)
    if field_ is None:
        return "Complete?" if column.endswith("_complete") else column
    label = re.sub(r"<[^>]+>", "", field_.label).strip()
    if field_.is_checkbox:
        choice = field_.choice_label(store.checkbox_code[column]) or ""
        return f"{label} (choice={choice})"
    return label


_KEY_HEADER_LABELS = {EVENT_KEY: "Event Name", REPEAT_INSTRUMENT_KEY: "Repeat Instrument",
                      REPEAT_INSTANCE_KEY: "Repeat Instance", DAG_KEY: "Data Access Group"}


# ------------------------------------------------------------ record export


@dataclass(frozen=True)
class ExportOptions:
    records: list[str] | None = None
    events: set[str] | None = None
    fields: list[str] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)
    labels: bool = False
    label_headers: bool = False
    checkbox_labels: bool = False
    dags: bool = False
    blank_gray: bool = False
    date_begin: datetime | None = None
    date_end: datetime | None = None
    filter_logic: str = ""


def plan_columns(store: ProjectStore, opts: ExportOptions) -> ColumnPlan:
    """Columns of a flat export; the record id (and with it the event and repeat columns) only
    when asked for or when nothing is filtered (REDCap >= 6.0)."""
    p = store.project
    filtered = bool(opts.fields or opts.forms)
    wanted = set(opts.fields) | {f.name for f in store.data_fields if f.form in opts.forms}
    wanted |= {f"{form}_complete" for form in opts.forms}
    data: list[str] = []
    for form in store.forms:
        for f in p.dictionary.form_fields(form):
            if f.name != store.record_id_field and (not filtered or f.name in wanted):
                data.extend(f.export_columns)
        if not filtered or f"{form}_complete" in wanted:
            data.append(f"{form}_complete")
    shown = not filtered or store.record_id_field in wanted
    keys: list[str] = []
    if shown:
        keys.append(store.record_id_field)
        if p.is_longitudinal:
            keys.append(EVENT_KEY)
        if p.has_repeating:
            keys += [REPEAT_INSTRUMENT_KEY, REPEAT_INSTANCE_KEY]
        if opts.dags and (p.data_access_groups or store._dags):
            keys.append(DAG_KEY)
    return ColumnPlan(tuple(keys), tuple(data), shown)


@dataclass
class _Template:
    defaults: list[str]
    index: dict[str, int]


def _template(store: ProjectStore, plan: ColumnPlan, row: RecordRow, blank_gray: bool,
              cache: dict[tuple, _Template]) -> _Template:
    shape = (row.event, row.repeat_instrument, row.repeat_instance is not None)
    tpl = cache.get(shape)
    if tpl is not None:
        return tpl
    forms = store.row_forms(row.event, row.repeat_instrument, row.repeat_instance)
    defaults: list[str] = []
    index: dict[str, int] = {}
    for i, col in enumerate(plan.data_columns):
        if store.column_form[col] not in forms:
            defaults.append("")
            continue
        index[col] = i
        field_ = store.column_field[col]
        if field_ is None:
            defaults.append("" if blank_gray else "0")
        else:
            defaults.append("0" if field_.is_checkbox else "")
    tpl = cache[shape] = _Template(defaults, index)
    return tpl


def select_records(store: ProjectStore, opts: ExportOptions) -> list[str]:
    """Record ids to export, in REDCap's order, after the records and date-range filters."""
    ids = store.record_ids()
    if opts.records is not None:
        asked = set(opts.records)
        ids = [r for r in ids if r in asked]
    if opts.date_begin is not None or opts.date_end is not None:
        ids = [r for r in ids if store.changed_between(r, opts.date_begin, opts.date_end)]
    return ids


def _logic_filter(store: ProjectStore, text: str) -> Callable[[RecordRow], bool]:
    from imt_etl.errors import LogicError
    from imt_etl.redcap.logic import evaluate, parse_logic

    try:
        expr = parse_logic(text, field="filterLogic")
    except LogicError as exc:
        raise ApiError(f"The filterLogic is not valid: {exc.problem}") from exc

    def keep(row: RecordRow) -> bool:
        events = {r.event: r.values for r in store.rows_of(row.record)
                  if r.repeat_instance is None and r.event}
        try:
            return bool(evaluate(expr, _full_values(store, row), events=events, text=text))
        except LogicError as exc:
            raise ApiError(f"The filterLogic cannot be evaluated: {exc.problem}") from exc

    return keep


def _full_values(store: ProjectStore, row: RecordRow) -> dict[str, str]:
    values = dict(row.values)
    forms = store.row_forms(row.event, row.repeat_instrument, row.repeat_instance)
    for f in store.data_fields:
        if f.is_checkbox and f.form in forms:
            for col in f.export_columns:
                values.setdefault(col, "0")
    return values


def flat_rows(store: ProjectStore, opts: ExportOptions) -> tuple[list[str], Iterator[list[str]]]:
    """Header and rows (lists of strings) of a flat export."""
    plan = plan_columns(store, opts)
    p = store.project
    filtered = bool(opts.fields or opts.forms)
    cache: dict[tuple, _Template] = {}
    converters = [_label_converter(store, c, opts.checkbox_labels) if opts.labels else None
                  for c in plan.data_columns]
    converting = [(i, conv) for i, conv in enumerate(converters) if conv is not None]
    keep = _logic_filter(store, opts.filter_logic) if opts.filter_logic.strip() else None
    multi_arm_labels = {e.unique_event_name: event_label(p, e.unique_event_name) for e in p.events}
    dag_names = {d.unique_name: d.name for d in p.data_access_groups}

    def key_cells(row: RecordRow) -> list[str]:
        cells = [row.record]
        if p.is_longitudinal:
            cells.append(multi_arm_labels.get(row.event, row.event) if opts.labels else row.event)
        if p.has_repeating:
            instr = row.repeat_instrument
            cells.append(form_label(p, instr) if opts.labels and instr else instr)
            cells.append("" if row.repeat_instance is None else str(row.repeat_instance))
        if DAG_KEY in plan.key_columns:
            dag = store.dag_of(row.record)
            cells.append(dag_names.get(dag, dag) if opts.labels else dag)
        return cells

    def rows() -> Iterator[list[str]]:
        for row in store.iter_rows(select_records(store, opts), opts.events):
            tpl = _template(store, plan, row, opts.blank_gray, cache)
            # A row none of whose asked-for forms belong to it is left out, except that the
            # record id keeps every row that is not a repeating instance of another form.
            if filtered and not tpl.index and plan.data_columns and not (
                    plan.record_id_shown and not row.repeat_instrument):
                continue
            if keep is not None and not keep(row):
                continue
            out = tpl.defaults.copy()
            index = tpl.index
            for col, value in row.values.items():
                i = index.get(col)
                if i is not None:
                    out[i] = value
            for i, conv in converting:
                if out[i] != "":
                    out[i] = conv(out[i])
            yield (key_cells(row) if plan.record_id_shown else []) + out

    header = plan.header
    if opts.label_headers:
        header = [_KEY_HEADER_LABELS.get(c) or _header_label(store, c) for c in header]
    return header, rows()


def eav_rows(store: ProjectStore, opts: ExportOptions) -> list[dict[str, str]]:
    """EAV export: one dict per non-empty value (a ticked checkbox gives its code)."""
    p = store.project
    plan = plan_columns(store, opts)
    wanted = set(plan.data_columns) | ({store.record_id_field} if plan.record_id_shown else set())
    keep = _logic_filter(store, opts.filter_logic) if opts.filter_logic.strip() else None
    out: list[dict[str, str]] = []
    order = {c: i for i, c in enumerate((store.record_id_field, *plan.data_columns))}
    for row in store.iter_rows(select_records(store, opts), opts.events):
        if keep is not None and not keep(row):
            continue
        forms = store.row_forms(row.event, row.repeat_instrument, row.repeat_instance)
        base: dict[str, str] = {"record": row.record}
        if p.is_longitudinal:
            base[EVENT_KEY] = row.event
        if p.has_repeating:
            base[REPEAT_INSTRUMENT_KEY] = row.repeat_instrument
            base[REPEAT_INSTANCE_KEY] = "" if row.repeat_instance is None \
                else str(row.repeat_instance)
        for col in sorted((c for c in row.values if c in wanted), key=order.__getitem__):
            if col != store.record_id_field and store.column_form[col] not in forms:
                continue
            value = row.values[col]
            field_ = store.column_field.get(col)
            name = field_.name if field_ is not None else col
            if field_ is not None and field_.is_checkbox:
                value = store.checkbox_code[col]
                if opts.checkbox_labels or opts.labels:
                    value = field_.choice_label(value) or value
            elif opts.labels and col in store.column_field:
                conv = _label_converter(store, col, False)
                value = conv(value) if conv else value
            out.append({**base, "field_name": name, "value": value})
    return out


def export_options(store: ProjectStore, params: Params) -> ExportOptions:
    """Read and check a record export's parameters as REDCap does."""
    p = store.project
    fields = param_list(params, "fields")
    # Every dictionary field is a valid name, descriptive ones included: PyCap sends them all
    # (it fills fields[] from the metadata) and REDCap simply exports no column for them.
    known = {f.name for f in p.dictionary.fields} | {f"{form}_complete" for form in store.forms}
    bad = [f for f in fields if f not in known]
    if bad:
        raise ApiError('The following values in the parameter "fields" are not valid: '
                       + ", ".join(f"'{f}'" for f in bad))
    forms = param_list(params, "forms")
    bad = [f for f in forms if f not in store.form_index]
    if bad:
        raise ApiError('The following values in the parameter "forms" are not valid: '
                       + ", ".join(f"'{f}'" for f in bad))
    events = param_list(params, "events")
    if events and p.is_longitudinal:
        bad = [e for e in events if e not in store.event_index]
        if bad:
            raise ApiError('The following values in the parameter "events" are not valid: '
                           + ", ".join(f"'{e}'" for e in bad))
    raw_or_label = param_str(params, "rawOrLabel", "raw").strip().lower() or "raw"
    if raw_or_label not in ("raw", "label", "both"):
        raise ApiError('The value of the parameter "rawOrLabel" is not valid')
    records = param_list(params, "records")
    return ExportOptions(
        records=records or None,
        events=set(events) if events and p.is_longitudinal else None,
        fields=fields,
        forms=forms,
        # "both" is a report/UI option; for records REDCap answers with raw values.
        labels=raw_or_label == "label",
        label_headers=param_str(params, "rawOrLabelHeaders").strip().lower() == "label",
        checkbox_labels=param_bool(params, "exportCheckboxLabel"),
        dags=param_bool(params, "exportDataAccessGroups"),
        blank_gray=param_bool(params, "exportBlankForGrayFormStatus"),
        date_begin=param_time(params, "dateRangeBegin"),
        date_end=param_time(params, "dateRangeEnd"),
        filter_logic=param_str(params, "filterLogic"),
    )


def export_records(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    kind = param_str(params, "type", "flat").strip().lower() or "flat"
    if kind not in ("flat", "eav"):
        raise ApiError('The value of the parameter "type" is not valid')
    opts = export_options(store, params)
    with store.lock:
        if kind == "eav":
            response = render(eav_rows(store, opts), fmt)
        else:
            header, rows = flat_rows(store, opts)
            if fmt == "csv":
                response = ApiResponse(200, "text/csv; charset=utf-8", render_csv(header, rows))
            else:
                response = render([dict(zip(header, r, strict=True)) for r in rows], fmt)
    store.add_log("Data export (API)", "Export data (API)", logtype="export")
    return response


# ------------------------------------------------------------ record import


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_value(store: ProjectStore, col: str, value: str, missing: set[str]) -> str | None:
    """Why REDCap would refuse `value` for column `col`, or None when it is acceptable."""
    if value == "" or value in missing:
        return None
    field_ = store.column_field[col]
    if field_ is None:
        return None if value in COMPLETE_LABELS else "The value is not a valid form status " \
            "(0, 1 or 2)"
    if field_.is_checkbox:
        return None if value in ("0", "1") else "The value of a checkbox must be 0 or 1"
    if field_.choices:
        if field_.choice_label(value) is None:
            return f"The value is not a valid category for {field_.name}"
        return None
    validation = field_.validation
    if validation == "integer" and not _INT_RE.match(value):
        return "The value is not an integer"
    if validation in ("number", "float") and not _NUMBER_RE.match(value):
        return "The value is not a number"
    if validation.startswith("date"):
        fmt = {"date_ymd": "%Y-%m-%d", "datetime_ymd": "%Y-%m-%d %H:%M",
               "datetime_seconds_ymd": "%Y-%m-%d %H:%M:%S"}.get(validation)
        if fmt:
            try:
                datetime.strptime(value, fmt)
            except ValueError:
                return f"The value is not a valid date ({validation})"
    return None


def _row_key(store: ProjectStore, rid: str, event: str, instrument: str, instance_text: str,
             errors: list[tuple[str, str, str, str]]) -> RowKey | None:
    p = store.project
    if p.is_longitudinal:
        if event not in store.event_index:
            errors.append((rid, EVENT_KEY, event, "The event name is not a valid unique event "
                           "name of this project"))
            return None
    else:
        event = ""
    instance: int | None = None
    if instance_text:
        if not _INT_RE.match(instance_text) or int(instance_text) < 1:
            errors.append((rid, REPEAT_INSTANCE_KEY, instance_text,
                           "redcap_repeat_instance must be a positive integer"))
            return None
        instance = int(instance_text)
    if instrument:
        if instrument not in p.repeating_forms(event):
            errors.append((rid, REPEAT_INSTRUMENT_KEY, instrument,
                           "redcap_repeat_instrument must be the unique form name of a "
                           "Repeating Instrument."))
            return None
        return (rid, event, instrument, instance or 1)
    if p.is_longitudinal and p.is_repeating_event(event):
        return (rid, event, "", instance or 1)
    if instance is not None:
        errors.append((rid, REPEAT_INSTANCE_KEY, instance_text,
                       "redcap_repeat_instance cannot have a value since this instrument or "
                       "event is not a repeating instrument or repeating event, respectively."))
        return None
    return (rid, event, "", None)


_IGNORED_IMPORT_KEYS = frozenset({"redcap_survey_identifier"})


def parse_import(store: ProjectStore, raw_rows: list[Mapping[str, object]]) -> list[ImportRow]:
    """Validate flat import rows as REDCap does (all errors at once, nothing written on error)."""
    errors: list[tuple[str, str, str, str]] = []
    unknown: dict[str, None] = {}
    missing = set(_missing_labels(store.project))
    dag_names = {d.unique_name for d in store.project.data_access_groups}
    rows: list[ImportRow] = []
    for raw in raw_rows:
        row = {str(k).strip(): _cell(v) for k, v in raw.items()}
        rid = row.pop(store.record_id_field, "")
        if not rid:
            errors.append(("", store.record_id_field, "", "The record ID field is missing or "
                           "blank"))
            continue
        key = _row_key(store, rid, row.pop(EVENT_KEY, ""), row.pop(REPEAT_INSTRUMENT_KEY, ""),
                       row.pop(REPEAT_INSTANCE_KEY, ""), errors)
        dag = row.pop(DAG_KEY, None)
        if dag and dag not in dag_names:
            errors.append((rid, DAG_KEY, dag, "The value is not a valid unique data access "
                           "group name"))
        if key is None:
            continue
        forms = store.row_forms(key[1], key[2], key[3])
        values: dict[str, str] = {}
        for col, value in row.items():
            if col in _IGNORED_IMPORT_KEYS or (col.endswith("_timestamp")
                                               and col not in store.column_form):
                continue
            form = store.column_form.get(col)
            if form is None:
                unknown[col] = None
                continue
            if value and form not in forms:
                errors.append((rid, col, value, f"The field is on instrument '{form}', which "
                               "does not belong to this row (event or repeating instrument)"))
                continue
            problem = _check_value(store, col, value, missing)
            if problem:
                errors.append((rid, col, value, problem))
                continue
            values[col] = value
        rows.append(ImportRow(key, values, dag))
    if unknown:
        raise ApiError("The following fields were not found in the project as real data "
                       "fields: " + ", ".join(unknown))
    if errors:
        raise ApiError("\n".join(",".join(f'"{c}"' for c in err) for err in errors))
    return rows


def _read_import_data(params: Params) -> list[Mapping[str, object]]:
    import csv
    import io

    import orjson

    data = param_str(params, "data")
    fmt = _format(params)
    if not data.strip():
        raise ApiError('The parameter "data" is missing or empty')
    if fmt == "json":
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ApiError(f"The data being imported is not valid JSON: {exc}") from exc
        if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
            raise ApiError("The data being imported is not formatted correctly: JSON must be "
                           "an array of objects")
        return parsed
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data)))
    raise ApiError("The emulator imports json and csv data only")


def _auto_number(store: ProjectStore, rows: list[ImportRow]) -> dict[str, str]:
    """New record names for forceAutoNumber: the next integers after the largest numeric id."""
    top = max((int(r) for r in store.record_ids() if r.isdigit()), default=0)
    mapping: dict[str, str] = {}
    for row in rows:
        if row.key[0] not in mapping:
            top += 1
            mapping[row.key[0]] = str(top)
    for row in rows:
        row.key = (mapping[row.key[0]], *row.key[1:])
    return mapping


def import_records(store: ProjectStore, params: Params) -> ApiResponse:
    if (param_str(params, "type", "flat").strip().lower() or "flat") != "flat":
        raise ApiError("The emulator imports flat records only (type=flat)")
    overwrite = param_str(params, "overwriteBehavior", "normal").strip().lower()
    if overwrite not in ("normal", "overwrite"):
        raise ApiError('The value of the parameter "overwriteBehavior" is not valid')
    content = param_str(params, "returnContent", "count").strip().lower() or "count"
    if content not in ("count", "ids", "auto_ids", "nothing"):
        raise ApiError('The value of the parameter "returnContent" is not valid')
    rows = parse_import(store, _read_import_data(params))
    with store.lock:
        mapping = _auto_number(store, rows) if param_bool(params, "forceAutoNumber") else {}
        ids = store.apply_import(rows, overwrite == "overwrite")
    fmt = _format(params, "returnFormat") if "returnFormat" in params else "json"
    if content == "nothing":
        return ApiResponse(200, "text/plain; charset=utf-8", b"")
    if content == "count":
        return _scalar({"count": len(ids)}, fmt)
    if content == "auto_ids":
        old_of = {new: old for old, new in mapping.items()}
        return _list([f"{i},{old_of.get(i, i)}" for i in ids], fmt, "id")
    return _list(ids, fmt, "id")


def _scalar(obj: dict[str, object], fmt: str) -> ApiResponse:
    import orjson

    if fmt == "json":
        return ApiResponse(200, "application/json", orjson.dumps(obj))
    if fmt == "csv":
        return ApiResponse(200, "text/csv; charset=utf-8", render_csv(list(obj), [obj.values()]))
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in obj.items())
    return ApiResponse(200, "text/xml; charset=utf-8",
                       f'<?xml version="1.0" encoding="UTF-8" ?>\n{inner}'.encode())


def _list(items: list[str], fmt: str, name: str) -> ApiResponse:
    import orjson

    if fmt == "json":
        return ApiResponse(200, "application/json", orjson.dumps(items))
    if fmt == "csv":
        return ApiResponse(200, "text/csv; charset=utf-8", render_csv([name], [[i] for i in items]))
    inner = "".join(f"<{name}>{i}</{name}>" for i in items)
    return ApiResponse(200, "text/xml; charset=utf-8",
                       f'<?xml version="1.0" encoding="UTF-8" ?>\n<ids>{inner}</ids>'.encode())


def delete_records(store: ProjectStore, params: Params) -> ApiResponse:
    p = store.project
    records = param_list(params, "records")
    if not records:
        raise ApiError("No records were provided")
    arm_text = param_str(params, "arm").strip()
    arm = int(arm_text) if _INT_RE.match(arm_text) else None
    if arm_text and (arm is None or arm not in {a.arm_num for a in p.arms}):
        raise ApiError(f'The arm "{arm_text}" is not valid')
    instrument = param_str(params, "instrument").strip()
    if instrument and instrument not in store.form_index:
        raise ApiError(f'The instrument "{instrument}" is not valid')
    event = param_str(params, "event").strip()
    if event and event not in store.event_index:
        raise ApiError(f'The event "{event}" is not valid')
    if instrument and p.is_longitudinal and not event:
        raise ApiError("The event parameter is required when deleting an instrument's data in "
                       "a longitudinal project")
    instance_text = param_str(params, "repeat_instance").strip()
    instance = int(instance_text) if _INT_RE.match(instance_text) else None
    with store.lock:
        absent = [r for r in records if not store.has_record(r)]
        if absent:
            raise ApiError("One or more of the records provided cannot be deleted because they "
                           "do not exist in the project. The following records do not exist: "
                           + ", ".join(absent))
        count = store.delete_records(records, arm=arm, instrument=instrument, event=event,
                                     instance=instance)
    fmt = _format(params, "returnFormat") if "returnFormat" in params else "json"
    body = str(count).encode()
    if fmt == "xml":
        return ApiResponse(200, "text/xml; charset=utf-8",
                           b'<?xml version="1.0" encoding="UTF-8" ?>\n<count>' + body
                           + b"</count>")
    return ApiResponse(200, "application/json" if fmt == "json" else "text/csv", body)


# ------------------------------------------------------------ other contents

_LOGTYPES = {
    "record": {"record_add", "record_edit", "record_delete"},
    "record_add": {"record_add"},
    "record_edit": {"record_edit"},
    "record_delete": {"record_delete"},
    "export": {"export"},
    "manage": {"manage"},
}
_LOGTYPES_ACCEPTED = frozenset(_LOGTYPES) | {"user", "page_view", "lock_record"}


def export_log(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    logtype = param_str(params, "logtype").strip()
    if logtype and logtype not in _LOGTYPES_ACCEPTED:
        raise ApiError('The value of the parameter "logtype" is not valid')
    kinds = _LOGTYPES.get(logtype, set()) if logtype else None
    user = param_str(params, "user").strip()
    record = param_str(params, "record").strip()
    begin, end = param_time(params, "beginTime"), param_time(params, "endTime")
    entries = [
        e for e in store.log_entries()
        if (kinds is None or e.logtype in kinds) and (not user or e.username == user)
        and (not record or e.record == record) and (begin is None or e.time >= begin)
        and (end is None or e.time <= end)
    ]
    # REDCap lists the newest first.
    entries.reverse()  # ties keep "latest written first"
    entries.sort(key=lambda e: e.time, reverse=True)
    return render([e.to_api() for e in entries], fmt)


def export_metadata(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    fields = set(param_list(params, "fields"))
    forms = set(param_list(params, "forms"))
    known = {f.name for f in store.project.dictionary.fields}
    bad = sorted(fields - known)
    if bad:
        raise ApiError('The following values in the parameter "fields" are not valid: '
                       + ", ".join(f"'{f}'" for f in bad))
    bad = sorted(forms - set(store.form_index))
    if bad:
        raise ApiError('The following values in the parameter "forms" are not valid: '
                       + ", ".join(f"'{f}'" for f in bad))
    rows = [f.to_metadata() for f in store.project.dictionary.fields
            if (not fields and not forms) or f.name in fields or f.form in forms]
    return render(rows, fmt, header=None)


def export_field_names(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    only = param_str(params, "field").strip()
    rows: list[dict[str, object]] = []
    for form in store.forms:
        for f in store.project.dictionary.form_fields(form):
            for col in f.export_columns:
                code = store.checkbox_code.get(col, "")
                rows.append({"original_field_name": f.name, "choice_value": code,
                             "export_field_name": col})
        status = f"{form}_complete"
        rows.append({"original_field_name": status, "choice_value": "",
                     "export_field_name": status})
    if only:
        rows = [r for r in rows if r["original_field_name"] == only]
        if not rows:
            raise ApiError(f'The field "{only}" does not exist in the project')
    return render(rows, fmt)


def project_info(store: ProjectStore) -> dict[str, object]:
    p = store.project
    s = p.settings
    created = s.get("creation_datetime", "").replace("T", " ")[:19]
    return {
        "project_id": int(s.get("project_id", "1") or 1),
        "project_title": p.title,
        "creation_time": created,
        "production_time": "",
        "in_production": 0,
        "project_language": s.get("project_language", "English"),
        "purpose": int(s.get("purpose", "0") or 0) if s.get("purpose", "0").isdigit() else 0,
        "purpose_other": s.get("purpose_other", ""),
        "project_notes": s.get("project_notes", ""),
        "custom_record_label": s.get("custom_record_label", ""),
        "secondary_unique_field": s.get("secondary_unique_field", ""),
        "is_longitudinal": int(p.is_longitudinal),
        "has_repeating_instruments_or_events": int(p.has_repeating),
        "surveys_enabled": int(s.get("surveys_enabled", "0") == "1"),
        "scheduling_enabled": int(s.get("scheduling_enabled", "0") == "1"),
        "record_autonumbering_enabled": int(s.get("record_autonumbering_enabled", "0") == "1"),
        "randomization_enabled": 0,
        "ddp_enabled": 0,
        "project_irb_number": "",
        "project_grant_number": "",
        "project_pi_firstname": "",
        "project_pi_lastname": "",
        "display_today_now_button": 1,
        "missing_data_codes": p.missing_data_codes,
        "external_modules": "",
        "bypass_branching_erase_field_prompt": 0,
    }


def _classic_guard(store: ProjectStore, what: str) -> None:
    if not store.project.is_longitudinal:
        raise ApiError(f"You cannot export {what} for classic projects")


def _arms_filter(params: Params) -> set[int] | None:
    arms = param_list(params, "arms")
    if not arms:
        return None
    if not all(_INT_RE.match(a) for a in arms):
        raise ApiError('The value of the parameter "arms" is not valid')
    return {int(a) for a in arms}


def export_events(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    _classic_guard(store, "events")
    arms = _arms_filter(params)
    rows = [{"event_name": e.event_name, "arm_num": e.arm_num,
             "unique_event_name": e.unique_event_name,
             "custom_event_label": e.custom_event_label,
             "event_id": e.event_id or 40000 + i}
            for i, e in enumerate(store.project.events, start=1)
            if arms is None or e.arm_num in arms]
    return render(rows, fmt)


def export_arms(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    _classic_guard(store, "arms")
    arms = _arms_filter(params)
    rows = [{"arm_num": a.arm_num, "name": a.name} for a in store.project.arms
            if arms is None or a.arm_num in arms]
    return render(rows, fmt)


def export_form_event_mapping(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    _classic_guard(store, "form/event mappings")
    arms = _arms_filter(params)
    mapping = sorted(store.project.form_event_mapping,
                     key=lambda m: (store.event_index.get(m[1], 0), store.form_index.get(m[2], 0)))
    rows = [{"arm_num": arm, "unique_event_name": ev, "form": form}
            for arm, ev, form in mapping if arms is None or arm in arms]
    return render(rows, fmt)


def export_repeating(store: ProjectStore, params: Params) -> ApiResponse:
    fmt = _format(params)
    p = store.project
    rows: list[dict[str, object]] = []
    for r in p.repeating:
        row: dict[str, object] = {"event_name": r.event} if p.is_longitudinal else {}
        row.update({"form_name": r.form, "custom_form_label": r.custom_label})
        rows.append(row)
    return render(rows, fmt)


def export_instruments(store: ProjectStore, params: Params) -> ApiResponse:
    rows = [{"instrument_name": f, "instrument_label": form_label(store.project, f)}
            for f in store.forms]
    return render(rows, _format(params))


def export_dags(store: ProjectStore, params: Params) -> ApiResponse:
    rows = [{"data_access_group_name": d.name, "unique_group_name": d.unique_name,
             "data_access_group_id": i}
            for i, d in enumerate(store.project.data_access_groups, start=1)]
    return render(rows, _format(params))


def next_record_name(store: ProjectStore) -> ApiResponse:
    top = max((int(r) for r in store.record_ids() if r.isdigit()), default=0)
    return ApiResponse(200, "text/plain; charset=utf-8", str(top + 1).encode())


def _record(store: ProjectStore, params: Params) -> ApiResponse:
    action = param_str(params, "action").strip().lower()
    if action == "delete":
        return delete_records(store, params)
    if action == "import" or (not action and "data" in params):
        return import_records(store, params)
    if action in ("", "export"):
        return export_records(store, params)
    raise ApiError('The value of the parameter "action" is not valid')


def _content(store: ProjectStore, content: str, params: Params) -> ApiResponse:
    if content == "record":
        return _record(store, params)
    if content == "project":
        info = project_info(store)
        fmt = _format(params)
        return _scalar(info, "json") if fmt == "json" else render([info], fmt)
    if content == "version":
        return ApiResponse(200, "text/html; charset=utf-8",
                           (store.project.source_system_version or "14.5.10").encode())
    handlers: dict[str, Callable[[ProjectStore, Params], ApiResponse]] = {
        "metadata": export_metadata, "exportFieldNames": export_field_names,
        "event": export_events, "arm": export_arms,
        "formEventMapping": export_form_event_mapping,
        "repeatingFormsEvents": export_repeating, "log": export_log,
        "instrument": export_instruments, "dag": export_dags,
    }
    if content == "generateNextRecordName":
        return next_record_name(store)
    handler = handlers.get(content)
    if handler is None:
        raise ApiError('The value of the parameter "content" is not valid')
    return handler(store, params)


def handle_request(store: ProjectStore, params: Params, token: str) -> ApiResponse:
    """Answer one API call; `token` is the project's valid token."""
    import hmac

    err_fmt = _error_format(params)
    given = param_str(params, "token").strip()
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return error_response(NO_PERMISSION, 403, err_fmt)
    content = param_str(params, "content").strip()
    try:
        return _content(store, content, params)
    except ApiError as exc:
        return error_response(exc.message, exc.status, err_fmt)
