"""FHIR R4 Observations from rows of the long measurement table (imt_etl.measures), as plain dicts.

One Observation per (record, event, repeat instance, observation measure); component measures
become `Observation.component` of their parent. Decisions:
- code: every coding of the measure, most specific first (local CodeSystem URL, LOINC, SNOMED);
  `text` is the measure's label.
- value: valueQuantity (UCUM system and code, after configured conversions), valueInteger,
  valueCodeableConcept (from the value map), valueBoolean or valueString by the measure's
  value_type. Quantities are rounded to 6 decimals (conversion float noise) and written as
  integers when whole.
- When only components carry values, the Observation has dataAbsentReason `unknown` (obs-6).
- effectiveDateTime: a REDCap date stays a date; a REDCap date-time gets the study zone's offset.
- status final; `issued` is left out so that unchanged data gives byte-identical output.
- encounter: only for visits that have an Encounter (see imt_etl.fhir.study.visit_keys).
- derivedFrom: the QuestionnaireResponse of the same (record, event, form, instance).

Built column-wise with the parts every Observation of a measure (category, code) or of a visit's
form (subject, encounter, derivedFrom, the id's hashed prefix) has made once and shared by
reference: treat the returned resources as read-only below the top level (status may change).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from imt_etl.errors import FhirBuildError
from imt_etl.fhir import ids
from imt_etl.fhir.context import FhirContext, encounter_ref, patient_ref, visit_form_ids
from imt_etl.fhir.mappings import CATEGORY_SYSTEM, Measure

UCUM = "http://unitsofmeasure.org"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
CATEGORY_DISPLAY = {
    "social-history": "Social History", "vital-signs": "Vital Signs", "imaging": "Imaging",
    "laboratory": "Laboratory", "procedure": "Procedure", "survey": "Survey", "exam": "Exam",
    "therapy": "Therapy", "activity": "Activity",
}
_DECIMALS = 6
_KINDS = frozenset({"codeable", "string", "boolean", "integer"})  # else a quantity
_UNKNOWN = {"coding": [{"system": DATA_ABSENT, "code": "unknown", "display": "Unknown"}]}

Row = Mapping[str, Any]
VisitKey = tuple[str, str | None]  # (record, event)


def to_observation(
    rows: Sequence[Row],
    ctx: FhirContext,
    *,
    encounter: bool = True,
    derived_from: bool = True,
) -> dict[str, Any]:
    """The Observation of one measure at one (record, event, instance): its row and components.

    `rows` are rows of the measurement table (dicts; pandas NA allowed): the parent measure's
    row (absent when only components have values) and its components' rows.
    """
    if not rows:
        raise ValueError("to_observation needs at least one measurement row")
    build = _Builder(_Columns.of_rows(rows), ctx, visits=None if encounter else (),
                     derived_from=derived_from)
    try:
        return build.observation(list(range(len(rows))))
    finally:
        build.close()


def observations(
    table: pd.DataFrame,
    ctx: FhirContext,
    *,
    visits: Collection[VisitKey] | None = None,
    derived_from: bool = True,
) -> list[dict[str, Any]]:
    """Every Observation of a measurement table, in table order.

    `visits` are the (record, event) pairs that have an Encounter; None refers every
    Observation to its event's Encounter.
    """
    columns = _Columns.of_table(table)
    build = _Builder(columns, ctx, visits=visits, derived_from=derived_from)
    try:
        return build.every()
    finally:
        build.close()


# --- the table, column-wise -----------------------------------------------------------------------

class _Columns:
    """The measurement table as one list per column (indexing a list is much cheaper than a
    dict per row), with the key columns already turned into text and numbers. Other columns
    are read when first needed; a missing one reads as all None (as row.get did)."""

    def __init__(self, load: Callable[[str], list[Any] | None], size: int):
        self._load = load
        self._loaded: dict[str, list[Any]] = {}
        self._none = [None] * size
        self.record_values = self["record_id"]  # the grouping key keeps the raw values
        self.records = _texts_or_str(self.record_values)
        self.measure_ids = _texts_or_str(self["measure_id"])
        # The Observation's measure: the parent of a component row, else the row's own.
        self.measures = [p or m for p, m in zip(_texts(self.get("parent_measure_id")),
                                                self.measure_ids, strict=True)]
        self.events = _texts(self.get("redcap_event_name"))
        self.repeat_forms = _texts(self.get("redcap_repeat_instrument"))
        self.instances = [None if v is None or v is pd.NA else _instance(v)
                          for v in self.get("redcap_repeat_instance")]
        self.values = self.get("value")
        self.units = self.get("unit")
        self.moments = self.get("effective_datetime")
        self.days = self.get("effective_date")

    @classmethod
    def of_table(cls, table: pd.DataFrame) -> _Columns:
        position = {str(c): i for i, c in enumerate(table.columns)}  # the last of a name wins

        def load(name: str) -> list[Any] | None:
            if name not in position:
                return None
            return _objects(table.iloc[:, position[name]])

        return cls(load, len(table))

    @classmethod
    def of_rows(cls, rows: Sequence[Row]) -> _Columns:
        def load(name: str) -> list[Any] | None:
            if name in ("record_id", "measure_id", "value_text"):  # read as row[name] before
                return [r[name] for r in rows]
            return [r.get(name) for r in rows] if any(name in r for r in rows) else None

        return cls(load, len(rows))

    def get(self, name: str) -> list[Any]:
        """The column's values; all None when the table has no such column."""
        values = self._loaded.get(name)
        if values is None:
            loaded = self._load(name)
            values = self._loaded[name] = self._none if loaded is None else loaded
        return values

    def __getitem__(self, name: str) -> list[Any]:
        """The column's values; KeyError when the table has no such column."""
        values = self.get(name)
        if values is self._none:
            raise KeyError(name)
        return values


