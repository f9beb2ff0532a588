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
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd

from imt_etl.errors import FhirBuildError
from imt_etl.fhir.context import (
    FhirContext,
    encounter_ref,
    observation_id,
    patient_ref,
    questionnaire_response_ref,
)
from imt_etl.fhir.mappings import CATEGORY_SYSTEM, Measure

UCUM = "http://unitsofmeasure.org"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
CATEGORY_DISPLAY = {
    "social-history": "Social History", "vital-signs": "Vital Signs", "imaging": "Imaging",
    "laboratory": "Laboratory", "procedure": "Procedure", "survey": "Survey", "exam": "Exam",
    "therapy": "Therapy", "activity": "Activity",
}
_DECIMALS = 6

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
    first = rows[0]
    record = str(first["record_id"])
    parent_id = _text(first.get("parent_measure_id")) or str(first["measure_id"])
    parent = ctx.mapping.measure(parent_id)
    own = [r for r in rows if str(r["measure_id"]) == parent_id]
    parts = [r for r in rows if str(r["measure_id"]) != parent_id]
    event = _text(first.get("redcap_event_name"))
    instance = _instance(first.get("redcap_repeat_instance"))
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(ctx, record, event, parent.instrument, instance,
                             parent.field or parent.measure_id),
        "status": "final",
        "category": [_category(parent.category or "")],
        "code": _concept(parent, ctx),
        "subject": {"reference": patient_ref(ctx, record)},
    }
    if encounter:
        resource["encounter"] = {"reference": encounter_ref(ctx, record, event)}
    effective = _effective(own[0] if own else first, ctx)
    if effective:
        resource["effectiveDateTime"] = effective
    if own:
        resource.update(_value(parent, own[0], ctx, record))
    else:
        resource["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "unknown",
                                                    "display": "Unknown"}]}
    if derived_from:
        resource["derivedFrom"] = [{"reference": questionnaire_response_ref(
            ctx, record, event, parent.instrument, instance)}]
    if parts:
        ordered = _in_mapping_order(parts, parent)
        resource["component"] = [_component(r, ctx, record) for r in ordered]
    return resource


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
    out = []
    for rows in _groups(table):
        key = (str(rows[0]["record_id"]), _text(rows[0].get("redcap_event_name")))
        out.append(to_observation(rows, ctx, encounter=visits is None or key in visits,
                                  derived_from=derived_from))
    return out


def _groups(table: pd.DataFrame) -> Iterator[list[dict[str, Any]]]:
    """Rows grouped per Observation (a measure and its components), first appearance first."""
    names = [str(c) for c in table.columns]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for values in table.to_numpy(dtype=object):
        row = dict(zip(names, values, strict=True))
        measure = _text(row.get("parent_measure_id")) or str(row["measure_id"])
        key = (row["record_id"], _text(row.get("redcap_event_name")),
               _text(row.get("redcap_repeat_instrument")),
               _instance(row.get("redcap_repeat_instance")), measure)
        groups.setdefault(key, []).append(row)
    yield from groups.values()


def _in_mapping_order(rows: list[Row], parent: Measure) -> list[Row]:
    order = {c: i for i, c in enumerate(parent.components)}
    return sorted(rows, key=lambda r: order.get(str(r["measure_id"]), len(order)))


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


def _component(row: Row, ctx: FhirContext, record: str) -> dict[str, Any]:
    m = ctx.mapping.measure(str(row["measure_id"]))
    return {"code": _concept(m, ctx), **_value(m, row, ctx, record)}


def _value(m: Measure, row: Row, ctx: FhirContext, record: str) -> dict[str, Any]:
    kind = m.value_type
    if kind == "codeable":
        code = _text(row.get("value_code"))
        if code is None:
            raise FhirBuildError(record, m.field or m.measure_id, "coded value without a code")
        coding = {"system": _text(row.get("value_code_system")), "code": code}
        display = _text(row.get("value_display"))
        if display:
            coding["display"] = display
        concept: dict[str, Any] = {"coding": [coding]}
        if display:
            concept["text"] = display
        return {"valueCodeableConcept": concept}
    if kind == "string":
        return {"valueString": str(row["value_text"])}
    value = _number(row.get("value"))
    if value is None:
        raise FhirBuildError(record, m.field or m.measure_id, "measurement row without a value")
    if kind == "boolean":
        return {"valueBoolean": value != 0}
    if kind == "integer":
        if not float(value).is_integer():
            raise FhirBuildError(record, m.field or m.measure_id, f"{value} is not an integer")
        return {"valueInteger": int(value)}
    unit = _text(row.get("unit")) or m.unit or ""
    return {"valueQuantity": {"value": _decimal(value), "unit": m.unit_display or unit,
                              "system": UCUM, "code": unit}}


def _effective(row: Row, ctx: FhirContext) -> str | None:
    moment = row.get("effective_datetime")
    if isinstance(moment, datetime | pd.Timestamp) and not pd.isna(moment):
        return ctx.local_datetime(pd.Timestamp(moment).to_pydatetime())
    day = row.get("effective_date")
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
