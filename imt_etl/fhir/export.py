"""Every FHIR resource of a run, from the valid rows: study resources, Questionnaires and responses.

The study resources and Observations come from `imt_etl.fhir.study`; this module adds one
Questionnaire per instrument (from the data dictionary) and one QuestionnaireResponse per valid
row (from the row's REDCap strings), with the ids Observation.derivedFrom already points at.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imt_etl.config import MAPPINGS_ROOT
from imt_etl.fhir.context import (
    FhirContext,
    encounter_id,
    encounter_ref,
    patient_ref,
    questionnaire_response_id,
)
from imt_etl.fhir.ids import questionnaire_id
from imt_etl.fhir.mappings import load_study_mapping
from imt_etl.fhir.questionnaire import (
    QuestionnaireBuild,
    UnsupportedLogicReport,
    build_questionnaire,
)
from imt_etl.fhir.questionnaire_response import (
    ResponsePlan,
    build_questionnaire_response,
    response_has_timezone,
    response_parts,
)
from imt_etl.fhir.study import (
    RESOURCE_ORDER,
    participant_resources,
    record_ids,
    study_level_resources,
)
from imt_etl.privacy import identifier_fields
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.tidy import KEY_COLUMNS, ProjectMeta

log = logging.getLogger(__name__)

Resources = dict[str, list[dict[str, Any]]]


@dataclass
class FhirBuild:
    resources: Resources
    unsupported_logic: list[UnsupportedLogicReport] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(items) for kind, items in self.resources.items() if items}


def build_fhir(valid: Mapping[str, pd.DataFrame], raw: Mapping[str, pd.DataFrame],
               meta: ProjectMeta, ctx: FhirContext) -> FhirBuild:
    """All resources of the study from the valid instrument tables and their raw strings."""
    study = study_fhir(valid, meta, ctx)
    records = record_fhir(valid, raw, meta, ctx, study.questionnaires)
    resources = {**{k: v for k, v in study.resources.items() if k != "Questionnaire"},
                 **{k: v for k, v in records.items() if k != "QuestionnaireResponse"}}
    resources = {k: resources[k] for k in RESOURCE_ORDER}
    resources["Questionnaire"] = study.resources["Questionnaire"]
    resources["QuestionnaireResponse"] = records["QuestionnaireResponse"]
    return FhirBuild(resources, study.unsupported_logic)


@dataclass
class StudyFhir(FhirBuild):
    """The study-level resources (ResearchStudy, CodeSystem, a Questionnaire per instrument)."""

    questionnaires: dict[str, dict] = field(default_factory=dict)


def study_fhir(valid: Mapping[str, pd.DataFrame], meta: ProjectMeta, ctx: FhirContext
               ) -> StudyFhir:
    """Resources that belong to the study, not to a record."""
    resources = study_level_resources(valid, ctx.mapping, meta, ctx=ctx)
    questionnaires: dict[str, dict] = {}
    unsupported = []
    for form in meta.dictionary.forms:
        built = build_questionnaire(
            meta.dictionary, form, canonical_base=ctx.canonical_base,
            version=ctx.mapping.study.version, mapping=ctx.mapping,
            id=questionnaire_id(ctx.study_id, form, ctx.mapping.study.version),
        )
        questionnaires[form] = built.resource
        unsupported.extend(built.unsupported)
    resources["Questionnaire"] = list(questionnaires.values())
    return StudyFhir(resources, unsupported, questionnaires)


def record_fhir(valid: Mapping[str, pd.DataFrame], raw: Mapping[str, pd.DataFrame],
                meta: ProjectMeta, ctx: FhirContext, questionnaires: Mapping[str, dict],
                table: pd.DataFrame | None = None) -> Resources:
    """The resources of the records in `valid` (any subset: each depends only on its record).
    `table` is their measurement table when already computed."""
    with _collector_paused():
        return _record_fhir(valid, raw, meta, ctx, questionnaires, table)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a batch is built: every container made is kept
    (the batch's resources), so its collections would only rescan them (~1/5 of the CPU)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _record_fhir(valid: Mapping[str, pd.DataFrame], raw: Mapping[str, pd.DataFrame],
                 meta: ProjectMeta, ctx: FhirContext, questionnaires: Mapping[str, dict],
                 table: pd.DataFrame | None) -> Resources:
    resources = participant_resources(valid, ctx.mapping, meta, ctx=ctx, table=table)
    encounters = {e["id"] for e in resources.get("Encounter", [])}
    responses = []
    for form in meta.dictionary.forms:
        if form in valid:
            responses.extend(_responses(form, valid[form], raw[form], questionnaires[form], meta,
                                        ctx, encounters))
    resources["QuestionnaireResponse"] = responses
    return resources


def record_batches(valid: Mapping[str, pd.DataFrame], raw: Mapping[str, pd.DataFrame],
                   batch_records: int | Mapping[str, int], table: pd.DataFrame | None = None
                   ) -> Iterator[tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame],
                                       pd.DataFrame | None]]:
    """(valid, raw, measurement table) cut into batches of `batch_records` records of `valid`
    in record order, or by a given record -> batch number (0, 1, ...; imt_etl.fhir.reuse);
    every batch has every table (empty where it has no rows)."""
    batches = RecordBatches(valid, raw, batch_records, table)
    return (batches[n] for n in range(len(batches)))


class RecordBatches:
    """The tables of each batch of records, cut only when asked for: `batches[n]`.

    Only the row positions of each batch are computed up front, so that forked workers cut
    their own batches (in parallel, and freed after each) instead of the caller holding a
    second, split copy of every table.
    """

    def __init__(self, valid: Mapping[str, pd.DataFrame], raw: Mapping[str, pd.DataFrame],
                 batch_records: int | Mapping[str, int], table: pd.DataFrame | None = None):
        if isinstance(batch_records, int):
            records = record_ids(valid)
            batch_of = {r: i // batch_records for i, r in enumerate(records)}
        else:
            batch_of = dict(batch_records)
        self._frames = {("valid", k): v for k, v in valid.items()}
        self._frames.update({("raw", k): v for k, v in raw.items()})
        if table is not None:
            self._frames[("table", "")] = table
        self._positions = {key: _positions(frame, batch_of) for key, frame in self._frames.items()}
        self._count = max(batch_of.values(), default=-1) + 1

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, n: int) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame],
                                           pd.DataFrame | None]:
        if not 0 <= n < self._count:
            raise IndexError(n)
        cut = {key: frame.take(self._positions[key].get(n, _NO_ROWS))
               for key, frame in self._frames.items()}
        return ({k: v for (kind, k), v in cut.items() if kind == "valid"},
                {k: v for (kind, k), v in cut.items() if kind == "raw"},
                cut.get(("table", "")))


_NO_ROWS = np.empty(0, dtype=np.intp)


def _positions(frame: pd.DataFrame, batch_of: Mapping[str, int]) -> dict[int, np.ndarray]:
    """batch number -> the row positions of its records, in row order. Rows of records outside
    `batch_of` (raw rows of quarantined records) map to NaN: in no batch."""
    numbers = frame["record_id"].astype(str).map(batch_of).to_numpy(dtype=float, na_value=np.nan)
    kept = np.flatnonzero(~np.isnan(numbers))
    if not len(kept):
        return {}
    order = kept[np.argsort(numbers[kept], kind="stable")]
    starts = np.flatnonzero(np.r_[True, numbers[order][1:] != numbers[order][:-1]])
    bounds = [*starts[1:], len(order)]
    return {int(numbers[order[a]]): order[a:b] for a, b in zip(starts, bounds, strict=True)}


def _responses(form: str, valid: pd.DataFrame, raw: pd.DataFrame, questionnaire: dict,
               meta: ProjectMeta, ctx: FhirContext, encounters: set[str]) -> list[dict]:
    """One QuestionnaireResponse per valid row, built from that row's REDCap strings."""
    if not len(valid):
        return []
    # Names, MRNs, dates of birth... and the record id are never answered in a response.
    hidden = identifier_fields(meta.dictionary) - ctx.allowed_identifiers
    # Views without attrs: pandas deep-copies a frame's attrs into every column taken from it.
    valid, raw = pd.DataFrame(valid, copy=False), pd.DataFrame(raw, copy=False)
    plan = ResponsePlan(questionnaire, meta.dictionary, meta.missing_codes)
    keys = _keys(valid)
    records = [key[0] for key in keys]
    parts = None
    if all(records):  # else errors and warnings name the record as the row-by-row builder does
        column = _raw_columns(raw, keys, hidden)
        parts = response_parts(plan, column, len(keys), form=form, records=records,
                               timezone=ctx.timezone)
    authored = _authored_column(_column(valid, _date_field(form, meta, ctx)), ctx)
    if parts is None or authored is None:  # a misfit: raised as the row-by-row builder does
        return _responses_by_row(form, valid, raw, questionnaire, meta, ctx, encounters, hidden,
                                 plan)
    canonical = (f"{questionnaire['url']}|{questionnaire['version']}"
                 if questionnaire.get("version") else questionnaire["url"])
    # Every response of a record (of a visit) refers to the same Patient (Encounter): one
    # reference dict each, shared.
    subjects: dict[str, dict[str, str]] = {}
    visits: dict[tuple, dict[str, str] | None] = {}
    out = []
    for key, day, (status, items) in zip(keys, authored, parts, strict=True):
        record, event, instance = key[0], key[2], key[4]
        subject = subjects.get(record)
        if subject is None:
            subject = subjects[record] = {"reference": patient_ref(ctx, record)}
        visit = (record, event)
        if visit in visits:
            encounter = visits[visit]
        else:
            encounter = visits[visit] = (
                {"reference": encounter_ref(ctx, record, event)}
                if encounter_id(ctx, record, event) in encounters else None)
        resource: dict[str, Any] = {
            "resourceType": "QuestionnaireResponse",
            "id": questionnaire_response_id(ctx, record, event, form, instance),
            "questionnaire": canonical,
            "status": status,
            "subject": subject,
        }
        if encounter is not None:
            resource["encounter"] = encounter
        if day is not None:
            resource["authored"] = day
        if items:
            resource["item"] = items
        out.append(resource)
    return out


