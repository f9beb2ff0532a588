"""The long measurement table: one row per mapped value, shared by the FHIR builders and analysis.

Contract of `measurements(tables, mapping)`:

- Input: typed instrument tables from `imt_etl.redcap.tidy` (keyed by KEY_COLUMNS) and a
  `StudyMapping`. Only measures with target `observation` (mapped fields and derived measures) or
  `component` give rows; questionnaire-only and excluded fields never appear.
- One row per record x event x repeat instance x measure that has a value. A null typed cell
  (empty, a missing-data code, or a value that did not fit its type) gives no row. A component is
  its own row with `parent_measure_id` naming its Observation measure; every other row has
  `parent_measure_id` null.
- Derived measures are computed with `Derivation.compute` once per row of their instrument's
  table. Inputs come from that row; an input field of another instrument is read from the same
  record's row of the same event, else the record's first non-null value in event order (sex and
  age are recorded once, at screening). A score function that returns None gives no row; one that
  raises (e.g. sex missing) gives no row and a warning naming record, event and measure.
- Columns (in this order): the five key columns (record_id, redcap_arm Int64,
  redcap_event_name, redcap_repeat_instrument, redcap_repeat_instance Int64), measure_id,
  parent_measure_id, instrument, field (null for derived), label, value_type (quantity | integer |
  codeable | boolean | string), code_system (URL of the measure's first, most specific coding),
  code, display, value (Float64: quantities after conversion, integers, booleans as 1.0/0.0),
  value_code_system, value_code, value_display (codeable answers, from the value map), value_text
  (strings), unit (UCUM, after any configured conversion; null unless quantity), effective_date
  (date32) or effective_datetime (naive datetime64[ms], REDCap server time: the study timezone
  applies), category (a component carries its parent's), direction (higher_is_better |
  lower_is_better | null), event_label and event_week (from the optional arguments, else null).
- Sorted by record (numeric ids numerically), event (project order, merged from the tables' own
  order), repeat instrument, repeat instance, then measure in mapping order (components right
  after their parent): the same input always gives the same table. Pass `event_order` (the
  project's unique event names in order, e.g. `list(ProjectMeta.event_arms)`) to get project
  order; without it (and without event_labels/event_weeks) events that never share an
  instrument table are ordered by first appearance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from imt_etl.fhir.mappings import Measure, StudyMapping
from imt_etl.redcap.tidy import KEY_COLUMNS

logger = logging.getLogger(__name__)

DATE_DTYPE = pd.ArrowDtype(pa.date32())
STRING = pd.StringDtype()
COLUMNS: dict[str, Any] = {
    "record_id": STRING,
    "redcap_arm": "Int64",
    "redcap_event_name": STRING,
    "redcap_repeat_instrument": STRING,
    "redcap_repeat_instance": "Int64",
    "measure_id": STRING,
    "parent_measure_id": STRING,
    "instrument": STRING,
    "field": STRING,
    "label": STRING,
    "value_type": STRING,
    "code_system": STRING,
    "code": STRING,
    "display": STRING,
    "value": "Float64",
    "value_code_system": STRING,
    "value_code": STRING,
    "value_display": STRING,
    "value_text": STRING,
    "unit": STRING,
    "effective_date": DATE_DTYPE,
    "effective_datetime": "datetime64[ms]",
    "category": STRING,
    "direction": STRING,
    "event_label": STRING,
    "event_week": "Float64",
}

Row = dict[str, Any]
# The columns that are the same on every row of a measure, and those that vary by row.
_MEASURE_COLUMNS = ("measure_id", "parent_measure_id", "instrument", "field", "label",
                    "value_type", "code_system", "code", "display", "category", "direction")
_ROW_COLUMNS = (*KEY_COLUMNS, "value", "value_code_system", "value_code", "value_display",
                "value_text", "unit", "effective_date", "effective_datetime", "event_label",
                "event_week")


def measurements(
    tables: Mapping[str, pd.DataFrame],
    mapping: StudyMapping,
    *,
    event_labels: Mapping[str, str] | None = None,
    event_weeks: Mapping[str, float] | None = None,
    event_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The long measurement table of `tables` under `mapping` (see the module docstring).

    `event_order` lists unique event names in project order (e.g. `ProjectMeta.event_arms`);
    without it the keys of `event_labels`, else of `event_weeks`, give the order.
    """
    records = {form: _records(df) for form, df in tables.items()}
    lookup = _RecordValues(records, mapping)
    order = {m.measure_id: i for i, m in enumerate(_measure_order(mapping))}
    known = event_order or list(event_labels or ()) or list(event_weeks or ())
    events = _event_order(tables.values(), known)
    # Rows are tuples (_ROW_COLUMNS, with the measure's index in `constants` after the keys),
    # assembled from parts built once per source row (keys, sort key, visit label and week):
    # far cheaper than a dict per row.
    sources: dict[int, _SourceParts] = {}
    keyed: list[tuple[tuple, tuple]] = []
    constants: list[tuple] = []  # per measure, its _MEASURE_COLUMNS; rows hold its index
    for m in mapping.measures:
        if not m.makes_fhir_data or m.instrument not in records:
            continue
        parent = mapping.measure(m.parent) if m.parent else m
        constants.append(_constant_columns(m, parent, lookup))
        index = (len(constants) - 1,)
        rank = (order.get(m.measure_id, len(order)),)
        derive = _Derive(m, lookup) if m.derived is not None else None
        for source in records[m.instrument]:
            values = _measure_values(m, parent, source, lookup, derive)
            if values is not None:
                at = sources.get(id(source))
                if at is None:
                    at = sources[id(source)] = _SourceParts(
                        source, events, event_labels or {}, event_weeks or {})
                keyed.append((at.sort_key + rank, at.keys + index + values + at.visit))
    keyed.sort(key=itemgetter(0))  # stable, and never compares the rows themselves
    return _frame([row for _, row in keyed], constants)