def _objects(column: pd.Series) -> list[Any]:
    """column.to_numpy(dtype=object).tolist(), the same values; a pyarrow date column (whose
    conversion boxes element by element) converts each distinct value once instead."""
    dtype = column.dtype
    if not (isinstance(dtype, pd.ArrowDtype) and pa.types.is_date(dtype.pyarrow_dtype)):
        return column.to_numpy(dtype=object).tolist()
    codes, distinct = column.factorize(use_na_sentinel=False)
    values = distinct.to_numpy(dtype=object).tolist()
    return list(map(values.__getitem__, codes.tolist()))


def _texts(values: list[Any]) -> list[str | None]:
    na = pd.NA  # most non-text cells are null: answered without a call to _text
    return [v if type(v) is str else None if v is na or v is None else _text(v)
            for v in values]


def _texts_or_str(values: list[Any]) -> list[str]:
    return [v if type(v) is str else str(v) for v in values]


# --- building -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MeasureParts:
    """What every Observation (or component) of one measure has in common: made once, shared."""

    measure: Measure
    category: list[dict[str, Any]]
    code: dict[str, Any]
    id_tail: bytes  # the measure's part of the Observation ids (see ids.prefixed_id)
    order: dict[str, int]  # component measure -> position in the mapping
    value: Callable[[Measure, int, str], tuple[str, Any]]  # (row, record) -> value[x] element
    kind: str  # the value's type: "quantity", "integer" (read inline when usual) or another


@dataclass(frozen=True, slots=True)
class _VisitParts:
    """What every Observation of one form at one (record, event, instance) has in common."""

    id_prefix: bytes
    subject: dict[str, str]
    encounter: dict[str, str] | None
    derived_from: list[dict[str, str]] | None


