"""Pandera schemas built at run time from any project's data dictionary, one per instrument.

A schema checks a typed instrument table (see imt_etl.redcap.tidy): column dtypes, validation
min/max for numbers, dates and date-times, slider ranges, allowed choice codes, text patterns
(email, phone, zipcode, ...) and the unique row key. Values that did not parse at all were already
reported by tidy as TypeIssues (dict.integer, dict.number, dict.date, dict.datetime, dict.choice)
and are null in the typed table. Required fields and branching logic need the raw rows and are
checked in imt_etl.validate.branching.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import pandas as pd
import pandera.pandas as pa

from imt_etl.errors import ImtEtlError
from imt_etl.redcap.dictionary import Choice, DataDictionary, Field, checkbox_column
from imt_etl.redcap.tidy import (
    DATE_DTYPE,
    DATETIME_DTYPE,
    KEY_COLUMNS,
    STRING_DTYPE,
    ProjectMeta,
    field_kind,
)
from imt_etl.validate.quarantine import ERROR, ROW_KEY, Finding

log = logging.getLogger(__name__)

# Text validation types checked by pattern: validation -> (rule id, regex, what it should be).
PATTERNS: dict[str, tuple[str, str, str]] = {
    "email": ("dict.email", r"[^@\s]+@[^@\s]+\.[^@\s.]+", "an e-mail address"),
    "phone": ("dict.phone",
              r"\(?[2-9]\d{2}\)?[\s.-]*[2-9]\d{2}[\s.-]*\d{4}(\s*(#|x\.?|ext\.?|extension)\s*\d+)?",
              "a North American phone number"),
    "phone_australia": ("dict.phone", r"(\(0[2-8]\)|0[2-8])?\s*\d{4}\s*\d{4}",
                        "an Australian phone number"),
    "zipcode": ("dict.zipcode", r"\d{5}(-\d{4})?", "a US ZIP code (12345 or 12345-6789)"),
    "postalcode_canada": ("dict.postalcode", r"[A-Za-z]\d[A-Za-z]\s?\d[A-Za-z]\d",
                          "a Canadian postal code"),
    "alpha_only": ("dict.alpha_only", r"[A-Za-z]+", "letters only"),
    "time": ("dict.time", r"([01]\d|2[0-3]):[0-5]\d", "a time HH:MM"),
    "time_hh_mm_ss": ("dict.time", r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d", "a time HH:MM:SS"),
    "time_mm_ss": ("dict.time", r"[0-5]\d:[0-5]\d", "a duration MM:SS"),
    "ssn": ("dict.ssn", r"\d{3}-\d{2}-\d{4}", "a social security number 123-45-6789"),
    "mrn_10d": ("dict.mrn", r"\d{10}", "a 10-digit MRN"),
}
DTYPES: dict[str, Any] = {
    "integer": "Int64", "number": "Float64", "number_comma": "Float64", "date": DATE_DTYPE,
    "datetime": DATETIME_DTYPE, "string": STRING_DTYPE, "choice": STRING_DTYPE,
}
SLIDER_RANGE = (0.0, 100.0)


class SchemaMismatch(ImtEtlError):
    """A typed table does not have the shape its dictionary says (a bug upstream, not data)."""


@dataclass(frozen=True)
class CheckInfo:
    """What one pandera check of a column means, for turning its failures into findings."""

    rule: str
    field: str  # the dictionary field (for checkboxes: the option column)
    problem: str  # e.g. "above the maximum 250"
    label: str = ""


@dataclass
class InstrumentSchema:
    """One instrument's schema plus what pandera cannot express by itself."""

    form: str
    schema: pa.DataFrameSchema
    checks: dict[tuple[str, int], CheckInfo] = field(default_factory=dict)
    identifiers: tuple[str, ...] = ()  # identifier fields, for the privacy stages
    fields: tuple[Field, ...] = ()  # the form's data fields, dictionary order (no record id)
    dtypes: dict[str, Any] = field(default_factory=dict)  # every column tidy makes, its dtype

    @property
    def required(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.required)


# -- bounds ------------------------------------------------------------------------------------


def _parse_bound(text: str, kind: str) -> Any:
    """A validation min/max as a comparable value; None when empty or not a literal ('today')."""
    if not text:
        return None
    try:
        if kind in ("integer", "number", "number_comma", "slider"):
            return float(text.replace(",", ".") if kind == "number_comma" else text)
        if kind == "date":
            return date.fromisoformat(text[:10])
        if kind == "datetime":
            return datetime.fromisoformat(text)
    except ValueError:
        log.debug("validation bound %r (%s) is not a literal; not checked", text, kind)
    return None


