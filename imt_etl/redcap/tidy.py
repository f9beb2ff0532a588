"""Flat REDCap rows -> one typed table per instrument, types taken from the data dictionary.

Shape. `tidy_instruments` returns a `TidyResult` with three parts:
- `tables[form]`: one DataFrame per instrument (every instrument, possibly empty), keyed by
  KEY_COLUMNS = record_id (str), redcap_arm (Int64; null in classic projects),
  redcap_event_name (str; null in classic projects), redcap_repeat_instrument (str; null unless
  the row is a repeating-instrument instance), redcap_repeat_instance (Int64; null on
  non-repeating rows). The key is unique per table and record_id is never null. Rows: only those
  where the instrument has data (a non-empty value, a ticked checkbox or a non-empty
  `<form>_complete`; the client asks REDCap to leave gray forms' status blank). Sorted by record
  (numbers numerically), event (project order), repeat instrument, instance. Columns: the keys,
  then each field in dictionary order, then `<form>_complete` and `<form>_complete_label`.
- `raw[form]`: the same rows in the same order with the same key columns, holding the form's
  export columns exactly as REDCap sent them (strings, "" when empty). Validation joins on the
  key to quarantine a row with its original values.
- `issues`: one TypeIssue per value that does not fit its dictionary type (rules "dict.integer",
  "dict.number", "dict.date", "dict.datetime", "dict.choice"). Such a value is never guessed:
  its typed cell is null and the raw value stays in `raw`.

Types. text -> string ("001" stays "001"); integer validation and sliders -> Int64; number*
validations and calc -> Float64; date_* -> date32 (pd.ArrowDtype(pa.date32()): parquet DATE; the
API always sends dates as YYYY-MM-DD whatever the display format); datetime_* -> datetime64[ms]
(naive, REDCap server local time); yesno/truefalse/radio/dropdown -> the code as string plus a
`<field>_label` column; checkbox -> one boolean column per option `<field>___<code>`; notes, file,
signature, sql, other text validations -> string; descriptive -> no column; `<form>_complete` ->
Int64 plus label. Column descriptions (field label, choice label) are in `df.attrs["columns"]`.

Missing-data codes (project setting, e.g. "UNK, Unknown | NA, Not applicable") stay distinct
from empty: such a value leaves the typed cell null and goes to a `<field>_missing` string column.
These columns exist only when the project defines codes; fields tagged @NOMISSING are exempt.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import compress, repeat
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from imt_etl.errors import DictionaryError, RedcapError
from imt_etl.redcap.dictionary import Choice, DataDictionary, Field, checkbox_column, parse_choices
from imt_etl.redcap.model import (
    DAG_KEY,
    EVENT_KEY,
    REPEAT_INSTANCE_KEY,
    REPEAT_INSTRUMENT_KEY,
    ProjectDefinition,
    RepeatingSetup,
)

log = logging.getLogger(__name__)

KEY_COLUMNS: tuple[str, ...] = (
    "record_id", "redcap_arm", "redcap_event_name", "redcap_repeat_instrument",
    "redcap_repeat_instance",
)
DATE_DTYPE = pd.ArrowDtype(pa.date32())
DATETIME_DTYPE = "datetime64[ms]"
STRING_DTYPE = pd.StringDtype()
COMPLETE_CHOICES = (Choice("0", "Incomplete"), Choice("1", "Unverified"), Choice("2", "Complete"))

LEGACY_VALIDATIONS = {"int": "integer", "float": "number"}
_INTEGER_RE = re.compile(r"^[-+]?\d+$")
_NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?$")


@dataclass(frozen=True)
class TypeIssue:
    """A value that does not fit its dictionary type; its typed cell is null."""

    record: str
    event: str | None
    repeat_instrument: str | None
    repeat_instance: int | None
    instrument: str
    field: str
    value: str
    rule: str
    message: str


@dataclass(frozen=True)
class ProjectMeta:
    """What tidying needs to know about a project's design (no data)."""

    dictionary: DataDictionary
    event_arms: Mapping[str, int] = field(default_factory=dict)  # unique event -> arm, in order
    repeating: tuple[RepeatingSetup, ...] = ()
    form_event_mapping: tuple[tuple[int, str, str], ...] = ()
    missing_codes: tuple[Choice, ...] = ()
    title: str = ""

    @property
    def is_longitudinal(self) -> bool:
        return bool(self.event_arms)

    @classmethod
    def from_definition(cls, definition: ProjectDefinition) -> ProjectMeta:
        return cls(
            dictionary=definition.dictionary,
            event_arms={e.unique_event_name: e.arm_num for e in definition.events},
            repeating=tuple(definition.repeating),
            form_event_mapping=tuple(definition.form_event_mapping),
            missing_codes=parse_missing_codes(definition.missing_data_codes),
            title=definition.title,
        )

    @classmethod
    def from_api(cls, client: Any) -> ProjectMeta:
        """From a RedcapClient's answers (metadata, project info, events, mapping, repeating)."""
        info = client.project_info()
        longitudinal = str(info.get("is_longitudinal", "0")) == "1"
        events = client.events() if longitudinal else []
        mapping = client.form_event_mapping() if longitudinal else []
        repeats = (
            client.repeating()
            if str(info.get("has_repeating_instruments_or_events", "0")) == "1" else []
        )
        try:
            dictionary = DataDictionary.from_metadata(client.metadata())
        except DictionaryError as exc:  # the server's dictionary, not a file of ours
            source = f"(metadata exported by {getattr(client, 'url', 'REDCap')})"
            raise DictionaryError(exc.field, exc.problem, source) from exc
        return cls(
            dictionary=dictionary,
            event_arms={str(e["unique_event_name"]): int(e["arm_num"]) for e in events},
            repeating=tuple(
                RepeatingSetup(
                    str(r.get("event_name") or ""), str(r.get("form_name") or ""),
                    str(r.get("custom_form_label") or ""),
                )
                for r in repeats
            ),
            form_event_mapping=tuple(
                (int(m["arm_num"]), str(m["unique_event_name"]), str(m["form"])) for m in mapping
            ),
            missing_codes=parse_missing_codes(str(info.get("missing_data_codes") or "")),
            title=str(info.get("project_title") or ""),
        )


