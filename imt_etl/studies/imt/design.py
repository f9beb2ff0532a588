"""The IMT trial's REDCap design: arm, events with windows, form-event mapping, repeating forms."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.model import Arm, Event, ProjectDefinition, RepeatingSetup
from imt_etl.redcap.project_xml import FORM_LABEL_PREFIX

HERE = Path(__file__).resolve().parent
DICTIONARY_PATH = HERE / "data_dictionary.csv"

TITLE = "IMT in idiopathic inflammatory myopathy (NCT07274267) - reference project"
ARMS = (Arm(1, "Arm 1"),)

# Day offsets are relative to baseline (start of training). The training event spans the whole
# 90-day training period: offset 45 with a window of +-45 days covers day 0..90.
EVENTS = (
    Event("screening_arm_1", "Screening (run-in start)", 1, -90, 7, 7, "T-3m", 1),
    Event("baseline_arm_1", "Baseline", 1, 0, 7, 7, "T0", 2),
    Event("training_arm_1", "Training period", 1, 45, 45, 45, "training", 3),
    Event("month_3_arm_1", "Month 3", 1, 90, 0, 7, "T3m", 4),
    Event("month_6_arm_1", "Month 6", 1, 180, 14, 14, "T6m", 5),
    Event("month_12_arm_1", "Month 12", 1, 365, 21, 21, "T12m", 6),
)
EVENT_NAMES = tuple(e.unique_event_name for e in EVENTS)
# Visits where the outcome assessments are made, in protocol order.
ASSESSMENT_EVENTS = (
    "screening_arm_1", "baseline_arm_1", "month_3_arm_1", "month_6_arm_1", "month_12_arm_1",
)
ASSESSMENT_FORMS = (
    "respiratory_muscle_strength", "spirometry", "diaphragm_ultrasound", "six_minute_walk",
    "fatigue_severity_scale", "sf36", "myositis_core_set",
)
# The date field of each non-repeating form (the visit date of that assessment).
FORM_DATE_FIELDS = {
    "enrollment": "consent_date",
    "respiratory_muscle_strength": "rms_date",
    "spirometry": "spiro_date",
    "diaphragm_ultrasound": "dus_date",
    "six_minute_walk": "mwt_date",
    "fatigue_severity_scale": "fss_date",
    "sf36": "sf36_date",
    "myositis_core_set": "mcs_date",
    "imt_prescription": "rx_date",
    "training_diary": "diary_date",
    "phone_followup": "pf_date",
    "adverse_events": "ae_onset",
    "study_completion": "completion_date",
}
REPEATING_FORMS = ("training_diary", "phone_followup", "adverse_events")
REPEATING = tuple(
    RepeatingSetup("training_arm_1", form, label)
    for form, label in (
        ("training_diary", "[diary_date]: [diary_breaths] breaths at [diary_load] cmH2O"),
        ("phone_followup", "[pf_date]"),
        ("adverse_events", "[ae_term] ([ae_onset])"),
    )
)


def _mapping() -> tuple[tuple[int, str, str], ...]:
    pairs = [("screening_arm_1", "enrollment")]
    for event in ASSESSMENT_EVENTS:
        pairs += [(event, form) for form in ASSESSMENT_FORMS]
    pairs.append(("baseline_arm_1", "imt_prescription"))
    pairs += [("training_arm_1", form) for form in REPEATING_FORMS]
    pairs.append(("month_12_arm_1", "study_completion"))
    order = {name: i for i, name in enumerate(EVENT_NAMES)}
    return tuple((1, ev, form) for ev, form in sorted(pairs, key=lambda p: order[p[0]]))


FORM_EVENT_MAPPING = _mapping()
MISSING_DATA_CODES = "UNK, Unknown | NASK, Not asked | NA, Not applicable"
FORM_LABELS = {
    "enrollment": "Enrollment",
    "respiratory_muscle_strength": "Respiratory Muscle Strength (MIP/MEP)",
    "spirometry": "Spirometry",
    "diaphragm_ultrasound": "Diaphragm Ultrasound",
    "six_minute_walk": "Six-Minute Walk Test",
    "fatigue_severity_scale": "Fatigue Severity Scale (FSS)",
    "sf36": "SF-36 (RAND-36)",
    "myositis_core_set": "Myositis Core Set (IMACS)",
    "imt_prescription": "IMT Prescription",
    "training_diary": "Training Diary",
    "phone_followup": "Phone Follow-up",
    "adverse_events": "Adverse Events",
    "study_completion": "Study Completion",
}
SETTINGS = {
    # A fixed creation time keeps the shipped XML byte-identical between builds.
    "creation_datetime": "2024-08-01T09:00:00",
    **{f"{FORM_LABEL_PREFIX}{form}": label for form, label in FORM_LABELS.items()},
    "purpose": "2",  # research
    "purpose_other": "",
    "project_language": "English",
    "project_notes": "Reference project of imt-etl with seeded synthetic data (no real persons).",
    "project_irb_number": "KB/91/2024",
}


@cache
def load_dictionary(path: Path = DICTIONARY_PATH) -> DataDictionary:
    """The study's data dictionary from the shipped CSV (the source of truth)."""
    return DataDictionary.from_csv_file(path)


def empty_project() -> ProjectDefinition:
    """The IMT project design with no record data."""
    return ProjectDefinition(
        title=TITLE,
        dictionary=load_dictionary(),
        arms=list(ARMS),
        events=list(EVENTS),
        form_event_mapping=list(FORM_EVENT_MAPPING),
        repeating=list(REPEATING),
        missing_data_codes=MISSING_DATA_CODES,
        settings=dict(SETTINGS),
    )
