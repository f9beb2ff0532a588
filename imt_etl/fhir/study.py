"""FHIR R4 study resources (Patient, ResearchStudy, ResearchSubject, Encounter) and the whole set.

Decisions:
- Patient is pseudonymous: no name, telecom, address or REDCap identifier; one identifier
  {system: <canonical_base>/participant, value: pseudonym}. gender from the sex field (the
  mapping's `sex` derived input map unless the context names one); birthDate left out, or the
  year only with `birth_date="year"`.
- ResearchStudy: identifier NCT id (system https://clinicaltrials.gov), title, status from the
  context, one `arm` per REDCap arm.
- ResearchSubject (R4: `individual`, not R5's `subject`): status withdrawn (withdrawn = 1),
  ineligible (eligible = 0), off-study (completion date on or before the run date), else on-study;
  period from consent to withdrawal/completion; assignedArm = actualArm = the record's REDCap arm
  (REDCap keeps no separate actual arm).
- Encounter per visit: a (record, event) with a non-repeating instrument row. Events holding only
  repeating forms (the home-training period's diaries and calls) are not visits: their
  Observations carry no encounter. status finished, class = one Coding (R4) v3-ActCode AMB,
  period from the visit's effective dates, type text = the event label. The study link uses the
  R4 core extension http://hl7.org/fhir/StructureDefinition/workflow-researchStudy (defined in R4
  4.0.1 with Encounter in its context); R4 Encounter has no researchStudy element, and
  `episodeOfCare` would need an EpisodeOfCare resource that REDCap data cannot fill.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from imt_etl.fhir.codesystem import to_codesystem
from imt_etl.fhir.context import (
    FhirContext,
    encounter_id,
    patient_id,
    patient_ref,
    research_study_id,
    research_study_ref,
    research_subject_id,
)
from imt_etl.fhir.mappings import StudyMapping
from imt_etl.fhir.observation import observations
from imt_etl.measures import measurements
from imt_etl.redcap.tidy import ProjectMeta

logger = logging.getLogger(__name__)

CLINICALTRIALS = "https://clinicaltrials.gov"
# Identifier system per trial registry, by the id's prefix.
REGISTRY_SYSTEMS = {"NCT": CLINICALTRIALS, "ISRCTN": "https://www.isrctn.com"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RESEARCH_STUDY_EXT = "http://hl7.org/fhir/StructureDefinition/workflow-researchStudy"
GENDERS = frozenset({"male", "female", "other", "unknown"})
RESOURCE_ORDER = (
    "ResearchStudy", "CodeSystem", "Patient", "ResearchSubject", "Encounter", "Observation",
)

Tables = Mapping[str, pd.DataFrame]
VisitKey = tuple[str, str | None]


def build_study_resources(
    tables: Tables,
    mapping: StudyMapping,
    meta: ProjectMeta,
    *,
    ctx: FhirContext,
    derived_from: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """All resources of the study except Questionnaire(Response)s, keyed by type, in a fixed order.

    References resolve within the output, except Observation.derivedFrom, which points at the
    QuestionnaireResponses of the same rows (written by imt_etl.fhir.questionnaire_response
    with ids from imt_etl.fhir.context); pass derived_from=False when those are not written.
    """
    out = {**study_level_resources(tables, mapping, meta, ctx=ctx),
           **participant_resources(tables, mapping, meta, ctx=ctx, derived_from=derived_from)}
    logger.info("study resources: %s", {k: len(v) for k, v in out.items()})
    return {k: out[k] for k in RESOURCE_ORDER}


def study_level_resources(tables: Tables, mapping: StudyMapping, meta: ProjectMeta, *,
                          ctx: FhirContext) -> dict[str, list[dict[str, Any]]]:
    """ResearchStudy (its arms need every record's arm) and the study's CodeSystem."""
    if mapping is not ctx.mapping:
        raise ValueError("ctx was made for another mapping")
    arms = _record_arms(tables)
    return {"ResearchStudy": [to_research_study(ctx, _arm_numbers(meta, arms))],
            "CodeSystem": [to_codesystem(mapping)]}


def participant_resources(
    tables: Tables,
    mapping: StudyMapping,
    meta: ProjectMeta,
    *,
    ctx: FhirContext,
    derived_from: bool = True,
    table: pd.DataFrame | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Patient, ResearchSubject, Encounter and Observation of the records in `tables`: each
    depends only on its own record's rows, so any subset of records can be built on its own.
    `table` is their measurement table (imt_etl.measures), computed when not given."""
    if mapping is not ctx.mapping:
        raise ValueError("ctx was made for another mapping")
    plain = _without_attrs(tables)
    records = record_ids(plain)
    values = _RecordValues(plain)
    visits = visit_keys(plain, list(meta.event_arms))
    dates = _visit_dates(plain, mapping)
    arms = _record_arms(plain)
    if table is None:
        table = measurements(tables, mapping, event_order=list(meta.event_arms))
    return {
        "Patient": [to_patient(r, values.of(r), ctx) for r in records],
        "ResearchSubject": [to_research_subject(r, values.of(r), arms.get(r), ctx)
                            for r in records],
        "Encounter": [to_encounter(r, e, dates.get((r, e), []), ctx) for r, e in visits],
        "Observation": observations(table, ctx, visits=set(visits), derived_from=derived_from),
    }


# --- builders -------------------------------------------------------------------------------------


def to_patient(record: str, values: Mapping[str, Any], ctx: FhirContext) -> dict[str, Any]:
    """A pseudonymous Patient; `values` are the record's field values (first non-null each)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id(ctx, record),
        "identifier": [{"system": ctx.participant_system, "value": ctx.subject_key(record)}],
    }
    gender = _gender(values, ctx)
    if gender:
        resource["gender"] = gender
    if ctx.birth_date == "year" and ctx.subject_fields.birth_date:
        born = values.get(ctx.subject_fields.birth_date)
        if isinstance(born, date):
            resource["birthDate"] = f"{born.year:04d}"
    return resource


def to_research_study(ctx: FhirContext, arms: Iterable[int] = ()) -> dict[str, Any]:
    study = ctx.mapping.study
    resource: dict[str, Any] = {
        "resourceType": "ResearchStudy",
        "id": research_study_id(ctx),
    }
    identifiers = [{"system": system, "value": trial_id} for trial_id in study.trial_ids
                   for prefix, system in REGISTRY_SYSTEMS.items() if trial_id.startswith(prefix)]
    if identifiers:
        resource["identifier"] = identifiers
    resource["title"] = study.title
    resource["status"] = ctx.study_status
    arm_list = [{"name": _arm_name(n, ctx)} for n in arms]
    if arm_list:
        resource["arm"] = arm_list
    return resource


def to_research_subject(
    record: str, values: Mapping[str, Any], arm: int | None, ctx: FhirContext
) -> dict[str, Any]:
    status, start, end = _subject_status(values, ctx)
    resource: dict[str, Any] = {
        "resourceType": "ResearchSubject",
        "id": research_subject_id(ctx, record),
        "status": status,
    }
    period = _period(start, end)
    if period:
        resource["period"] = period
    resource["study"] = {"reference": research_study_ref(ctx)}
    resource["individual"] = {"reference": patient_ref(ctx, record)}
    if arm is not None:
        resource["assignedArm"] = resource["actualArm"] = _arm_name(arm, ctx)
    return resource


def to_encounter(
    record: str, event: str | None, dates: list[date], ctx: FhirContext
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": encounter_id(ctx, record, event),
        "extension": [{"url": RESEARCH_STUDY_EXT,
                       "valueReference": {"reference": research_study_ref(ctx)}}],
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
    }
    label = ctx.event_labels.get(event or "")
    if label:
        resource["type"] = [{"text": label}]
    resource["subject"] = {"reference": patient_ref(ctx, record)}
    period = _period(min(dates), max(dates)) if dates else None
    if period:
        resource["period"] = period
    return resource


# --- reading the tables ---------------------------------------------------------------------------


def _without_attrs(tables: Tables) -> dict[str, pd.DataFrame]:
    """Shallow copies without `attrs` (tidy's column notes): pandas deep-copies a frame's attrs
    into every column or row selection taken from it, which dominated reading the tables."""
    out = {}
    for form, frame in tables.items():
        plain = frame.copy(deep=False)
        plain.attrs = {}
        out[form] = plain
    return out


def record_ids(tables: Tables) -> list[str]:
    """Every record with a row in any table, numeric ids in numeric order."""
    found = {str(r) for df in tables.values() for r in df["record_id"].dropna().unique()}
    return sorted(found, key=lambda r: (0, int(r), r) if r.isdigit() else (1, 0, r))


def visit_keys(tables: Tables, event_order: Sequence[str] = ()) -> list[VisitKey]:
    """(record, event) pairs that have an Encounter: those with a non-repeating row.

    Sorted by record, then by `event_order` (the project's events; others after, by name).
    """
    found: set[VisitKey] = set()
    for df in tables.values():
        plain = df["redcap_repeat_instrument"].isna().to_numpy()
        found.update(zip(_strs(df["record_id"], plain), _texts(df["redcap_event_name"], plain),
                         strict=True))
    order = {r: i for i, r in enumerate(record_ids(tables))}
    events = {e: i for i, e in enumerate(event_order)}
    return sorted(found, key=lambda k: (order[k[0]], events.get(k[1] or "", len(events)),
                                        k[1] or ""))


class _RecordValues:
    """Per record, each field's first non-null value over the tables (rows are in event order).

    Read a field at a time, when first asked for: the Patient and ResearchSubject builders read
    a handful of fields, and turning every row of every table into a dict dominated their time.
    """

    def __init__(self, tables: Tables):
        self._tables = list(tables.values())
        self._records = [[str(r) for r in _column(df, "record_id", required=True) or ()]
                         for df in self._tables]
        self._firsts: dict[str, dict[str, Any]] = {}

    def of(self, record: str) -> Mapping[str, Any]:
        return _RecordView(self, record)

    def first(self, name: str) -> dict[str, Any]:
        """record -> the field's first non-null value (records without one left out)."""
        found = self._firsts.get(name)
        if found is None:
            found = self._firsts[name] = {}
            for df, records in zip(self._tables, self._records, strict=True):
                column = _column(df, name)
                if column is None:
                    continue
                for record, value in zip(records, column, strict=True):
                    if record not in found and not _missing(value):
                        found[record] = value
        return found

    def names(self) -> list[str]:
        return list(dict.fromkeys(str(c) for df in self._tables for c in df.columns))


class _RecordView(Mapping[str, Any]):
    """One record's fields with a value (see _RecordValues)."""

    def __init__(self, values: _RecordValues, record: str):
        self._values, self._record = values, record

    def __getitem__(self, name: str) -> Any:
        return self._values.first(name)[self._record]

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._values.names() if self._record in self._values.first(n))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _column(df: pd.DataFrame, name: str, required: bool = False) -> list[Any] | None:
    """A column's values as Python objects (as in df.to_numpy(dtype=object)); None when there is
    no such column (the last of a repeated name, as a dict of the row would have it)."""
    positions = [i for i, c in enumerate(df.columns) if str(c) == name]
    if not positions:
        if required:
            raise KeyError(name)
        return None
    return df.iloc[:, positions[-1]].to_numpy(dtype=object).tolist()


def _record_arms(tables: Tables) -> dict[str, int]:
    arms: dict[str, int] = {}
    for df in tables.values():
        known = df["redcap_arm"].notna().to_numpy()
        for record, arm in zip(_strs(df["record_id"], known),
                               df["redcap_arm"].to_numpy(dtype=object)[known].tolist(),
                               strict=True):
            arms.setdefault(record, int(arm))
    return arms


def _strs(column: pd.Series, rows: np.ndarray) -> list[str]:
    """str() of a column's values at the `rows` mask."""
    return [str(v) for v in column.to_numpy(dtype=object)[rows].tolist()]


def _texts(column: pd.Series, rows: np.ndarray) -> list[str | None]:
    """str() of a column's values at the `rows` mask, None where null (as pd.isna): one
    vectorised null check and conversion, not a pandas scalar per cell."""
    values = column.to_numpy(dtype=object)[rows].tolist()
    nulls = column.isna().to_numpy()[rows].tolist()
    return [None if null else str(v) for v, null in zip(values, nulls, strict=True)]


def _arm_numbers(meta: ProjectMeta, arms: Mapping[str, int]) -> list[int]:
    return sorted(set(meta.event_arms.values()) | set(arms.values()))


def _arm_name(number: int, ctx: FhirContext) -> str:
    return ctx.arm_names.get(number, f"Arm {number}")


def _visit_dates(tables: Tables, mapping: StudyMapping) -> dict[VisitKey, list[date]]:
    """The effective dates recorded at each visit (every instrument's effective field)."""
    fields = {(m.instrument, m.effective_field) for m in mapping.observations if m.effective_field}
    out: dict[VisitKey, list[date]] = {}
    for form, name in sorted(fields):
        df = tables.get(form)
        if df is None or name not in df:
            continue
        plain = df["redcap_repeat_instrument"].isna().to_numpy()
        for record, event, value in zip(_strs(df["record_id"], plain),
                                        _texts(df["redcap_event_name"], plain),
                                        df[name].to_numpy(dtype=object)[plain].tolist(),
                                        strict=True):
            if not _missing(value):
                out.setdefault((record, event), []).append(_as_date(value))
    return out


def _subject_status(values: Mapping[str, Any], ctx: FhirContext) -> tuple[str, Any, Any]:
    f = ctx.subject_fields
    start = values.get(f.consent_date) if f.consent_date else None
    if f.withdrawn and _flag(values.get(f.withdrawn)) == "1":
        end = values.get(f.withdrawal_date) if f.withdrawal_date else None
        return "withdrawn", start, end
    if f.eligible and _flag(values.get(f.eligible)) == "0":
        return "ineligible", start, None
    done = values.get(f.completion_date) if f.completion_date else None
    if done is not None and _as_date(done) <= ctx.today():
        return "off-study", start, done
    return "on-study", start, None


def _gender(values: Mapping[str, Any], ctx: FhirContext) -> str | None:
    field, codes = ctx.gender_field, dict(ctx.gender_codes)
    if field is None:
        field, codes = _mapped_sex(ctx.mapping)
    if field is None:
        return None
    code = _flag(values.get(field))
    if code is None:
        return None
    gender = codes.get(code, "unknown")
    return gender if gender in GENDERS else "unknown"


def _mapped_sex(mapping: StudyMapping) -> tuple[str | None, dict[str, str]]:
    """The sex field and its code map from a derived measure's `sex` input, if any."""
    for m in mapping.measures:
        for item in m.derived.inputs if m.derived else ():
            if item.parameter == "sex" and item.kind == "field" and item.value_map:
                return item.fields[0], dict(item.value_map)
    return None, {}


def _period(start: Any, end: Any) -> dict[str, str] | None:
    period = {}
    if start is not None:
        period["start"] = _as_date(start).isoformat()
    if end is not None and (start is None or _as_date(end) >= _as_date(start)):
        period["end"] = _as_date(end).isoformat()
    return period or None


def _as_date(value: Any) -> date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _flag(value: Any) -> str | None:
    """A choice code or calc result as text: 1.0 (a calc field) and "1" both give "1"."""
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (
        isinstance(value, float) and value != value
    )