@dataclass
class TidyResult:
    tables: dict[str, pd.DataFrame]
    raw: dict[str, pd.DataFrame]
    issues: list[TypeIssue]


def parse_missing_codes(text: str) -> tuple[Choice, ...]:
    return parse_choices("missing_data_codes", text) if text.strip() else ()


# -- keys ------------------------------------------------------------------------------------


class _Key(NamedTuple):  # a tuple: built once per row, ~5x cheaper than a frozen dataclass
    record: str
    arm: int | None
    event: str | None
    repeat_instrument: str | None
    repeat_instance: int | None
    order: tuple


def _row_key(row: Mapping[str, str], meta: ProjectMeta, event_order: dict[str, int],
             rid_field: str | None = None, natural_of: dict[str, tuple] | None = None) -> _Key:
    rid_field = rid_field or meta.dictionary.record_id_field
    record = str(row.get(rid_field) or "")
    if not record:
        raise RedcapError(f"a row has no value for the record id field {rid_field!r}")
    event = str(row.get(EVENT_KEY) or "") or None
    if event_order and event not in event_order:  # event_order is empty unless longitudinal
        raise RedcapError(f"record {record!r}: unknown event {event!r}")
    instrument = str(row.get(REPEAT_INSTRUMENT_KEY) or "") or None
    instance_text = str(row.get(REPEAT_INSTANCE_KEY) or "")
    if instance_text and not instance_text.isdigit():
        raise RedcapError(f"record {record!r}: repeat instance {instance_text!r} is not a number")
    instance = int(instance_text) if instance_text else None
    natural = natural_of.get(record) if natural_of is not None else None
    if natural is None:  # the same for every row of a record: computed once when cached
        natural = (0, int(record), record) if record.isdigit() else (1, 0, record)
        if natural_of is not None:
            natural_of[record] = natural
    order = (natural, event_order.get(event or "", -1), instrument or "", instance or 0)
    arm = meta.event_arms.get(event) if event else None
    return _Key(record, arm, event, instrument, instance, order)


