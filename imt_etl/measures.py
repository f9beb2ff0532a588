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
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from imt_etl.fhir.mappings import Derivation, Measure, StudyMapping
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
    # Built column-wise: a measure's rows are the non-null cells of its column and its value
    # columns are computed over those cells at once; only derived measures loop over rows.
    lookup = _RecordValues(tables, mapping)
    order = {m.measure_id: i for i, m in enumerate(_measure_order(mapping))}
    known = event_order or list(event_labels or ()) or list(event_weeks or ())
    events = _event_order([t.df for t in lookup.tables.values()], known)
    out = _Output(lookup, events, event_labels or {}, event_weeks or {})
    constants: list[tuple] = []  # per measure, its _MEASURE_COLUMNS; rows hold its index
    for m in mapping.measures:
        if not m.makes_fhir_data or m.instrument not in tables:
            continue
        parent = mapping.measure(m.parent) if m.parent else m
        constants.append(_constant_columns(m, parent, lookup))
        table = lookup.tables[m.instrument]
        rows, values = _cells(m, table, lookup)
        if len(rows):
            out.add(m, parent, table, rows, values, len(constants) - 1,
                    order.get(m.measure_id, len(order)))
    return out.frame(constants, len(order) + 1)


def _measure_order(mapping: StudyMapping) -> list[Measure]:
    """Observation measures in mapping order, each followed by its components."""
    out: list[Measure] = []
    for m in mapping.observations:
        out.append(m)
        out.extend(mapping.components_of(m))
    return out


def _cells(m: Measure, table: _Table, lookup: _RecordValues) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `table` where measure `m` has a value, and those values."""
    if m.derived is not None:
        column = _derived_column(m, table, lookup)
    else:
        if m.value_type in ("quantity", "integer"):
            numbers = table.numbers(m.field or "")
            if numbers is not None:
                # A numeric column needs no Python objects: float() of its values is a cast.
                rows = np.flatnonzero(~np.isnan(numbers))
                return rows, numbers[rows]
        found = table.plain(m.field or "")
        if found is None:
            return np.zeros(0, dtype=np.intp), _objects([])
        column = found
    rows = np.flatnonzero(pd.notna(column))
    return rows, column[rows]


class _Table:
    """One instrument table whose columns are read, once each, as plain Python values."""

    def __init__(self, form: str, df: pd.DataFrame):
        self.form, self.df, self.n = form, df, len(df)
        # As a dict of each row would have it: of equally named columns the last wins.
        self.position = {str(c): j for j, c in enumerate(df.columns)}
        self._plain: dict[str, np.ndarray] = {}
        self.offset = -1  # where its rows start among the output's source rows, once used

    def plain(self, name: str) -> np.ndarray | None:
        """The column as an object array (pandas NA and NaN become None); None without it."""
        if name not in self._plain:
            j = self.position.get(name)
            if j is None:
                return None
            column = self.df.iloc[:, j]
            # An object column gives a view of the caller's table: copy it before setting None.
            values = column.to_numpy(dtype=object, copy=column.dtype == object)
            # pd.isna on the object array finds None, NaN, NA and NaT (as _plain does).
            values[pd.isna(values)] = None
            if _may_hold_timestamps(column.dtype):
                values = _objects([_plain(v) for v in values])
            self._plain[name] = values
        return self._plain[name]

    def numbers(self, name: str) -> np.ndarray | None:
        """A Float64 or Int64 column as floats, NaN where null; None for other columns."""
        j = self.position.get(name)
        if j is None or not isinstance(self.df.dtypes.iloc[j], pd.Float64Dtype | pd.Int64Dtype):
            return None
        return self.df.iloc[:, j].to_numpy(dtype=np.float64, na_value=np.nan)

    def is_text(self, name: str) -> bool:
        """Whether the table has the column and it holds only strings (and nulls)."""
        j = self.position.get(name)
        return j is not None and isinstance(self.df.dtypes.iloc[j], pd.StringDtype)

    def plain_or_none(self, name: str) -> np.ndarray:
        found = self.plain(name)
        return found if found is not None else _objects([None] * self.n)


def _objects(values: Iterable[Any] | Sequence[Any]) -> np.ndarray:
    """A 1-D object array of the values as they are (np.array would nest tuples)."""
    values = list(values)
    return np.fromiter(values, dtype=object, count=len(values))


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
    """The tables, and field values of other instruments for derived inputs, unit fields and
    effective dates of a record."""

    def __init__(self, tables: Mapping[str, pd.DataFrame], mapping: StudyMapping):
        # Shallow copies without attrs: pandas deep-copies attrs on every column access.
        self.tables = {form: _Table(form, pd.DataFrame(df, copy=False))
                       for form, df in tables.items()}
        self.mapping = mapping
        self._cache: dict[tuple[str, str], dict[tuple[Any, Any], Any]] = {}
        self._columns: dict[tuple[str, str, str], np.ndarray] = {}
        self.memo: dict[tuple[str, int], list] = {}  # derivation results per table and call
        self.calls: dict[Any, Any] = {}  # one Derivation object per distinct call
        # field -> the instrument whose table holds it (fields are unique across a project).
        self._forms = {f: form for form, t in self.tables.items() if t.n for f in t.position}

    def _values(self, form: str, field: str) -> dict[tuple[Any, Any], Any]:
        """(record, event) -> value, plus (record, None) -> first non-null value in table order."""
        key = (form, field)
        if key not in self._cache:
            table = self.tables[form]
            found: dict[tuple[Any, Any], Any] = {}
            values = table.plain(field)
            if values is not None:
                for value, record, event in zip(values, table.plain_or_none("record_id"),
                                                table.plain_or_none("redcap_event_name"),
                                                strict=True):
                    if value is not None:
                        found.setdefault((record, event), value)
                        found.setdefault((record, None), value)
            self._cache[key] = found
        return self._cache[key]

    def column(self, field: str, table: _Table, form: str) -> np.ndarray:
        """`field` for every row of `table`: its own column, else the value of the instrument
        holding it at the same record and event, else that record's first one."""
        own = table.plain(field)
        if own is not None:
            return own
        key = (table.form, field, form)
        if key not in self._columns:
            other = self._forms.get(field)
            if other is None or other == form:
                self._columns[key] = _objects([None] * table.n)
            else:
                values = self._values(other, field)
                got = values.get
                self._columns[key] = _objects(
                    found if (found := got((record, event))) is not None else got((record, None))
                    for record, event in zip(table.plain_or_none("record_id"),
                                             table.plain_or_none("redcap_event_name"),
                                             strict=True))
        return self._columns[key]

    def typed_inputs(self, field: str, table: _Table, form: str) -> np.ndarray:
        """A derived input's values per row, choice codes of integer-coded fields as ints."""
        values = self.column(field, table, form)
        m = self.mapping.by_field.get(field)
        if m is not None and m.value_type == "codeable":
            return values
        if table.is_text(field):
            # Every value is a str: convert each distinct one once.
            codes, distinct = pd.factorize(values)
            typed = _objects([*map(_typed_text, distinct), None])
            return typed[codes]  # code -1 (null) takes the None at the end
        return _objects(_typed_text(v) if isinstance(v, str) else v for v in values)


