"""change_from_baseline: per participant, measure and period, the change and its category.

Percent change and the category come from imt_etl.scores.change (ISRCTN35925199 categories,
terminology.md rule 7); the direction of "better" is the measure's `direction` in the mapping.
The primary endpoint is the row set `is_primary_endpoint` (the configured measure and period).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import pandas as pd

from imt_etl.fhir.mappings import Measure, StudyMapping
from imt_etl.scores import CHANGE_LABELS, ChangeCategory, change_category, percent_change
from imt_etl.tables.common import DATE, STRING, AnalysisTable, plain, plain_values, tuple_frame
from imt_etl.tables.config import AnalysisConfig
from imt_etl.tables.wide import visit_measures

SCHEMA = {
    "participant": STRING, "arm": "Int64", "measure_id": STRING, "label": STRING, "unit": STRING,
    "direction": STRING, "period": STRING, "period_label": STRING, "from_event": STRING,
    "to_event": STRING, "from_date": DATE, "to_date": DATE, "days": "Int64",
    "from_value": "Float64", "to_value": "Float64", "change": "Float64",
    "percent_change": "Float64", "change_category": STRING, "change_category_label": STRING,
    "is_primary_endpoint": "boolean",
}
_ALLOWED_CATEGORIES = " | ".join(f"{c.value}, {CHANGE_LABELS[c]}" for c in ChangeCategory)
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "participant": {"label": "Participant pseudonym", "source_field": "record_id"},
    "arm": {"label": "Study arm number", "source_field": "redcap_arm"},
    "measure_id": {"label": "Stable measure id (as in observations_long / visits_wide)"},
    "label": {"label": "Measure label"},
    "unit": {"label": "UCUM unit of the values and of the absolute change"},
    "direction": {"label": "Which direction is better (from the mapping)"},
    "period": {"label": "Change period id", "allowed": "run_in | training | retention_6m | "
               "retention_12m (reference study; set per study)"},
    "period_label": {"label": "Change period"},
    "from_event": {"label": "Visit at the start of the period (REDCap event)"},
    "to_event": {"label": "Visit at the end of the period (REDCap event)"},
    "from_date": {"label": "Date of the start visit"},
    "to_date": {"label": "Date of the end visit"},
    "days": {"label": "Days between the two visits"},
    "from_value": {"label": "Value at the start visit"},
    "to_value": {"label": "Value at the end visit"},
    "change": {"label": "Absolute change (to - from), in `unit`"},
    "percent_change": {"label": "Percent change: (to - from) / |from| x 100"},
    "change_category": {"label": "Five-level change category (ISRCTN35925199)",
                        "allowed": _ALLOWED_CATEGORIES},
    "change_category_label": {"label": "Label of the change category"},
    "is_primary_endpoint": {"label": "True on the primary endpoint rows (measure and period)"},
}


def change_from_baseline(wide: pd.DataFrame, mapping: StudyMapping, config: AnalysisConfig,
                         repeating_forms: Collection[str]) -> AnalysisTable:
    """Every participant x visit measure x configured period (values where both visits exist)."""
    measures = visit_measures(mapping, repeating_forms)
    by_visit = _visits(wide)
    participants = list(dict.fromkeys(zip(wide["participant"], wide["arm"], strict=True)))
    plans = [(m, config.periods_for(m.measure_id)) for m in measures]  # once, not per participant
    rows: list[tuple] = []  # in SCHEMA order
    for participant, arm in participants:
        arm = plain(arm)
        for m, periods in plans:
            for period in periods:
                from_event, to_event = period.events(arm)
                start = by_visit.get((participant, from_event), {})
                end = by_visit.get((participant, to_event), {})
                rows.append((
                    participant, arm, m.measure_id, m.label, m.unit, m.direction,
                    period.name, period.label, from_event, to_event,
                    *_change(start, end, m),
                    m.measure_id == config.primary_measure
                    and period.name == config.primary_period,
                ))
    return AnalysisTable(
        "change_from_baseline", tuple_frame(rows, SCHEMA),
        {c: dict(DESCRIPTIONS[c]) for c in SCHEMA},
        "Per participant, measure and period: absolute and percent change and its category; "
        f"primary endpoint: {config.primary_measure} over {config.primary_period} "
        "(where is_primary_endpoint)",
    )


def _visits(wide: pd.DataFrame) -> dict[tuple[str, str], dict[str, object]]:
    """(participant, event) -> that visits_wide row, with plain values (NA -> None)."""
    names = [str(c) for c in wide.columns]
    rows = (dict(zip(names, values, strict=True)) for values in plain_values(wide))
    return {(r["participant"], r["event"]): r for r in rows}


def _change(start: Mapping[str, Any], end: Mapping[str, Any], m: Measure) -> tuple:
    """from_date, to_date, days, from_value, to_value, change, percent_change, change_category
    and change_category_label of one measure between two visits."""
    before, after = start.get(m.measure_id), end.get(m.measure_id)
    better = m.higher_is_better
    category = change_category(before, after, better) if better is not None else None
    from_date, to_date = start.get("date"), end.get("date")
    return (
        from_date, to_date,
        (to_date - from_date).days if from_date and to_date else None,
        before, after,
        after - before if before is not None and after is not None else None,
        percent_change(before, after),
        category.value if category else None,
        CHANGE_LABELS[category] if category else None,
    )