def _keyed_rows(rows: Iterable[Mapping[str, str]], meta: ProjectMeta,
                event_order: dict[str, int], rid_field: str
                ) -> list[tuple[_Key, Mapping[str, str]]]:
    """(key, row) per row. Rows of plain, valid string keys take an inlined copy of `_row_key`;
    any other row goes through `_row_key` itself, which converts or raises as it always has."""
    natural_of: dict[str, tuple] = {}
    arms = meta.event_arms
    out = []
    for row in rows:
        get = row.get
        record, event, instrument, instance_text = (
            get(rid_field), get(EVENT_KEY) or None, get(REPEAT_INSTRUMENT_KEY) or None,
            get(REPEAT_INSTANCE_KEY) or "")
        if (type(record) is not str or not record
                or (event is not None and type(event) is not str)
                or (event_order and event not in event_order)
                or (instrument is not None and type(instrument) is not str)
                or type(instance_text) is not str
                or (instance_text and not instance_text.isdigit())):
            out.append((_row_key(row, meta, event_order, rid_field, natural_of), row))
            continue
        natural = natural_of.get(record)
        if natural is None:
            natural = natural_of[record] = (
                (0, int(record), record) if record.isdigit() else (1, 0, record))
        instance = int(instance_text) if instance_text else None
        order = (natural, event_order.get(event or "", -1), instrument or "", instance or 0)
        out.append((_Key(record, arms.get(event) if event else None, event, instrument,
                         instance, order), row))
    return out


def _key_frame(keys: list[_Key]) -> dict[str, pd.Series]:
    records, arms, events, instruments, instances, _ = (
        zip(*keys, strict=True) if keys else ((),) * 6
    )
    return {
        "record_id": pd.Series(list(records), dtype=STRING_DTYPE),
        "redcap_arm": pd.Series(list(arms), dtype="Int64"),
        "redcap_event_name": pd.Series(list(events), dtype=STRING_DTYPE),
        "redcap_repeat_instrument": pd.Series(list(instruments), dtype=STRING_DTYPE),
        "redcap_repeat_instance": pd.Series(list(instances), dtype="Int64"),
    }


# -- value parsing ---------------------------------------------------------------------------

Parser = Callable[[str], Any]


def _parse_integer(value: str) -> int:
    if not _INTEGER_RE.match(value):
        raise ValueError("not a whole number")
    return int(value)


def _parse_number(value: str, comma: bool = False) -> float:
    text = value.replace(",", ".") if comma else value
    if not _NUMBER_RE.match(text):
        raise ValueError("not a number")
    return float(text)


def _parse_date(value: str) -> date:
    if not _DATE_RE.match(value):
        raise ValueError("not a YYYY-MM-DD date")
    return date.fromisoformat(value)


def _parse_datetime(value: str) -> datetime:
    if not _DATETIME_RE.match(value):
        raise ValueError("not a YYYY-MM-DD HH:MM[:SS] date-time")
    return datetime.fromisoformat(value)


def field_kind(f: Field) -> str:
    """The typed-column kind of a field, from its type and validation only."""
    if f.field_type in ("yesno", "truefalse", "radio", "dropdown"):
        return "choice"
    if f.field_type in ("checkbox", "descriptive"):
        return f.field_type
    if f.field_type == "calc":
        return "number"
    if f.field_type == "slider":
        return "integer"
    if f.field_type != "text":
        return "string"
    # Projects created on old REDCap versions still carry the legacy names int and float.
    v = LEGACY_VALIDATIONS.get(f.validation, f.validation)
    if v == "integer":
        return "integer"
    if v.startswith("number"):
        return "number_comma" if "comma_decimal" in v else "number"
    if v.startswith("datetime"):
        return "datetime"
    if v.startswith("date"):
        return "date"
    return "string"


