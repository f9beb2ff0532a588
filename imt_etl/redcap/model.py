"""A whole REDCap project in memory: design (dictionary, arms, events, repeating setup) and data.

This is what a REDCap project XML file holds, what the emulator serves and what the reference
study's builder produces. Record data is kept as REDCap keeps it: one flat row per
record x event x repeat instance, values as strings, empty values omitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imt_etl.redcap.dictionary import DataDictionary

# Keys of a flat record row besides the fields themselves.
EVENT_KEY = "redcap_event_name"
REPEAT_INSTRUMENT_KEY = "redcap_repeat_instrument"
REPEAT_INSTANCE_KEY = "redcap_repeat_instance"
DAG_KEY = "redcap_data_access_group"


@dataclass(frozen=True)
class Arm:
    arm_num: int
    name: str


@dataclass(frozen=True)
class Event:
    unique_event_name: str  # e.g. "baseline_arm_1"
    event_name: str  # e.g. "Baseline"
    arm_num: int = 1
    day_offset: float = 0
    offset_min: float = 0
    offset_max: float = 0
    custom_event_label: str = ""
    event_id: int = 0


@dataclass(frozen=True)
class RepeatingSetup:
    """One repeating instrument (form set) or a repeating event (form empty)."""

    event: str  # unique event name; "" in classic projects
    form: str  # "" when the whole event repeats
    custom_label: str = ""


@dataclass(frozen=True)
class DataAccessGroup:
    unique_name: str
    name: str


@dataclass
class RecordRow:
    """One flat row of record data. `values` holds only non-empty field values.

    Checkbox options are stored under their export names (`field___code`) with "1" when ticked;
    `<form>_complete` is stored like any other value.
    """

    record: str
    event: str = ""  # unique event name; "" in classic projects
    repeat_instrument: str = ""  # form name for repeating instruments, "" otherwise
    repeat_instance: int | None = None  # None on non-repeating rows
    values: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        return (self.record, self.event, self.repeat_instrument, self.repeat_instance)


@dataclass
class ProjectDefinition:
    """Everything a REDCap project XML carries."""

    title: str
    dictionary: DataDictionary
    arms: list[Arm] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # (arm_num, unique_event_name, form) for longitudinal projects.
    form_event_mapping: list[tuple[int, str, str]] = field(default_factory=list)
    repeating: list[RepeatingSetup] = field(default_factory=list)
    # REDCap's missing-data codes setting, e.g. "UNK, Unknown | NA, Not applicable".
    missing_data_codes: str = ""
    data_access_groups: list[DataAccessGroup] = field(default_factory=list)
    # record id -> unique DAG name, for records assigned to a group.
    record_dags: dict[str, str] = field(default_factory=dict)
    rows: list[RecordRow] = field(default_factory=list)
    # Extra project settings (project info keys such as purpose, project_language).
    settings: dict[str, str] = field(default_factory=dict)
    source_system_version: str = "14.5.10"

    @property
    def is_longitudinal(self) -> bool:
        return bool(self.events)

    @property
    def has_repeating(self) -> bool:
        return bool(self.repeating)

    @property
    def record_id_field(self) -> str:
        return self.dictionary.record_id_field

    def repeating_forms(self, event: str) -> set[str]:
        """Forms that repeat on their own in this event ("" event in classic projects)."""
        return {r.form for r in self.repeating if r.event == event and r.form}

    def is_repeating_event(self, event: str) -> bool:
        return any(r.event == event and not r.form for r in self.repeating)

    def forms_for_event(self, event: str) -> list[str]:
        """Forms designated to an event, in dictionary order (all forms in classic projects)."""
        if not self.is_longitudinal:
            return self.dictionary.forms
        mapped = {form for _, ev, form in self.form_event_mapping if ev == event}
        return [f for f in self.dictionary.forms if f in mapped]

    def record_ids(self) -> list[str]:
        """Record ids in order of first appearance."""
        return list(dict.fromkeys(r.record for r in self.rows))