def _head(shared: _MeasureParts, visit: _VisitParts, effective: str | None) -> dict[str, Any]:
    """An Observation's first elements (in the order they are serialised), before its value."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ids.prefixed_id(visit.id_prefix, shared.id_tail),
        "status": "final",
        "category": shared.category,
        "code": shared.code,
        "subject": visit.subject,
    }
    if visit.encounter is not None:
        resource["encounter"] = visit.encounter
    if effective:
        resource["effectiveDateTime"] = effective
    return resource


class _Builder:
    """Observations from rows of `columns`, with the shared parts made once per measure and
    per visit's form."""

    def __init__(self, columns: _Columns, ctx: FhirContext, *,
                 visits: Collection[VisitKey] | None, derived_from: bool):
        self.columns = columns
        self.ctx = ctx
        self.visits = visits
        self.derived_from = derived_from
        self._measures: dict[str, _MeasureParts] = {}
        self._visit_parts: dict[tuple, _VisitParts] = {}
        self._record_events: dict[VisitKey, tuple[dict, dict | None]] = {}
        self._effectives = _effectives(columns, ctx)

    def close(self) -> None:
        """Break the cycle builder -> measure parts -> their value reader (a method of the
        builder): left to the cyclic collector, which a run calls rarely (imt_etl.gcpolicy),
        every batch's builder and its columns stayed in memory (+290 MB at 400 participants)."""
        self._measures.clear()
        self._visit_parts.clear()

    def observation(self, rows: list[int]) -> dict[str, Any]:
        """The Observation of the rows of one measure (and its components) at one visit."""
        c = self.columns
        first = rows[0]
        parent_id = c.measures[first]
        shared = self._measures.get(parent_id) or self._measure(parent_id)
        parent = shared.measure
        record = c.records[first]
        key = (record, c.events[first], parent.instrument, c.instances[first])
        visit = self._visit_parts.get(key) or self._visit(*key)
        if len(rows) == 1:  # most Observations: one row, no components
            own = rows if c.measure_ids[first] == parent_id else []
        else:
            own = [r for r in rows if c.measure_ids[r] == parent_id]
        resource = _head(shared, visit, self._effectives[own[0] if own else first])
        if own:
            element, value = shared.value(parent, own[0], record)
            resource[element] = value
        else:
            resource["dataAbsentReason"] = _UNKNOWN
        if visit.derived_from is not None:
            resource["derivedFrom"] = visit.derived_from
        if len(own) < len(rows):
            parts = [r for r in rows if c.measure_ids[r] != parent_id]
            parts.sort(key=lambda r: shared.order.get(c.measure_ids[r], len(shared.order)))
            resource["component"] = [self._component(r, record) for r in parts]
        return resource

    def every(self) -> list[dict[str, Any]]:
        """Every Observation of the table: `observation` of each group of rows of one measure
        (and its components) at one (record, event, instance), in the order of their first
        rows; the usual Observation (one row, a float value, no components) built inline."""
        c = self.columns
        size = len(c.records)
        # Each row's group is named by its first row: map() keeps the per-row work in C.
        first: dict[tuple, int] = {}
        leads = list(map(first.setdefault, zip(c.record_values, c.events, c.repeat_forms,
                                                c.instances, c.measures, strict=True),
                         range(size)))
        groups: dict[int, list[int]] = {}
        for row in [r for r, lead in enumerate(leads) if lead != r]:
            lead = leads[row]
            rows = groups.get(lead)
            if rows is None:
                rows = groups[lead] = [lead]
            rows.append(row)
        measures, measure_ids, records = c.measures, c.measure_ids, c.records
        events, instances, values, units = c.events, c.instances, c.values, c.units
        effectives, parts, visits = self._effectives, self._measures, self._visit_parts
        out = []
        for lead in first.values():
            measure_id = measures[lead]
            if lead in groups or measure_ids[lead] != measure_id:
                # components, or a measure's row repeated: the general builder
                out.append(self.observation(groups.get(lead) or [lead]))
                continue
            shared = parts.get(measure_id) or self._measure(measure_id)
            measure, record = shared.measure, records[lead]
            key = (record, events[lead], measure.instrument, instances[lead])
            visit = visits.get(key) or self._visit(*key)
            resource = _head(shared, visit, effectives[lead])
            value = values[lead]
            kind = shared.kind
            if value.__class__ is not float or value != value:  # not a float, or NaN
                element, content = shared.value(measure, lead, record)
                resource[element] = content
            elif kind == "quantity":  # _quantity, inlined
                unit = units[lead]
                unit = (unit if unit.__class__ is str else _text(unit)) or measure.unit or ""
                rounded = round(value, _DECIMALS)
                resource["valueQuantity"] = {
                    "value": int(rounded) if rounded.is_integer() else rounded,
                    "unit": measure.unit_display or unit, "system": UCUM, "code": unit}
            elif kind == "integer" and value.is_integer():  # _integer, inlined
                resource["valueInteger"] = int(value)
            else:
                element, content = shared.value(measure, lead, record)
                resource[element] = content
            if visit.derived_from is not None:
                resource["derivedFrom"] = visit.derived_from
            out.append(resource)
        return out

    def _measure(self, measure_id: str) -> _MeasureParts:
        """The shared parts of a measure, made on its first Observation."""
        shared = self._measures.get(measure_id)
        if shared is None:
            m = self.ctx.mapping.measure(measure_id)
            shared = self._measures[measure_id] = _MeasureParts(
                measure=m, category=[_category(m.category or "")], code=_concept(m, self.ctx),
                id_tail=ids.id_tail(m.field or m.measure_id),
                order={c: i for i, c in enumerate(m.components)},
                value=self._value_reader(m.value_type),
                kind=m.value_type if m.value_type in _KINDS else "quantity",
            )
        return shared

    def _visit(self, record: str, event: str | None, form: str,
               instance: int | None) -> _VisitParts:
        """The shared parts of a visit's form, made on its first Observation."""
        subject, encounter = self._references(record, event)
        response, id_prefix = visit_form_ids(self.ctx, record, event, form, instance)
        shared = self._visit_parts[record, event, form, instance] = _VisitParts(
            id_prefix=id_prefix, subject=subject, encounter=encounter,
            derived_from=[{"reference": f"QuestionnaireResponse/{response}"}]
            if self.derived_from else None,
        )
        return shared

    def _references(self, record: str, event: str | None) -> tuple[dict, dict | None]:
        """subject and encounter of a (record, event): the same for each of its forms and
        repeat instances (a training period's diaries)."""
        found = self._record_events.get((record, event))
        if found is None:
            ctx = self.ctx
            encounter = self.visits is None or (record, event) in self.visits
            found = self._record_events[record, event] = (
                {"reference": patient_ref(ctx, record)},
                {"reference": encounter_ref(ctx, record, event)} if encounter else None,
            )
        return found

    def _component(self, row: int, record: str) -> dict[str, Any]:
        shared = self._measure(self.columns.measure_ids[row])
        element, value = shared.value(shared.measure, row, record)
        return {"code": shared.code, element: value}

    # --- value[x] by the measure's value_type: (measure, row, record) -> (element, content) ---

    def _value_reader(self, kind: str | None) -> Callable[[Measure, int, str], tuple[str, Any]]:
        readers = {"codeable": self._codeable, "string": self._string,
                   "boolean": self._boolean, "integer": self._integer}
        return readers.get(kind or "", self._quantity)

    def _codeable(self, m: Measure, row: int, record: str) -> tuple[str, Any]:
        c = self.columns
        code = _text(c.get("value_code")[row])
        if code is None:
            raise FhirBuildError(record, m.field or m.measure_id, "coded value without a code")
        coding = {"system": _text(c.get("value_code_system")[row]), "code": code}
        display = _text(c.get("value_display")[row])
        if display:
            coding["display"] = display
        concept: dict[str, Any] = {"coding": [coding]}
        if display:
            concept["text"] = display
        return "valueCodeableConcept", concept

    def _string(self, m: Measure, row: int, record: str) -> tuple[str, Any]:
        return "valueString", str(self.columns["value_text"][row])

    def _number(self, m: Measure, row: int, record: str) -> float:
        value = _number(self.columns.values[row])
        if value is None:
            raise FhirBuildError(record, m.field or m.measure_id, "measurement row without a value")
        return value

    def _boolean(self, m: Measure, row: int, record: str) -> tuple[str, Any]:
        return "valueBoolean", self._number(m, row, record) != 0

    def _integer(self, m: Measure, row: int, record: str) -> tuple[str, Any]:
        value = self._number(m, row, record)
        if not float(value).is_integer():
            raise FhirBuildError(record, m.field or m.measure_id, f"{value} is not an integer")
        return "valueInteger", int(value)

    def _quantity(self, m: Measure, row: int, record: str) -> tuple[str, Any]:
        value = self.columns.values[row]
        if type(value) is not float or value != value:  # not the usual case: a float, not NaN
            value = self._number(m, row, record)
        unit = _text(self.columns.units[row]) or m.unit or ""
        return "valueQuantity", {"value": _decimal(value), "unit": m.unit_display or unit,
                                 "system": UCUM, "code": unit}