def _show(bound: Any) -> str:
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def _compare_check(op: str, bound: Any, kind: str, name: str) -> pa.Check:
    """A vectorised bound check; dates compare as dates, date-times as timestamps."""
    value = pd.Timestamp(bound) if kind == "datetime" else bound
    tests: dict[str, Callable[[pd.Series], pd.Series]] = {
        ">=": lambda s: s >= value, "<=": lambda s: s <= value,
    }
    return pa.Check(tests[op], name=name)


def _range_checks(f: Field, kind: str) -> list[tuple[pa.Check, CheckInfo]]:
    if f.field_type == "slider":
        low = _parse_bound(f.validation_min, "slider")
        high = _parse_bound(f.validation_max, "slider")
        low = SLIDER_RANGE[0] if low is None else low
        high = SLIDER_RANGE[1] if high is None else high
        kind = "integer"
    elif kind in ("integer", "number", "number_comma", "date", "datetime"):
        low = _parse_bound(f.validation_min, kind)
        high = _parse_bound(f.validation_max, kind)
    else:
        return []
    unit = f" ({f.note})" if f.note and kind in ("integer", "number", "number_comma") else ""
    out: list[tuple[pa.Check, CheckInfo]] = []
    if low is not None:
        out.append((_compare_check(">=", low, kind, "dict.range"),
                    CheckInfo("dict.range", f.name, f"below the minimum {_show(low)}{unit}",
                              f.label)))
    if high is not None:
        out.append((_compare_check("<=", high, kind, "dict.range"),
                    CheckInfo("dict.range", f.name, f"above the maximum {_show(high)}{unit}",
                              f.label)))
    return out


# -- columns -----------------------------------------------------------------------------------

Checks = list[tuple[pa.Check, CheckInfo]]


@dataclass
class _Columns:
    """Collects a form's expected columns (all, with dtypes) and its checked columns."""

    dtypes: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Checks] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, dtype: Any, checks: Checks | None = None, **metadata: Any) -> None:
        self.dtypes[name] = dtype
        self.checks[name] = checks or []
        self.metadata[name] = metadata

    def pandera_columns(self) -> dict[str, pa.Column]:
        """Columns for pandera. String dtype checks cost pandera ~2 ms a column, so string
        columns go to pandera only when they carry value checks, and without a dtype: the
        dtypes of all columns are compared once, cheaply, by check_columns."""
        out: dict[str, pa.Column] = {}
        for name, dtype in self.dtypes.items():
            checks = self.checks[name]
            is_string = dtype is STRING_DTYPE
            if is_string and not checks and name != "record_id":
                continue
            out[name] = pa.Column(None if is_string else dtype, [c for c, _ in checks],
                                  nullable=name != "record_id", required=True,
                                  metadata=self.metadata[name] or None)
        return out


def _field_columns(f: Field, meta: ProjectMeta, cols: _Columns) -> None:
    """Add the typed columns of one field (as tidy makes them) with their checks."""
    kind = field_kind(f)
    ident = {"identifier": True} if f.identifier else {}
    if kind == "descriptive":
        return
    if kind == "checkbox":
        for c in f.choices:
            cols.add(checkbox_column(f.name, c.code), "boolean", field=f.name, **ident)
    else:
        checks = _range_checks(f, kind)
        if kind == "choice":
            codes = [c.code for c in f.choices]
            checks.append((pa.Check.isin(codes), CheckInfo(
                "dict.choice", f.name, f"not one of the choices {', '.join(codes)}", f.label)))
        if kind == "string" and f.validation in PATTERNS:
            rule, pattern, what = PATTERNS[f.validation]
            checks.append((pa.Check.str_matches(f"^(?:{pattern})$"),
                           CheckInfo(rule, f.name, f"not {what}", f.label)))
        cols.add(f.name, DTYPES[kind], checks, field=f.name, **ident)
        if kind == "choice":
            cols.add(f"{f.name}_label", STRING_DTYPE)
    if meta.missing_codes and "@NOMISSING" not in f.annotation.upper():
        cols.add(f"{f.name}_missing", STRING_DTYPE)


def _key_columns(cols: _Columns) -> None:
    dtypes = {"record_id": STRING_DTYPE, "redcap_arm": "Int64", "redcap_event_name": STRING_DTYPE,
              "redcap_repeat_instrument": STRING_DTYPE, "redcap_repeat_instance": "Int64"}
    for name in KEY_COLUMNS:
        cols.add(name, dtypes[name])


