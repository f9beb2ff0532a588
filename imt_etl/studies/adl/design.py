"""The ADL training trial's REDCap design: two arms, events per arm, form-event mapping."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.model import Arm, Event, ProjectDefinition
from imt_etl.redcap.project_xml import FORM_LABEL_PREFIX

HERE = Path(__file__).resolve().parent
DICTIONARY_PATH = HERE / "data_dictionary.csv"

TITLE = "Supervised ADL, resistance and stability training in IIM (ISRCTN35925199) - demo"
INTERVENTION, CONTROL = 1, 2
ARMS = (Arm(INTERVENTION, "Intervention: supervised training"),
        Arm(CONTROL, "Control: home exercise"))
# Assessment weeks and their windows (days either side); day offsets relative to week 0.
WEEKS = ((0, 7), (12, 7), (24, 7), (48, 14))


def event_name(week: int, arm: int) -> str:
    """REDCap's unique event name of the week-`week` visit in `arm` (names are per arm)."""
    return f"week_{week}_arm_{arm}"


EVENTS = tuple(
    Event(event_name(week, arm.arm_num), f"Week {week}", arm.arm_num, week * 7, window, window,
          f"W{week}", i)
    for i, (arm, (week, window)) in enumerate(
        ((a, w) for a in ARMS for w in WEEKS), start=1)
)
ASSESSMENT_FORMS = (
    "manual_muscle_testing", "functional_index_2", "haq", "sf36", "fatigue_impact_scale", "bdi2",
    "exertion", "laboratory", "body_composition", "posturography", "disease_activity",
)
FORM_DATE_FIELDS = {
    "enrollment": "consent_date",
    "manual_muscle_testing": "mmt_date",
    "functional_index_2": "fi2_date",
    "haq": "haq_date",
    "sf36": "sf36_date",
    "fatigue_impact_scale": "fis_date",
    "bdi2": "bdi_date",
    "exertion": "borg_date",
    "laboratory": "lab_date",
    "body_composition": "bia_date",
    "posturography": "post_date",
    "disease_activity": "das_date",
    "study_completion": "completion_date",
}
FORM_LABELS = {
    "enrollment": "Enrollment",
    "manual_muscle_testing": "Manual Muscle Testing (MMT-8)",
    "functional_index_2": "Functional Index-2 (FI-2)",
    "haq": "Health Assessment Questionnaire (HAQ-DI)",
    "sf36": "SF-36 (RAND-36)",
    "fatigue_impact_scale": "Fatigue Impact Scale (FIS)",
    "bdi2": "Beck Depression Inventory-II",
    "exertion": "Perceived Exertion (Borg CR-10)",
    "laboratory": "Laboratory",
    "body_composition": "Body Composition (Bioimpedance)",
    "posturography": "Posturography",
    "disease_activity": "Disease Activity (IMACS)",
    "study_completion": "Study Completion",
}


def _mapping() -> tuple[tuple[int, str, str], ...]:
    pairs: list[tuple[int, str, str]] = []
    last_week = WEEKS[-1][0]
    for arm in ARMS:
        for week, _ in WEEKS:
            event = event_name(week, arm.arm_num)
            forms = (("enrollment",) if week == 0 else ()) + ASSESSMENT_FORMS \
                + (("study_completion",) if week == last_week else ())
            pairs += [(arm.arm_num, event, form) for form in forms]
    return tuple(pairs)


FORM_EVENT_MAPPING = _mapping()
MISSING_DATA_CODES = "UNK, Unknown | NASK, Not asked | NA, Not applicable"
SETTINGS = {
    # A fixed creation time keeps the shipped XML byte-identical between builds.
    "creation_datetime": "2017-01-02T09:00:00",
    **{f"{FORM_LABEL_PREFIX}{form}": label for form, label in FORM_LABELS.items()},
    "purpose": "2",  # research
    "purpose_other": "",
    "project_language": "English",
    "project_notes": "Second demo project of imt-etl with seeded synthetic data (no real persons).",
    "project_irb_number": "ISRCTN35925199",
}


@cache
def load_dictionary(path: Path = DICTIONARY_PATH) -> DataDictionary:
    """The study's data dictionary from the shipped CSV (the source of truth)."""
    return DataDictionary.from_csv_file(path)


def empty_project() -> ProjectDefinition:
    """The ADL project design with no record data."""
    return ProjectDefinition(
        title=TITLE,
        dictionary=load_dictionary(),
        arms=list(ARMS),
        events=list(EVENTS),
        form_event_mapping=list(FORM_EVENT_MAPPING),
        missing_data_codes=MISSING_DATA_CODES,
        settings=dict(SETTINGS),
    )