class _SourceParts:
    """What every measurement row of one source row shares: its key columns, its sort key (record
    with numeric ids numerically, event, repeat keys) and its visit label and week."""

    __slots__ = ("keys", "sort_key", "visit")

    def __init__(self, row: Row, events: Mapping[str | None, int],
                 labels: Mapping[str, str], weeks: Mapping[str, float]):
        self.keys = tuple(map(row.get, KEY_COLUMNS))  # COLUMNS starts with KEY_COLUMNS
        record = str(row.get("record_id"))
        natural = (0, int(record), record) if record.isdigit() else (1, 0, record)
        event = row.get("redcap_event_name")
        self.sort_key = (natural, events.get(event, -1), row.get("redcap_repeat_instrument") or "",
                         row.get("redcap_repeat_instance") or 0)
        self.visit = (labels.get(event), weeks.get(event)) if event else (None, None)


def _measure_order(mapping: StudyMapping) -> list[Measure]:
    """Observation measures in mapping order, each followed by its components."""
    out: list[Measure] = []
    for m in mapping.observations:
        out.append(m)
        out.extend(mapping.components_of(m))
    return out


def _records(df: pd.DataFrame) -> list[Row]:
    """A table's rows as dicts of plain Python values (pandas NA and NaN become None)."""
    # One object array: to_dict("records") and column access (which deep-copies the tidy
    # tables' attrs every time) are several times slower.
    names = [str(c) for c in df.columns]
    values = df.to_numpy(dtype=object)
    # pd.isna on the object array finds None, NaN, NA and NaT (as _plain does) in one pass.
    values[pd.isna(values)] = None
    for j, dtype in enumerate(df.dtypes):
        if _may_hold_timestamps(dtype):
            values[:, j] = [_plain(v) for v in values[:, j]]
    return [dict(zip(names, row, strict=True)) for row in values.tolist()]


def _may_hold_timestamps(dtype: Any) -> bool:
    """Datetime and plain object columns (StringDtype's kind is O too; arrow dates are dates)."""
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_date(dtype.pyarrow_dtype):
        return False
    return dtype.kind == "M" or (isinstance(dtype, np.dtype) and dtype.kind == "O")


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