def _raw_columns(raw: pd.DataFrame, keys: list[tuple], hidden: set[str]
                 ) -> Callable[[str], list[str]]:
    """name -> the raw column's strings at the rows of `keys` (of the last raw row with each
    key), "" for a null cell, a hidden field or a column the frame lacks."""
    position = {key: i for i, key in enumerate(_keys(raw))}  # the last row of a key wins
    rows = np.array([position[key] for key in keys], dtype=np.intp)
    names = {str(c): i for i, c in enumerate(raw.columns)}  # the last of a name wins
    blank = [""] * len(keys)

    def column(name: str) -> list[str]:
        if name in hidden or name not in names:
            return blank
        values = raw.iloc[:, names[name]].to_numpy(dtype=object)[rows].tolist()
        return [v if v.__class__ is str else _text(v) for v in values]

    return column


def _authored_column(days: list[Any], ctx: FhirContext) -> list[str | None] | None:
    """_authored of each value (once per distinct value); None when one lacks a timezone
    (the row-by-row builder raises that error)."""
    made: dict[Any, str | None] = {}
    for day in set(days):
        made[day] = found = _authored(day, ctx)
        if found is not None and not response_has_timezone(found):
            return None
    return [made[day] for day in days]


def _responses_by_row(form: str, valid: pd.DataFrame, raw: pd.DataFrame, questionnaire: dict,
                      meta: ProjectMeta, ctx: FhirContext, encounters: set[str],
                      hidden: set[str], plan: ResponsePlan) -> list[dict]:
    raw_by_key = dict(zip(_keys(raw), _text_rows(raw, hidden), strict=True))
    dates = _column(valid, _date_field(form, meta, ctx))
    out = []
    for key, day in zip(_keys(valid), dates, strict=True):
        record, event, instance = key[0], key[2], key[4]
        enc = encounter_id(ctx, record, event)
        out.append(build_questionnaire_response(
            questionnaire, raw_by_key[key], meta.dictionary, form,
            subject_ref=patient_ref(ctx, record),
            encounter_ref=encounter_ref(ctx, record, event) if enc in encounters else None,
            authored=_authored(day, ctx),
            id=questionnaire_response_id(ctx, record, event, form, instance),
            missing_codes=meta.missing_codes, timezone=ctx.timezone,
            record=record, plan=plan,
        ))
    return out