# Whole-column fast paths: the join of a column's values, one per line, matches only when every
# value is plain ASCII that its _parse_* function accepts and converts exactly as `convert`
# does (a value that itself holds a newline makes `convert` fail). Anything else -- a bad
# value, a Unicode digit, a trailing newline -- takes the value-by-value path, which reports it.
_FAST: dict[str, tuple[re.Pattern[str], Callable[[str], Any]]] = {
    # Possessive loops over unambiguous lines: a failing column fails in linear time.
    "integer": (re.compile(r"(?:[-+]?[0-9]+\n)*+"), int),
    "number": (re.compile(
        r"(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\n)*+"), float),
    "date": (re.compile(r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}\n)*+"), date.fromisoformat),
    "datetime": (re.compile(r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(?::[0-9]{2})?\n)*+"),
                 datetime.fromisoformat),
    "string": (re.compile(r"(?s:.*)"), str),
}


def _fast_parse(kind: str, values: list[str]) -> list[Any] | None:
    """The values converted, or None when one of them needs the value-by-value path."""
    fast = _FAST.get(kind)
    if fast is None or not fast[0].fullmatch("\n".join(values) + "\n" if values else ""):
        return None
    try:
        return list(map(fast[1], values))
    except ValueError:  # e.g. 2024-02-30, or an int() digit limit
        return None


def _column(n: int, at: list[int], values: list[Any], dtype: Any) -> pd.Series:
    """A Series of n cells, `values` at positions `at` and null elsewhere."""
    if dtype == "Int64" or dtype == "Float64":
        # The masked array directly, holding what pandas fills null cells with (1 or NaN).
        data = np.full(n, 1 if dtype == "Int64" else np.nan,
                       dtype=np.int64 if dtype == "Int64" else np.float64)
        mask = np.ones(n, dtype=bool)
        try:
            data[at] = values
        except OverflowError:  # beyond int64: as pandas would from the list (it raises)
            listed: list[Any] = [None] * n
            for i, value in zip(at, values, strict=True):
                listed[i] = value
            return pd.Series(listed, dtype=dtype)
        mask[at] = False
        array = (pd.arrays.IntegerArray if dtype == "Int64" else pd.arrays.FloatingArray)
        return pd.Series(array(data, mask))
    cells = np.empty(n, dtype=object)  # None everywhere, as the list pandas would be given
    if at:
        cells[at] = values
    return pd.Series(cells, dtype=dtype)


_SCALAR: dict[str, tuple[Parser, str, Any]] = {
    "integer": (_parse_integer, "dict.integer", "Int64"),
    "number": (_parse_number, "dict.number", "Float64"),
    "number_comma": (lambda v: _parse_number(v, comma=True), "dict.number", "Float64"),
    "date": (_parse_date, "dict.date", DATE_DTYPE),
    "datetime": (_parse_datetime, "dict.datetime", DATETIME_DTYPE),
    "string": (str, "", STRING_DTYPE),
}


# -- one instrument ----------------------------------------------------------------------------