class _RecordValues:
    """Field values of other instruments for derived inputs and effective dates of a record."""

    def __init__(self, records: Mapping[str, list[Row]], mapping: StudyMapping):
        self.records = records
        self.mapping = mapping
        self._cache: dict[tuple[str, str], dict[tuple[str, str | None], Any]] = {}
        self.memo: dict[tuple[int, int], Any] = {}  # derivation results per source row
        self.calls: dict[Any, Any] = {}  # one Derivation object per distinct call (_Derive)
        # field -> the instrument whose table holds it (fields are unique across a project).
        self._forms = {f: form for form, rows in records.items() for f in (rows[0] if rows else ())}

    def _values(self, form: str, field: str) -> dict[tuple[str, str | None], Any]:
        """(record, event) -> value, plus (record, None) -> first non-null value in table order."""
        key = (form, field)
        if key not in self._cache:
            found: dict[tuple[str, str | None], Any] = {}
            for row in self.records.get(form, []):
                value = row.get(field)
                if value is None:
                    continue
                found.setdefault((row["record_id"], row["redcap_event_name"]), value)
                found.setdefault((row["record_id"], None), value)
            self._cache[key] = found
        return self._cache[key]

    def get(self, field: str, source: Row, form: str) -> Any:
        if field in source:
            return source[field]
        other = self._forms.get(field)
        if other is None or other == form:
            return None
        values = self._values(other, field)
        record, event = source["record_id"], source["redcap_event_name"]
        found = values.get((record, event))
        return found if found is not None else values.get((record, None))


def _constant_columns(m: Measure, parent: Measure, lookup: _RecordValues) -> tuple:
    """The columns that are the same on every row of a measure (_MEASURE_COLUMNS)."""
    first = m.codes[0]
    return (m.measure_id, m.parent, m.instrument, m.field, m.label, m.value_type,
            first.system_url(lookup.mapping.study.codesystem.url), first.code, first.display,
            parent.category, m.direction)


def _measure_values(m: Measure, parent: Measure, source: Row, lookup: _RecordValues,
                    derive: _Derive | None = None) -> tuple | None:
    """The columns from value to effective_datetime of this measure's row, None without a value."""
    if m.derived is not None:
        value: Any = (derive or _Derive(m, lookup))(source)
    else:
        value = source.get(m.field or "")
    if value is None:
        return None
    return _value_columns(m, value, source, lookup) + _effective(parent, source, lookup)


def _value_columns(m: Measure, value: Any, source: Row, lookup: _RecordValues) -> tuple:
    """value, value_code_system, value_code, value_display, value_text, unit."""
    if m.value_type == "codeable":
        coding = m.answer(str(value))
        if coding is None:
            raise ValueError(
                f"record {source['record_id']!r}, field {m.field!r}: code {value!r} is not mapped"
            )
        local_url = lookup.mapping.study.codesystem.url
        return (None, coding.system_url(local_url), coding.code, coding.display, None, None)
    if m.value_type == "string":
        return (None, None, None, None, str(value), None)
    if m.value_type == "boolean":
        return (1.0 if str(value) in ("1", "True", "true") else 0.0, None, None, None, None, None)
    if m.value_type == "integer":
        return (float(int(float(value))), None, None, None, None, None)
    return (float(value) * _factor(m, source, lookup), None, None, None, None, m.unit)


def _factor(m: Measure, source: Row, lookup: _RecordValues) -> float:
    """The configured unit conversion factor for this row (1 without a conversion)."""
    if m.convert is None:
        return 1.0
    code = None
    if m.convert.from_unit_field:
        code = lookup.get(m.convert.from_unit_field, source, m.instrument)
        if code is None:
            # REDCap's @DEFAULT fills the unit field on entry; a blank one is the measure's unit.
            return 1.0
    try:
        return m.convert.factor_for(None if code is None else str(code))
    except ValueError as exc:
        raise ValueError(f"record {source['record_id']!r}, measure {m.measure_id}: {exc}") from exc


def _effective(m: Measure, source: Row, lookup: _RecordValues) -> tuple:
    """effective_date, effective_datetime."""
    value = lookup.get(m.effective_field, source, m.instrument) if m.effective_field else None
    if isinstance(value, datetime):
        return (value.date(), value)
    if isinstance(value, date):
        return (value, None)
    return (None, None)