def _text_rows(frame: pd.DataFrame, hidden: set[str]) -> list[dict[str, str]]:
    """A raw frame's rows as dicts of strings, nulls and `hidden` fields as "".

    Built column by column: the hidden check is made once per column, not once per cell."""
    names = [str(c) for c in frame.columns]
    blank = [""] * len(frame)
    columns = [blank if name in hidden else [_text(v) for v in values]
               for name, values in zip(names, frame.to_numpy(dtype=object).T, strict=True)]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _text(value: Any) -> str:
    if value.__class__ is str:  # nearly every raw cell: skip the null checks and str()
        return value
    return "" if value is None or value is pd.NA else str(value)


def _column(frame: pd.DataFrame, name: str | None) -> list[Any]:
    """One column's values as objects (None for every row when there is no such column)."""
    if name is None or name not in frame.columns:
        return [None] * len(frame)
    return frame[name].to_numpy(dtype=object).tolist()


def _keys(frame: pd.DataFrame) -> list[tuple]:
    """Each row's KEY_COLUMNS values, nulls as None (one vectorised null check per column)."""
    columns = []
    for name in KEY_COLUMNS:
        values = frame[name].to_numpy(dtype=object)
        columns.append([None if na else v for v, na in zip(values.tolist(),
                                                           pd.isna(values).tolist(),
                                                           strict=True)])
    return list(zip(*columns, strict=True))