def _category(code: str) -> dict[str, Any]:
    coding = {"system": CATEGORY_SYSTEM, "code": code}
    if code in CATEGORY_DISPLAY:
        coding["display"] = CATEGORY_DISPLAY[code]
    return {"coding": [coding]}


def _concept(m: Measure, ctx: FhirContext) -> dict[str, Any]:
    local = ctx.mapping.study.codesystem.url
    codings = []
    for c in m.codes:
        coding = {"system": c.system_url(local), "code": c.code, "display": c.display}
        if c.system == "local":
            coding["version"] = ctx.mapping.study.codesystem.version
        codings.append(coding)
    concept: dict[str, Any] = {"coding": codings}
    if m.label:
        concept["text"] = m.label
    return concept


def _effectives(columns: _Columns, ctx: FhirContext) -> list[str | None]:
    """effectiveDateTime of each row, the usual case (no date-time: None or NaT; a plain date,
    never missing) first. Every row, not just each Observation's: a loop is cheaper than calls."""
    return [day.isoformat() if (moment is None or moment is pd.NaT) and type(day) is date
            else _effective(moment, day, ctx)
            for moment, day in zip(columns.moments, columns.days, strict=True)]


def _effective(moment: Any, day: Any, ctx: FhirContext) -> str | None:
    if isinstance(moment, datetime | pd.Timestamp) and not pd.isna(moment):
        return ctx.local_datetime(pd.Timestamp(moment).to_pydatetime())
    if isinstance(day, date) and not pd.isna(day):
        return day.isoformat()
    return None


def _decimal(value: float) -> int | float:
    rounded = round(float(value), _DECIMALS)
    return int(rounded) if rounded.is_integer() else rounded


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return str(value)


def _instance(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
