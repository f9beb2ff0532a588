"""What every FHIR builder needs besides the data: study, zone, run time, pseudonyms and references.

Record ids never reach a resource: ids and identifiers are built from the participant's
pseudonym (`ctx.subject_key(record)`), because a uuid5 of a short sequential record id could be
reversed by trying them all. Every builder that refers to a Patient, Encounter or
QuestionnaireResponse (including the QuestionnaireResponse builder's caller) must use the
reference helpers here so that references resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from imt_etl.fhir import ids
from imt_etl.fhir.mappings import StudyMapping

BIRTH_DATE_MODES = ("omit", "year")


@dataclass(frozen=True)
class SubjectFields:
    """REDCap fields that give a participant's enrolment and status (defaults: the IMT study)."""

    consent_date: str | None = "consent_date"
    eligible: str | None = "eligible"  # "0" makes the subject ineligible
    withdrawn: str | None = "withdrawn"  # "1" makes the subject withdrawn
    withdrawal_date: str | None = "withdrawal_date"
    completion_date: str | None = "completion_date"
    birth_date: str | None = "dob"  # read only for birth_date="year"


@dataclass(frozen=True)
class FhirContext:
    """Inputs of the pure builders. Nothing here reads the clock or the environment."""

    mapping: StudyMapping
    run_time: datetime  # timezone-aware; decides statuses, never written into resources
    pseudonymise: Callable[[str], str]
    study_status: str = "active"  # ResearchStudy.status (R4 research-study-status)
    birth_date: str = "omit"  # "omit" | "year" (Patient.birthDate as YYYY only)
    arm_names: Mapping[int, str] = field(default_factory=dict)  # REDCap arm number -> name
    event_labels: Mapping[str, str] = field(default_factory=dict)  # unique event -> label
    subject_fields: SubjectFields = field(default_factory=SubjectFields)
    # sex field and REDCap code -> FHIR administrative gender; default: read from the mapping
    gender_field: str | None = None
    gender_codes: Mapping[str, str] = field(default_factory=dict)
    # Identifier fields (and the record id field) whose answers may appear in responses; every
    # other identifier field's answer is left out (imt_etl.privacy).
    allowed_identifiers: frozenset[str] = frozenset()
    # Ids and pseudonyms are pure functions of their parts: computed once per run (a study has
    # ~25 references per participant visit, and uuid5 + HMAC dominate the build time).
    _memo: dict[tuple, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.run_time.tzinfo is None:
            raise ValueError("run_time must be timezone-aware")
        if self.birth_date not in BIRTH_DATE_MODES:
            raise ValueError(f"birth_date must be one of {BIRTH_DATE_MODES}: {self.birth_date!r}")
        ZoneInfo(self.timezone)  # fail early on an unknown zone

    @property
    def study_id(self) -> str:
        return self.mapping.study.study_id

    @property
    def canonical_base(self) -> str:
        return self.mapping.study.canonical_base

    @property
    def timezone(self) -> str:
        return self.mapping.study.timezone

    @property
    def participant_system(self) -> str:
        """The identifier system of the study-scoped participant pseudonyms."""
        return f"{self.canonical_base}/participant"

    def subject_key(self, record: str) -> str:
        """The pseudonym that stands for `record` in ids and identifiers."""
        return self.memo(("pseudonym", str(record)), lambda: self.pseudonymise(str(record)))

    def memo(self, key: tuple, compute: Callable[[], str]) -> str:
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = compute()
        return value

    def local_datetime(self, value: datetime) -> str:
        """A naive REDCap (server-local) date-time as a FHIR dateTime with the study's offset."""
        return value.replace(tzinfo=ZoneInfo(self.timezone)).isoformat(timespec="seconds")

    def today(self) -> date:
        return self.run_time.astimezone(ZoneInfo(self.timezone)).date()


# --- ids and references (one place, so that every builder agrees) --------------------------------


def patient_id(ctx: FhirContext, record: str) -> str:
    return ctx.memo(("Patient", record),
                    lambda: ids.patient_id(ctx.study_id, ctx.subject_key(record)))


def patient_ref(ctx: FhirContext, record: str) -> str:
    return f"Patient/{patient_id(ctx, record)}"


def research_study_id(ctx: FhirContext) -> str:
    return ids.research_study_id(ctx.study_id)


def research_study_ref(ctx: FhirContext) -> str:
    return f"ResearchStudy/{research_study_id(ctx)}"


def research_subject_id(ctx: FhirContext, record: str) -> str:
    return ids.research_subject_id(ctx.study_id, ctx.subject_key(record))


def encounter_id(ctx: FhirContext, record: str, event: str | None) -> str:
    return ctx.memo(("Encounter", record, event),
                    lambda: ids.encounter_id(ctx.study_id, ctx.subject_key(record), event or ""))


def encounter_ref(ctx: FhirContext, record: str, event: str | None) -> str:
    return f"Encounter/{encounter_id(ctx, record, event)}"


def questionnaire_response_id(
    ctx: FhirContext, record: str, event: str | None, form: str, instance: int | None
) -> str:
    return ctx.memo(("QuestionnaireResponse", record, event, form, instance),
                    lambda: ids.questionnaire_response_id(
                        ctx.study_id, ctx.subject_key(record), event or "", form, instance))


def questionnaire_response_ref(
    ctx: FhirContext, record: str, event: str | None, form: str, instance: int | None
) -> str:
    return f"QuestionnaireResponse/{questionnaire_response_id(ctx, record, event, form, instance)}"


def observation_id(
    ctx: FhirContext, record: str, event: str | None, form: str, instance: int | None, name: str
) -> str:
    return ids.observation_id(
        ctx.study_id, ctx.subject_key(record), event or "", form, instance, name
    )


def visit_form_ids(
    ctx: FhirContext, record: str, event: str | None, form: str, instance: int | None
) -> tuple[str, bytes]:
    """questionnaire_response_id(ctx, record, event, form, instance), and the shared part of the
    ids of that visit's Observations of `form`: observation_id(ctx, ..., name) ==
    ids.prefixed_id(<this>, ids.id_tail(name)). Both from one encoding of their common parts."""
    response, prefix = ids.response_and_observation_prefix(
        ctx.study_id, ctx.subject_key(record), event or "", form, instance)
    # The response builder reads the same id: made here, it is not made again there.
    response = ctx.memo(("QuestionnaireResponse", record, event, form, instance), lambda: response)
    return response, prefix