def build_schema(meta: ProjectMeta, form: str) -> InstrumentSchema:
    """The schema of one instrument, from the dictionary alone (no study-specific code)."""
    rid = meta.dictionary.record_id_field
    fields = tuple(f for f in meta.dictionary.form_fields(form) if f.name != rid and f.has_data)
    cols = _Columns()
    _key_columns(cols)
    for f in fields:
        _field_columns(f, meta, cols)
    complete = f"{form}_complete"
    cols.add(complete, "Int64", [(pa.Check.isin([0, 1, 2]), CheckInfo(
        "dict.choice", complete, "not a form status (0, 1 or 2)", "Complete?"))])
    cols.add(f"{complete}_label", STRING_DTYPE)
    identifiers = tuple(f.name for f in fields if f.identifier)
    schema = pa.DataFrameSchema(
        cols.pandera_columns(), unique=list(ROW_KEY), name=form,
        metadata={"instrument": form, "identifiers": list(identifiers)},
    )
    checks = {(name, i): info for name, infos in cols.checks.items()
              for i, (_, info) in enumerate(infos)}
    return InstrumentSchema(form, schema, checks, identifiers, fields, dict(cols.dtypes))


def build_schemas(meta: ProjectMeta) -> dict[str, InstrumentSchema]:
    """One schema per instrument of the project, in dictionary order (cached per dictionary)."""
    return dict(_cached_schemas(meta.dictionary, meta.missing_codes))


@lru_cache(maxsize=8)
def _cached_schemas(dictionary: DataDictionary, missing: tuple[Choice, ...]
                    ) -> tuple[tuple[str, InstrumentSchema], ...]:
    # Schemas depend only on the dictionary and the missing-data codes; a sync validates the
    # same project again and again.
    meta = ProjectMeta(dictionary=dictionary, missing_codes=missing)
    return tuple((form, build_schema(meta, form)) for form in dictionary.forms)


def check_columns(spec: InstrumentSchema, table: pd.DataFrame) -> None:
    """Raise SchemaMismatch unless the table has every expected column with its dtype."""
    # The table's dtypes read once, not a Series built per column.
    actual = dict(zip(table.columns, table.dtypes, strict=True))
    for name, dtype in spec.dtypes.items():
        if name not in actual:
            raise SchemaMismatch(f"instrument {spec.form!r}: column {name!r} is missing")
        if str(actual[name]) != _dtype_name(dtype):
            raise SchemaMismatch(f"instrument {spec.form!r}: column {name!r} is "
                                 f"{actual[name]}, the dictionary says {dtype}")


@lru_cache(maxsize=64)
def _dtype_name(dtype: Any) -> str:
    return str(pd.api.types.pandas_dtype(dtype))


# -- running -----------------------------------------------------------------------------------


def _key_at(table: pd.DataFrame, index: Any) -> tuple[str, str | None, str | None, int | None]:
    row = table.loc[index]

    def clean(v: Any) -> Any:
        return None if pd.isna(v) else v

    instance = clean(row["redcap_repeat_instance"])
    return (str(row["record_id"]), clean(row["redcap_event_name"]),
            clean(row["redcap_repeat_instrument"]), None if instance is None else int(instance))


def _raw_value(raw: pd.DataFrame | None, index: Any, column: str, fallback: Any) -> str:
    if raw is not None and column in raw.columns:
        return str(raw.at[index, column])
    return "" if fallback is None or pd.isna(fallback) else str(fallback)


def _failure_findings(spec: InstrumentSchema, table: pd.DataFrame, raw: pd.DataFrame | None,
                      cases: pd.DataFrame) -> list[Finding]:
    found: list[Finding] = []
    seen_unique: set = set()
    for case in cases.itertuples(index=False):
        index = case.index
        if index is None or pd.isna(index):
            raise SchemaMismatch(
                f"instrument {spec.form!r}: column {case.column!r} fails {case.check!r}"
                f" ({case.failure_case!r}); the typed table does not match the dictionary")
        key = _key_at(table, index)
        if case.check == "multiple_fields_uniqueness":
            if index not in seen_unique:
                seen_unique.add(index)
                found.append(Finding("dict.unique_key", ERROR, spec.form, *key, "",
                                     "/".join(str(k) for k in key if k is not None),
                                     f"record {key[0]}: two rows have the same record, event "
                                     "and repeat instance"))
            continue
        number = None if pd.isna(case.check_number) else int(case.check_number)
        info = spec.checks.get((case.column, number)) if number is not None else None
        value = _raw_value(raw, index, case.column, case.failure_case)
        if info is None:
            info = CheckInfo("dict.schema", case.column, f"fails {case.check}")
        label = f"{info.label} " if info.label else ""
        found.append(Finding(info.rule, ERROR, spec.form, *key, case.column, value,
                             f"{label}[{case.column}] = {value}: {info.problem}"))
    return found


def run_schema(spec: InstrumentSchema, table: pd.DataFrame, raw: pd.DataFrame | None = None
               ) -> list[Finding]:
    """Validate one typed table; every pandera failure becomes a Finding on its row."""
    # pandas deep-copies `attrs` (tidy's column descriptions) on every derived frame, which
    # made pandera ~10x slower: validate a shallow view without them.
    view = table.copy(deep=False)
    view.attrs = {}
    check_columns(spec, view)
    try:
        spec.schema.validate(view, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return _failure_findings(spec, table, raw, exc.failure_cases)
    return []