class _FormBuilder:
    """Builds one instrument's typed and raw tables from its rows (already sorted).

    Column at a time: a cell is read from its row once, and parsing, choice lookups and Series
    building run over the column's non-empty values (C-level where the values allow)."""

    def __init__(self, form: str, meta: ProjectMeta, rows: list[Mapping[str, str]], keys, issues):
        self.form, self.meta, self.rows, self.keys = form, meta, rows, keys
        self.issues: list[TypeIssue] = issues
        self.columns: dict[str, pd.Series] = _key_frame(keys)
        self.raw: dict[str, pd.Series] = dict(self.columns)  # DataFrames copy their columns
        self.describe: dict[str, dict[str, str]] = {}
        self.missing = {c.code for c in meta.missing_codes}
        self._plain_dicts = set(map(type, rows)) <= {dict}

    def cells(self, name: str) -> list[Any]:
        """Each row's value of `name` ("" when the row lacks it), as stored."""
        n = len(self.rows)
        if self._plain_dicts:  # dict.get mapped over the rows: no Python step per cell
            return list(map(dict.get, self.rows, repeat(name, n), repeat("", n)))
        return [row.get(name, "") for row in self.rows]

    def add(self, name: str, values: list, dtype: Any, **description: str) -> None:
        self.add_series(name, pd.Series(values, dtype=dtype), **description)

    def add_series(self, name: str, series: pd.Series, **description: str) -> None:
        if name in self.columns:
            raise DictionaryError(name, f"column {name!r} of instrument {self.form!r} exists twice")
        self.columns[name] = series
        self.describe[name] = description

    def add_dag(self, groups: list[str | None]) -> None:
        """The record's data access group, right after the key columns (multi-site projects)."""
        self.columns[DAG_KEY] = pd.Series(groups, dtype=STRING_DTYPE)
        self.raw[DAG_KEY] = pd.Series([g or "" for g in groups], dtype=STRING_DTYPE)
        self.describe[DAG_KEY] = {"label": "REDCap data access group", "kind": "key"}

    def add_raw(self, name: str) -> list[str]:
        values = self.cells(name)
        try:
            "".join(values)  # all strings (the usual case): nothing to convert
        except TypeError:
            values = [str(v or "") for v in values]
        self.raw[name] = pd.Series(values, dtype=STRING_DTYPE)
        return values

    def issue(self, index: int, fname: str, value: str, rule: str, problem: str) -> None:
        k = self.keys[index]
        self.issues.append(TypeIssue(
            k.record, k.event, k.repeat_instrument, k.repeat_instance, self.form, fname, value,
            rule, f"record {k.record!r}, field {fname!r}: {value!r} is {problem}",
        ))

    def uses_missing(self, f: Field) -> bool:
        return bool(self.missing) and "@NOMISSING" not in f.annotation.upper()

    def add_field(self, f: Field) -> None:
        kind = field_kind(f)
        if kind == "descriptive":
            return
        if kind == "checkbox":
            self.add_checkbox(f)
            return
        raw = self.add_raw(f.name)
        n = len(raw)
        missing = self.uses_missing(f)
        own_codes = self.missing if missing else frozenset()
        at = list(compress(range(n), raw))  # the non-empty cells
        code_at: list[int] = []
        if own_codes and ("" in own_codes or not own_codes.isdisjoint(raw)):
            code_at = [i for i in range(n) if raw[i] in own_codes]
            at = [i for i in at if raw[i] not in own_codes]
        values = [raw[i] for i in at]
        if kind == "choice":
            choice_labels = _choice_labels(f)
            labels = list(map(choice_labels.get, values))
            if None in labels:
                for i, value, label in zip(at, values, labels, strict=True):
                    if label is None:
                        self.issue(i, f.name, value, "dict.choice",
                                   "not one of the field's choices")
                chosen = [(i, v, lab) for i, v, lab in zip(at, values, labels, strict=True)
                          if lab is not None]
                at = [i for i, _, _ in chosen]
                values = [v for _, v, _ in chosen]
                labels = [lab for _, _, lab in chosen]
            self.add_series(f.name, _column(n, at, values, STRING_DTYPE), field=f.name,
                            label=f.label, kind=kind)
            self.add_series(f"{f.name}_label", _column(n, at, labels, STRING_DTYPE),
                            field=f.name, label=f.label, kind="choice_label")
        else:
            parsed = _fast_parse(kind, values)
            if parsed is None:
                parsed = [self.parse(i, f, kind, value) for i, value in zip(at, values,
                                                                            strict=True)]
                if None in parsed:  # failed values stay null
                    kept = [(i, v) for i, v in zip(at, parsed, strict=True) if v is not None]
                    at, parsed = [i for i, _ in kept], [v for _, v in kept]
            self.add_series(f.name, _column(n, at, parsed, _SCALAR[kind][2]), field=f.name,
                            label=f.label, kind=kind)
        if missing:
            self.add_series(f"{f.name}_missing",
                            _column(n, code_at, [raw[i] for i in code_at], STRING_DTYPE),
                            field=f.name, label=f.label, kind="missing_code")

    def parse(self, index: int, f: Field, kind: str, value: str) -> Any:
        parser, rule, _ = _SCALAR[kind]
        try:
            return parser(value)
        except ValueError as exc:
            self.issue(index, f.name, value, rule, f"{exc} ({f.validation or f.field_type})")
            return None

    def add_checkbox(self, f: Field) -> None:
        missing_cols = {
            c.code: checkbox_column(f.name, c.code) for c in self.meta.missing_codes
        } if self.uses_missing(f) else {}
        n = len(self.rows)
        missing: list[str | None] = [None] * n
        if missing_cols:
            present = set().union(*self.rows)
            for col in missing_cols.values():
                if col in present:
                    self.add_raw(col)
            # The first code (in project order) whose column is "1" wins.
            for code, col in reversed(missing_cols.items()):
                if col in present:
                    for i, value in enumerate(self.cells(col)):
                        if value == "1":
                            missing[i] = code
        ticked_missing = any(m is not None for m in missing)
        for choice in f.choices:
            col = checkbox_column(f.name, choice.code)
            raw = self.add_raw(col)
            if not ticked_missing and set(raw) <= {"", "0", "1"}:
                values = np.fromiter(map("1".__eq__, raw), dtype=bool, count=n)
                series = pd.Series(pd.arrays.BooleanArray(values, np.zeros(n, dtype=bool)))
            else:
                cells: list[bool | None] = []
                for i, value in enumerate(raw):
                    if missing[i] is not None:
                        cells.append(None)
                    elif value in ("", "0", "1"):
                        cells.append(value == "1")
                    else:
                        self.issue(i, col, value, "dict.choice", "not a checkbox value (0 or 1)")
                        cells.append(None)
                series = pd.Series(cells, dtype="boolean")
            self.add_series(col, series, field=f.name, label=f.label, kind="checkbox",
                            choice_code=choice.code, choice_label=choice.label)
        if missing_cols:
            self.add(f"{f.name}_missing", missing, STRING_DTYPE, field=f.name, label=f.label,
                     kind="missing_code")

    def add_complete(self) -> None:
        name = f"{self.form}_complete"
        raw = self.add_raw(name)
        n = len(raw)
        at = list(compress(range(n), raw))
        values = [raw[i] for i in at]
        labels = list(map(_COMPLETE_LABELS.get, values))
        if None in labels:
            for i, value, label in zip(at, values, labels, strict=True):
                if label is None:
                    self.issue(i, name, value, "dict.choice", "not a form status (0, 1 or 2)")
            kept = [(i, v, lab) for i, v, lab in zip(at, values, labels, strict=True)
                    if lab is not None]
            at, values, labels = ([i for i, _, _ in kept], [v for _, v, _ in kept],
                                  [lab for _, _, lab in kept])
        # As pd.Series(["0", "2"], dtype="Int64") would: the codes are plain digits.
        self.add_series(name, _column(n, at, list(map(int, values)), "Int64"), field=name,
                        label="Complete?", kind="complete")
        self.add_series(f"{name}_label", _column(n, at, labels, STRING_DTYPE), field=name,
                        label="Complete?", kind="choice_label")

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        typed = pd.DataFrame(self.columns)
        typed.attrs = {"instrument": self.form, "columns": self.describe}
        raw = pd.DataFrame(self.raw)
        raw.attrs = {"instrument": self.form}
        return typed, raw