class _Derive:
    """A derived measure's value per source row; what is the same on every row is built once."""

    def __init__(self, m: Measure, lookup: _RecordValues):
        assert m.derived is not None
        self.m, self.lookup = m, lookup
        self.fields = m.derived.fields
        # Several measures can share one call (the 8 RAND-36 scales): equal calls share one
        # object, so the per-row memo is keyed by its id (hashing the dataclass is slow).
        whole = replace(m.derived, output=None)
        self.whole = lookup.calls.setdefault(whole, whole)

    def __call__(self, source: Row) -> float | None:
        m, lookup = self.m, self.lookup
        assert m.derived is not None
        memo_key = (id(source), id(self.whole))
        # The inputs are gathered only for a new call (a failed call is retried, and warns, per
        # measure, as it always did).
        values = None if memo_key in lookup.memo else {
            f: _typed_input(f, lookup.get(f, source, m.instrument), lookup) for f in self.fields}
        try:
            if values is not None:
                lookup.memo[memo_key] = self.whole.compute(values)
            result = lookup.memo[memo_key]
            if m.derived.output is not None:
                result = result[m.derived.output]
        except (ValueError, TypeError) as exc:
            logger.warning("record %s, event %s: derived measure %s not computed: %s",
                           source["record_id"], source["redcap_event_name"], m.measure_id, exc)
            return None
        if result is None or (isinstance(result, float) and math.isnan(result)):
            return None
        return float(result)


def _typed_input(field: str, value: Any, lookup: _RecordValues) -> Any:
    """Choice codes of integer-coded fields (FSS, SF-36 answers) become ints for score functions."""
    if not isinstance(value, str):
        return value
    m = lookup.mapping.by_field.get(field)
    if m is not None and m.value_type == "codeable":
        return value
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else value


def _event_order(tables: Iterable[pd.DataFrame], known: Sequence[str]) -> dict[str | None, int]:
    """Event order: `known` first, then events merged from each table's own event sequence.

    Tidy tables are in project event order, so merging them orders events that share a table;
    an event seen only in its own tables (a training period with repeating forms only) cannot
    be placed that way, which is why callers should pass the project's order.
    """
    after: dict[str, set[str]] = {e: set(known[:i]) for i, e in enumerate(known)}
    seen: list[str] = list(known)
    for df in tables:
        if "redcap_event_name" not in df:
            continue
        sequence = list(dict.fromkeys(e for e in df["redcap_event_name"].dropna()))
        for event in sequence:
            if event not in after:
                after[event] = set()
                seen.append(event)
        for earlier, later in zip(sequence, sequence[1:], strict=False):
            after[later].add(earlier)
    return {e: i for i, e in enumerate(_topological(seen, after))}


def _topological(events: Sequence[str], after: Mapping[str, set[str]]) -> Iterator[str]:
    """Events with all predecessors placed first; ties (and cycles) by first appearance."""
    placed: set[str] = set()
    remaining = list(events)
    while remaining:
        ready = next((e for e in remaining if after[e] <= placed), remaining[0])
        remaining.remove(ready)
        placed.add(ready)
        yield ready


def _frame(rows: list[tuple], constants: list[tuple]) -> pd.DataFrame:
    # One 2-D object array transposes the rows fastest (every value is a scalar); each column
    # goes to pandas as a list of the same objects. A measure's own columns are built once per
    # measure and repeated by index (take), not converted row by row.
    table = np.array(rows, dtype=object).reshape(len(rows), len(_ROW_COLUMNS) + 1)
    which = table[:, len(KEY_COLUMNS)].astype(np.intp)
    table = np.delete(table, len(KEY_COLUMNS), axis=1)
    per_measure = np.array(constants, dtype=object).reshape(len(constants), len(_MEASURE_COLUMNS))
    columns = {name: pd.Series(table[:, j].tolist(), dtype=COLUMNS[name])
               for j, name in enumerate(_ROW_COLUMNS)}
    columns.update({
        name: pd.Series(pd.array(per_measure[:, j].tolist(), dtype=COLUMNS[name]).take(which))
        for j, name in enumerate(_MEASURE_COLUMNS)})
    return pd.DataFrame({name: columns[name] for name in COLUMNS})