def _date_field(form: str, meta: ProjectMeta, ctx: FhirContext) -> str | None:
    """The field dating a form: its measures' effective field, else its first date field."""
    for measure in ctx.mapping.measures:
        if measure.instrument == form and measure.effective_field:
            return measure.effective_field
    for f in meta.dictionary.form_fields(form):
        if f.field_type == "text" and f.validation.startswith("date"):
            return f.name
    return None


def _authored(value: Any, ctx: FhirContext) -> str | None:
    """The form's date at local midnight (study zone); None (omitted) when the form has none.

    Never the run time: a re-run of unchanged data must give byte-identical resources.
    """
    if isinstance(value, datetime):
        return ctx.local_datetime(value)
    if isinstance(value, date):
        return ctx.local_datetime(datetime(value.year, value.month, value.day))
    return None


DEFAULT_CANONICAL_BASE = "https://imt-etl.org/fhir"


def project_questionnaires(dictionary: DataDictionary, forms: list[str], study: str | None, *,
                           canonical_base: str | None = None,
                           mappings_root: Path = MAPPINGS_ROOT) -> dict[str, QuestionnaireBuild]:
    """Questionnaires of some instruments; the study's mapping (if any) adds codes and units."""
    folder = Path(mappings_root) / study if study else None
    mapping = load_study_mapping(folder, dictionary) if folder and folder.is_dir() else None
    base = canonical_base or (mapping.study.canonical_base if mapping else DEFAULT_CANONICAL_BASE)
    version = mapping.study.version if mapping else "1.0.0"
    return {
        form: build_questionnaire(dictionary, form, canonical_base=base, version=version,
                                  mapping=mapping,
                                  id=questionnaire_id(study or "redcap", form, version))
        for form in forms
    }