def _constant_columns(m: Measure, parent: Measure, lookup: _RecordValues) -> tuple:
    """The columns that are the same on every row of a measure (_MEASURE_COLUMNS)."""
    first = m.codes[0]
    return (m.measure_id, m.parent, m.instrument, m.field, m.label, m.value_type,
            first.system_url(lookup.mapping.study.codesystem.url), first.code, first.display,
            parent.category, m.direction)


class _Failed:
    """A derivation call that raised (ValueError or TypeError) for one row."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def _derived_column(m: Measure, table: _Table, lookup: _RecordValues) -> np.ndarray:
    """A derived measure's value per row of its table (None where it gives no row)."""
    assert m.derived is not None
    # Several measures can share one call (the 8 RAND-36 scales): equal calls share one object
    # and its results per row (hashing the dataclass per row would be slow).
    whole = replace(m.derived, output=None)
    whole = lookup.calls.setdefault(whole, whole)
    key = (table.form, id(whole))
    results = lookup.memo.get(key)
    if results is None:
        fields = m.derived.fields
        inputs = [lookup.typed_inputs(f, table, m.instrument) for f in fields]
        rows = zip(*inputs, strict=True) if fields else [()] * table.n
        results = lookup.memo[key] = [_call(whole, dict(zip(fields, row, strict=True)))
                                      for row in rows]
    output = m.derived.output
    records = table.plain_or_none("record_id")
    events = table.plain_or_none("redcap_event_name")
    column = _objects([None] * table.n)
    for i, result in enumerate(results):
        # A failed call warns once per measure (as when each measure called it again).
        error = result.error if isinstance(result, _Failed) else None
        if error is None and output is not None:
            try:
                result = result[output]
            except (ValueError, TypeError) as exc:
                error = exc
        if error is not None:
            logger.warning("record %s, event %s: derived measure %s not computed: %s",
                           records[i], events[i], m.measure_id, error)
            continue
        if result is None or (isinstance(result, float) and math.isnan(result)):
            continue
        column[i] = float(result)
    return column


