"""Hand-built REDCap projects for the emulator tests: classic+repeating, longitudinal 2-arm."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.emulator import RedcapEmulator
from imt_etl.redcap.model import (
    Arm,
    DataAccessGroup,
    Event,
    ProjectDefinition,
    RecordRow,
    RepeatingSetup,
)

TOKEN = "0123456789ABCDEF0123456789ABCDEF"
XML_DIR = Path(__file__).resolve().parents[1] / "data" / "redcap_xml"
LOAD_TIME = datetime(2026, 1, 5, 9, 0, 0)


def _meta(name: str, form: str, ftype: str, label: str = "", choices: str = "",
          validation: str = "") -> dict[str, str]:
    return {"field_name": name, "form_name": form, "field_type": ftype,
            "field_label": label or name, "select_choices_or_calculations": choices,
            "text_validation_type_or_show_slider_number": validation}


def _dictionary() -> DataDictionary:
    return DataDictionary.from_metadata([
        _meta("study_id", "enrolment", "text", "Study ID"),
        _meta("age", "enrolment", "text", "Age", validation="integer"),
        _meta("sex", "enrolment", "radio", "Sex", "1, Female | 2, Male"),
        _meta("note", "enrolment", "descriptive", "A note"),
        _meta("symptoms", "enrolment", "checkbox", "Symptoms", "1, Cough | 2, Fever | x-1, Other"),
        _meta("visit_date", "visit", "text", "Visit date", validation="date_ymd"),
        _meta("mip", "visit", "text", "MIP", validation="number"),
        _meta("consented", "visit", "yesno", "Consented"),
        _meta("ae_term", "adverse_event", "text", "AE term"),
        _meta("ae_grade", "adverse_event", "dropdown", "Grade",
              "1, Mild | 2, Moderate | 3, Severe"),
    ])


def classic_project() -> ProjectDefinition:
    """Classic project; adverse_event repeats; two DAGs."""
    return ProjectDefinition(
        title="Emulator classic",
        dictionary=_dictionary(),
        repeating=[RepeatingSetup("", "adverse_event", "")],
        missing_data_codes="UNK, Unknown | NA, Not applicable",
        data_access_groups=[DataAccessGroup("site_a", "Site A"),
                            DataAccessGroup("site_b", "Site B")],
        record_dags={"2": "site_a", "10": "site_b"},
        rows=[
            RecordRow("10", values={"study_id": "10", "age": "51", "enrolment_complete": "2",
                                    "visit_date": "2026-01-02", "visit_complete": "1"}),
            RecordRow("2", values={"study_id": "2", "age": "44", "sex": "1",
                                   "symptoms___1": "1", "symptoms___x_1": "1",
                                   "enrolment_complete": "2"}),
            RecordRow("2", "", "adverse_event", 1, {"ae_term": "rash", "ae_grade": "2",
                                                    "adverse_event_complete": "2"}),
            RecordRow("2", "", "adverse_event", 2, {"ae_term": "cough, dry",
                                                    "ae_grade": "UNK",
                                                    "adverse_event_complete": "0"}),
        ],
    )


def longitudinal_project() -> ProjectDefinition:
    """Two arms; arm 1 has baseline + a repeating follow-up event; AE repeats at baseline."""
    events = [
        Event("baseline_arm_1", "Baseline", 1, event_id=11),
        Event("follow_up_arm_1", "Follow-up", 1, event_id=12),
        Event("baseline_arm_2", "Baseline", 2, event_id=21),
    ]
    mapping = [
        (1, "baseline_arm_1", "enrolment"), (1, "baseline_arm_1", "visit"),
        (1, "baseline_arm_1", "adverse_event"), (1, "follow_up_arm_1", "visit"),
        (2, "baseline_arm_2", "enrolment"),
    ]
    return ProjectDefinition(
        title="Emulator longitudinal",
        dictionary=_dictionary(),
        arms=[Arm(1, "Drug"), Arm(2, "Placebo")],
        events=events,
        form_event_mapping=mapping,
        repeating=[RepeatingSetup("baseline_arm_1", "adverse_event", "AE"),
                   RepeatingSetup("follow_up_arm_1", "", "")],
        rows=[
            RecordRow("1", "baseline_arm_1", values={"study_id": "1", "age": "60", "sex": "2",
                                                     "enrolment_complete": "2",
                                                     "visit_date": "2026-01-01", "mip": "55.5"}),
            RecordRow("1", "follow_up_arm_1", "", 2, {"visit_date": "2026-03-01", "mip": "70"}),
            RecordRow("1", "follow_up_arm_1", "", 1, {"visit_date": "2026-02-01", "mip": "61",
                                                      "visit_complete": "2"}),
            RecordRow("1", "baseline_arm_1", "adverse_event", 1, {"ae_term": "rash",
                                                                  "adverse_event_complete": "1"}),
            RecordRow("3", "baseline_arm_2", values={"study_id": "3", "age": "33",
                                                     "enrolment_complete": "0"}),
        ],
    )


class Clock:
    """A controllable clock for the store: starts at LOAD_TIME, moves when told."""

    def __init__(self, now: datetime = LOAD_TIME):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@contextmanager
def running(project: ProjectDefinition, clock: Clock | None = None, **kwargs: object
            ) -> Iterator[RedcapEmulator]:
    clock = clock or Clock()
    with RedcapEmulator(project, token=TOKEN, clock=clock, load_time=clock(), **kwargs) as emu:
        yield emu