_COMPLETE_LABELS = {c.code: c.label for c in COMPLETE_CHOICES}


def _choice_labels(f: Field) -> dict[str, str]:
    """code -> label, the first choice winning (as Field.choice_label's scan)."""
    out: dict[str, str] = {}
    for c in f.choices:
        out.setdefault(c.code, c.label)
    return out


# -- the whole project -------------------------------------------------------------------------


def _data_columns(meta: ProjectMeta, form: str) -> tuple[list[str], list[str]]:
    """(plain value columns, checkbox option columns) of a form, without the record id."""
    rid = meta.dictionary.record_id_field
    plain: list[str] = []
    boxes: list[str] = []
    for f in meta.dictionary.form_fields(form):
        if f.name == rid or not f.has_data:
            continue
        if f.is_checkbox:
            boxes.extend(f.export_columns)
            boxes.extend(checkbox_column(f.name, c.code) for c in meta.missing_codes)
        else:
            plain.append(f.name)
    return plain, boxes


def _has_data(row: Mapping[str, str], form: str, plain: list[str], boxes: list[str]) -> bool:
    if row.get(f"{form}_complete"):
        return True
    return any(row.get(c) for c in plain) or any(row.get(c) == "1" for c in boxes)


def _rows_with_data(keyed: list[tuple[_Key, Mapping[str, str]]], meta: ProjectMeta,
                    forms: list[str]) -> dict[str, list[tuple[_Key, Mapping[str, str]]]]:
    """form -> its rows with data (in `keyed` order): a row of a repeating instrument only for
    that instrument, any other row for every form.

    One pass over the rows. A row that has none of a form's columns cannot have data for it:
    that C-level set test skips most (row, form) pairs before the exact `_has_data` check."""
    chosen: dict[str, list[tuple[_Key, Mapping[str, str]]]] = {form: [] for form in forms}
    checks = []
    for form in forms:
        plain, boxes = _data_columns(meta, form)
        checks.append((form, frozenset([*plain, *boxes, f"{form}_complete"]), plain, boxes,
                       chosen[form].append))
    by_form = {check[0]: [check] for check in checks}
    for kr in keyed:
        key, row = kr
        names = row.keys()
        for form, columns, plain, boxes, append in (
            checks if key.repeat_instrument is None else by_form.get(key.repeat_instrument, ())
        ):
            if not names.isdisjoint(columns) and _has_data(row, form, plain, boxes):
                append(kr)
    return chosen