def _call(derivation: Derivation, values: Mapping[str, Any]) -> Any:
    try:
        return derivation.compute(values)
    except (ValueError, TypeError) as exc:
        return _Failed(exc)


def _typed_text(value: str) -> Any:
    """Choice codes of integer-coded fields (FSS, SF-36 answers) become ints for score functions."""
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else value


# The value columns a measure fills (the others of _VALUE_COLUMNS are null on its rows).
_VALUE_COLUMNS = ("value", "value_code_system", "value_code", "value_display", "value_text",
                  "unit")
Segment = tuple[Any, np.ndarray]  # typed values and, per row, the index of its value


def _value_columns(m: Measure, values: np.ndarray, rows: np.ndarray, table: _Table,
                   lookup: _RecordValues) -> dict[str, Segment]:
    """The value columns of a measure's rows (`values`, non-null, at `rows` of `table`)."""
    try:
        return _vector_values(m, values, rows, table, lookup)
    except Exception:
        # Raise what the first failing row raises when built on its own.
        records = table.plain_or_none("record_id")
        units = _unit_codes(m, table, lookup)
        for i, value in zip(rows, values, strict=True):
            _row_values(m, value, records[i], None if units is None else units[i],
                        lookup.mapping.study.codesystem.url)
        raise


def _vector_values(m: Measure, values: np.ndarray, rows: np.ndarray, table: _Table,
                   lookup: _RecordValues) -> dict[str, Segment]:
    every = np.arange(len(values))
    if m.value_type == "codeable":
        index, texts = _distinct([str(v) for v in values])
        codings = [m.answer(t) for t in texts]
        if any(c is None for c in codings):
            raise LookupError("an unmapped code")
        url = lookup.mapping.study.codesystem.url
        return {"value_code_system": (_strings([c.system_url(url) for c in codings]), index),
                "value_code": (_strings([c.code for c in codings]), index),
                "value_display": (_strings([c.display for c in codings]), index)}
    if m.value_type == "string":
        return {"value_text": (_strings([str(v) for v in values]), every)}
    if m.value_type == "boolean":
        flags = [1.0 if str(v) in ("1", "True", "true") else 0.0 for v in values]
        return {"value": (pd.array(np.array(flags, dtype=np.float64), dtype="Float64"), every)}
    numbers = values.astype(np.float64)  # float() of each value
    if m.value_type == "integer":
        if not np.isfinite(numbers).all():
            raise OverflowError("not a finite integer")
        # float(int(x)) truncates towards zero; + 0.0 turns trunc's -0.0 into int's 0.
        return {"value": (pd.array(np.trunc(numbers) + 0.0, dtype="Float64"), every)}
    units = _unit_codes(m, table, lookup)
    if m.convert is not None:
        convert = m.convert
        codes = [None] * len(rows) if units is None else units[rows]
        index, distinct = _distinct([None if c is None else str(c) for c in codes])
        # A blank unit field is the measure's unit (REDCap's @DEFAULT fills it on entry).
        factors = np.array([1.0 if units is not None and c is None else convert.factor_for(c)
                            for c in distinct], dtype=np.float64)
        numbers = numbers * factors[index]
    out = {"value": (pd.array(numbers, dtype="Float64"), every)}
    if m.unit is not None:
        out["unit"] = (_strings([m.unit]), np.zeros(len(values), dtype=np.intp))
    return out


def _unit_codes(m: Measure, table: _Table, lookup: _RecordValues) -> np.ndarray | None:
    """The per-row unit code of a measure converted by a unit field, else None."""
    if m.convert is None or not m.convert.from_unit_field:
        return None
    return lookup.column(m.convert.from_unit_field, table, m.instrument)


def _row_values(m: Measure, value: Any, record: Any, unit_code: Any, local_url: str) -> tuple:
    """value, value_code_system, value_code, value_display, value_text, unit of one row."""
    if m.value_type == "codeable":
        coding = m.answer(str(value))
        if coding is None:
            raise ValueError(f"record {record!r}, field {m.field!r}: code {value!r} is not mapped")
        return (None, coding.system_url(local_url), coding.code, coding.display, None, None)
    if m.value_type == "string":
        return (None, None, None, None, str(value), None)
    if m.value_type == "boolean":
        return (1.0 if str(value) in ("1", "True", "true") else 0.0, None, None, None, None, None)
    if m.value_type == "integer":
        return (float(int(float(value))), None, None, None, None, None)
    return (float(value) * _factor(m, record, unit_code), None, None, None, None, m.unit)


