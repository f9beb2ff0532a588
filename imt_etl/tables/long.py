"""observations_long: one row per participant x visit x measure, as the FHIR Observations."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from imt_etl.fhir.mappings import StudyMapping
from imt_etl.measures import measurements
from imt_etl.tables.common import (
    KEY_DESCRIPTIONS,
    AnalysisTable,
    Pseudonymise,
    identity,
    pseudonyms,
)

# measurements() column -> analysis column (None = dropped: implied by instrument).
_RENAME = {
    "record_id": "participant", "redcap_arm": "arm", "redcap_event_name": "event",
    "event_label": "visit", "redcap_repeat_instance": "instance", "event_week": "week",
    "effective_date": "date",
}
COLUMNS = (
    "participant", "arm", "event", "visit", "week", "instance", "date", "effective_datetime",
    "measure_id", "parent_measure_id", "label", "code_system", "code", "display", "value_type",
    "value", "value_code_system", "value_code", "value_display", "value_text", "unit",
    "direction", "category", "instrument", "field",
)
DESCRIPTIONS: dict[str, dict[str, str]] = {
    **KEY_DESCRIPTIONS,
    "week": {"label": "Nominal study week of the visit (0 = start of training)"},
    "date": {"label": "Date of the measurement (effective date)"},
    "effective_datetime": {"label": "Date and time of the measurement, REDCap server time"},
    "measure_id": {"label": "Stable measure id (mappings/<study>/*.yaml)"},
    "parent_measure_id": {"label": "Observation this component belongs to (null otherwise)"},
    "label": {"label": "Measure label"},
    "code_system": {"label": "Code system URL of the measure's main coding"},
    "code": {"label": "Code of the measure in code_system"},
    "display": {"label": "Display of the code"},
    "value_type": {"label": "quantity | integer | codeable | boolean | string"},
    "value": {"label": "Numeric value (quantities in `unit`, booleans as 1/0)"},
    "value_code_system": {"label": "Code system of a coded answer"},
    "value_code": {"label": "Code of a coded answer"},
    "value_display": {"label": "Display of a coded answer"},
    "value_text": {"label": "Text value"},
    "unit": {"label": "UCUM unit of `value`"},
    "direction": {"label": "Which direction is better: higher_is_better | lower_is_better"},
    "category": {"label": "FHIR Observation category"},
    "instrument": {"label": "Source REDCap instrument"},
    "field": {"label": "Source REDCap field (null for derived scores)"},
}


def observations_long(
    tables: Mapping[str, pd.DataFrame],
    mapping: StudyMapping,
    *,
    pseudonymise: Pseudonymise = identity,
    event_labels: Mapping[str, str] | None = None,
    event_weeks: Mapping[str, float] | None = None,
    rows: pd.DataFrame | None = None,
) -> AnalysisTable:
    """The measurement rows FHIR Observations are built from, with analyst-facing keys.

    `rows`: `measurements(tables, mapping, event_labels=..., event_weeks=...)` when the caller
    already has it (the FHIR stage uses the same rows)."""
    if rows is None:
        rows = measurements(tables, mapping, event_labels=event_labels, event_weeks=event_weeks)
    frame = rows.rename(columns=_RENAME)
    frame["participant"] = pseudonyms(frame["participant"], pseudonymise)
    if event_labels is None:  # without labels the event name is the best visit label there is
        frame["visit"] = frame["event"]
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    return AnalysisTable(
        "observations_long", frame, {c: dict(DESCRIPTIONS[c]) for c in COLUMNS},
        "One row per participant x visit (x repeat instance) x measure: the Observations' data",
    )