def _record_dags(keyed: list[tuple[_Key, Mapping[str, str]]]) -> dict[str, str | None] | None:
    """record id -> data access group, or None when the export carried no DAG column.

    REDCap may fill the group on only some of a record's rows, so the first non-empty one wins.
    """
    dags: dict[str, str | None] | None = None
    for key, row in keyed:
        if DAG_KEY not in row:
            continue
        dags = {} if dags is None else dags
        if not dags.get(key.record):
            dags[key.record] = str(row[DAG_KEY] or "") or None
    return dags


def _check_unique(form: str, keys: list[_Key]) -> None:
    seen: set[tuple] = set()
    for k in keys:
        ident = (k.record, k.event, k.repeat_instrument, k.repeat_instance)
        if ident in seen:
            raise RedcapError(
                f"instrument {form!r}: record {k.record!r} has two rows for event {k.event!r}, "
                f"repeat {k.repeat_instrument!r} #{k.repeat_instance}"
            )
        seen.add(ident)


def _check_names(meta: ProjectMeta) -> None:
    rid = meta.dictionary.record_id_field
    for f in meta.dictionary.fields:
        if f.name != rid and f.name in KEY_COLUMNS:
            raise DictionaryError(f.name, "field name collides with a key column of the tables")


def tidy_instruments(
    rows: Iterable[Mapping[str, str]], meta: ProjectMeta, forms: Iterable[str] | None = None
) -> TidyResult:
    """Type flat REDCap rows into one table per instrument (see the module docstring).

    `forms` narrows the work to some instruments (default: all of them).
    """
    wanted = set(meta.dictionary.forms if forms is None else forms)
    _check_names(meta)
    event_order = {name: i for i, name in enumerate(meta.event_arms)}
    rid = meta.dictionary.record_id_field
    keyed = _keyed_rows(rows, meta, event_order, rid)
    keyed.sort(key=lambda kr: kr[0].order)
    dags = _record_dags(keyed)
    chosen_by_form = _rows_with_data(keyed, meta, [f for f in meta.dictionary.forms if f in wanted])
    result = TidyResult({}, {}, [])
    for form in meta.dictionary.forms:
        if form not in wanted:
            continue
        chosen = chosen_by_form.pop(form)
        keys = [k for k, _ in chosen]
        _check_unique(form, keys)
        builder = _FormBuilder(form, meta, [row for _, row in chosen], keys, result.issues)
        if dags is not None:
            builder.add_dag([dags.get(k.record) for k in keys])
        for f in meta.dictionary.form_fields(form):
            if f.name != rid:
                builder.add_field(f)
        builder.add_complete()
        result.tables[form], result.raw[form] = builder.frames()
    if result.issues:
        log.warning("%d value(s) do not fit their dictionary type", len(result.issues))
    return result