def _factor(m: Measure, record: Any, code: Any) -> float:
    """The configured unit conversion factor for a row (1 without a conversion)."""
    if m.convert is None:
        return 1.0
    if m.convert.from_unit_field and code is None:
        # REDCap's @DEFAULT fills the unit field on entry; a blank one is the measure's unit.
        return 1.0
    try:
        return m.convert.factor_for(None if code is None else str(code))
    except ValueError as exc:
        raise ValueError(f"record {record!r}, measure {m.measure_id}: {exc}") from exc


def _distinct(keys: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Per key the index of its first occurrence among the distinct keys, and those keys."""
    first: dict[Any, int] = {}
    index = np.fromiter((first.setdefault(k, len(first)) for k in keys), dtype=np.intp,
                        count=len(keys))
    return index, list(first)


def _strings(values: Sequence[Any]) -> Any:
    return pd.array(list(values), dtype=STRING)


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
        sequence = list(df["redcap_event_name"].dropna().unique())  # first-appearance order
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


class _Column:
    """An output column gathered from typed segments: each row indexes their concatenation."""

    def __init__(self, dtype: Any):
        self.dtype = dtype
        self.parts: list[Any] = []
        self.size = 0
        self._null = -1

    def add(self, segment: Any) -> int:
        """Append a segment; the index of its first value."""
        self.parts.append(segment)
        self.size += len(segment)
        return self.size - len(segment)

    def null(self) -> int:
        if self._null < 0:
            self._null = self.add(_typed([None], self.dtype))
        return self._null

    def take(self, index: np.ndarray) -> pd.Series:
        if not self.parts:
            return pd.Series(_typed([], self.dtype))
        if isinstance(self.parts[0], np.ndarray):
            return pd.Series(np.concatenate(self.parts).take(index))
        if getattr(self.dtype, "storage", None) == "pyarrow" or isinstance(self.dtype,
                                                                            pd.ArrowDtype):
            # One pyarrow take over the joined segments gives one contiguous chunk.
            joined = pa.concat_arrays([pa.array(p) for p in self.parts]).take(index)
            if isinstance(self.dtype, pd.ArrowDtype):
                return pd.Series(pd.arrays.ArrowExtensionArray(joined))
            return pd.Series(pd.arrays.ArrowStringArray(joined))
        joined = pd.concat([pd.Series(p) for p in self.parts], ignore_index=True)
        return pd.Series(joined.array.take(index))


def _typed(values: list[Any], dtype: Any) -> Any:
    if dtype == "datetime64[ms]":
        return pd.Series(values, dtype=dtype).to_numpy()
    return pd.array(values, dtype=dtype)


class _Output:
    """The rows gathered measure by measure, as indexes into typed segments; `frame` sorts and
    assembles them."""

    def __init__(self, lookup: _RecordValues, events: Mapping[str | None, int],
                 labels: Mapping[str, str], weeks: Mapping[str, float]):
        self.lookup, self.events, self.labels, self.weeks = lookup, events, labels, weeks
        self.columns = {name: _Column(COLUMNS[name]) for name in _ROW_COLUMNS}
        # Per source row of the tables used (in order of first use): its sort key parts.
        self.sort_parts: list[tuple[list[str], list[int], list[str], list[int]]] = []
        self.source_rows = 0
        self.effective: dict[tuple[str, str | None, str], int] = {}
        # Per measure's rows: source rows, effective-column rows, measure index and rank count.
        self.index: dict[str, list[np.ndarray]] = {name: [] for name in _VALUE_COLUMNS}
        self.source: list[np.ndarray] = []
        self.dates: list[np.ndarray] = []
        self.counts: list[tuple[int, int, int]] = []

    def _register(self, table: _Table) -> None:
        """The key columns, visit label and week, and sort key parts of a table's rows."""
        table.offset = self.source_rows
        self.source_rows += table.n
        for name in KEY_COLUMNS:
            self.columns[name].add(_typed(list(table.plain_or_none(name)), COLUMNS[name]))
        events = table.plain_or_none("redcap_event_name")
        self.columns["event_label"].add(
            _typed([self.labels.get(e) if e else None for e in events], STRING))
        self.columns["event_week"].add(
            _typed([self.weeks.get(e) if e else None for e in events], "Float64"))
        self.sort_parts.append((
            [str(r) for r in table.plain_or_none("record_id")],
            [self.events.get(e, -1) for e in events],
            [r or "" for r in table.plain_or_none("redcap_repeat_instrument")],
            [r or 0 for r in table.plain_or_none("redcap_repeat_instance")]))

    def _effective(self, parent: Measure, table: _Table) -> int:
        """Where the effective date columns of the parent's effective field start for `table`."""
        key = (table.form, parent.effective_field, parent.instrument)
        if key not in self.effective:
            values = (self.lookup.column(parent.effective_field, table, parent.instrument)
                      if parent.effective_field else [None] * table.n)
            dates: list[Any] = []
            times: list[Any] = []
            for value in values:
                if isinstance(value, datetime):
                    dates.append(value.date())
                    times.append(value)
                elif isinstance(value, date):
                    dates.append(value)
                    times.append(None)
                else:
                    dates.append(None)
                    times.append(None)
            at = self.columns["effective_date"].add(_typed(dates, DATE_DTYPE))
            if self.columns["effective_datetime"].add(_typed(times, "datetime64[ms]")) != at:
                raise AssertionError("effective date columns out of step")
            self.effective[key] = at
        return self.effective[key]

    def add(self, m: Measure, parent: Measure, table: _Table, rows: np.ndarray,
            values: np.ndarray, which: int, rank: int) -> None:
        columns = _value_columns(m, values, rows, table, self.lookup)
        if table.offset < 0:
            self._register(table)
        self.source.append(table.offset + rows)
        self.dates.append(self._effective(parent, table) + rows)
        for name in _VALUE_COLUMNS:
            if name in columns:
                segment, index = columns[name]
                self.index[name].append(self.columns[name].add(segment) + index)
            else:
                self.index[name].append(np.full(len(rows), self.columns[name].null(), np.intp))
        self.counts.append((len(rows), which, rank))

    def _order(self, source: np.ndarray, ranks: np.ndarray, measures: int) -> np.ndarray:
        """The sort: record (numeric ids numerically), event, repeat instrument and instance,
        then measure rank; stable, so equal keys keep the order rows were added in."""
        records, events, instruments, instances = (
            [v for part in self.sort_parts for v in part[i]] for i in range(4))
        record_rank = _ranks(records, _natural)
        instrument_rank = _ranks(instruments, None)
        keys = (np.array(instances, dtype=np.int64), instrument_rank,
                np.array(events, dtype=np.int64), record_rank)
        by = np.lexsort(keys)
        # Equal sort keys (rows of different tables of one record and event) share a rank.
        step = np.zeros(len(by), dtype=np.int64)
        for key in keys:
            ordered = key[by]
            step[1:] |= ordered[1:] != ordered[:-1]
        dense = np.empty(len(by), dtype=np.int64)
        dense[by] = np.cumsum(step)
        return np.argsort(dense[source] * measures + ranks, kind="stable")

    def frame(self, constants: list[tuple], measures: int) -> pd.DataFrame:
        counts = np.array(self.counts, dtype=np.intp).reshape(-1, 3)
        source = _joined(self.source)
        order = (self._order(source, np.repeat(counts[:, 2], counts[:, 0]), measures)
                 if len(source) else source)
        which = np.repeat(counts[:, 1], counts[:, 0])[order]
        source = source[order]
        dates = _joined(self.dates)[order]
        out = {name: self.columns[name].take(source)
               for name in (*KEY_COLUMNS, "event_label", "event_week")}
        out.update({name: self.columns[name].take(dates)
                    for name in ("effective_date", "effective_datetime")})
        out.update({name: self.columns[name].take(_joined(self.index[name])[order])
                    for name in _VALUE_COLUMNS})
        # A measure's own columns are built once per measure and repeated by index (take).
        per_measure = np.array(constants, dtype=object).reshape(len(constants),
                                                                len(_MEASURE_COLUMNS))
        out.update({
            name: pd.Series(pd.array(per_measure[:, j].tolist(), dtype=COLUMNS[name]).take(which))
            for j, name in enumerate(_MEASURE_COLUMNS)})
        return pd.DataFrame({name: out[name] for name in COLUMNS})


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)


def _natural(record: str) -> tuple:
    """Numeric record ids numerically, before the others."""
    return (0, int(record), record) if record.isdigit() else (1, 0, record)


def _ranks(values: list[Any], key: Any) -> np.ndarray:
    """Each value's position among the distinct values sorted by `key`."""
    position = {v: i for i, v in enumerate(sorted(set(values), key=key))}
    return np.fromiter(map(position.__getitem__, values), dtype=np.int64, count=len(values))
