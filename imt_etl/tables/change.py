"""change_from_baseline: per participant, measure and period, the change and its category.

Percent change and the category come from imt_etl.scores.change (ISRCTN35925199 categories,
terminology.md rule 7); the direction of "better" is the measure's `direction` in the mapping.
The primary endpoint is the row set `is_primary_endpoint` (the configured measure and period).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from imt_etl.fhir.mappings import Measure, StudyMapping
from imt_etl.scores import CHANGE_LABELS, ChangeCategory
from imt_etl.scores.change import CATEGORY_ORDER, change_category_codes, percent_changes
from imt_etl.tables.common import DATE, STRING, AnalysisTable, plain, plain_values
from imt_etl.tables.config import AnalysisConfig, Period
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
    plans = [(m, p) for m in measures for p in config.periods_for(m.measure_id)]
    return AnalysisTable(
        "change_from_baseline", _frame(wide, plans, config),
        {c: dict(DESCRIPTIONS[c]) for c in SCHEMA},
        "Per participant, measure and period: absolute and percent change and its category; "
        f"primary endpoint: {config.primary_measure} over {config.primary_period} "
        "(where is_primary_endpoint)",
    )


def _strings(values: Sequence[Any], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """values[codes] as a STRING array: the few distinct strings are converted once, then taken."""
    return pd.array(list(values), dtype=STRING).take(codes)


def _frame(wide: pd.DataFrame, plans: list[tuple[Measure, Period]],
           config: AnalysisConfig) -> pd.DataFrame:
    """The table in SCHEMA order: one row per (participant, arm) pair of `wide`, in order of first
    appearance, x plan (measure, period), built column by column from index arrays."""
    pairs = list(dict.fromkeys(zip(wide["participant"], wide["arm"], strict=True)))
    n_wide, n_pairs, n_plans = len(wide), len(pairs), len(plans)
    # (participant, event) -> row of wide, the last one winning; n_wide means "no such visit"
    # (a row of missing values is appended to every source array at that position).
    keys = plain_values(wide[["participant", "event"]])
    position = {(participant, event): i for i, (participant, event) in enumerate(keys)}
    periods = list({id(p): p for _, p in plans}.values())  # Period is not hashable
    period_of = np.array([next(j for j, q in enumerate(periods) if q is p) for _, p in plans],
                         dtype=np.intp)
    arms = [plain(arm) for _, arm in pairs]
    events: dict[str, int] = {}  # event name -> code, for the from/to event columns
    start = np.full((n_pairs, len(periods)), n_wide, dtype=np.intp)
    end = start.copy()
    from_code = np.zeros(start.shape, dtype=np.intp)
    to_code = np.zeros(start.shape, dtype=np.intp)
    for i, ((participant, _), arm) in enumerate(zip(pairs, arms, strict=True)):
        for j, period in enumerate(periods):
            from_event, to_event = period.events(arm)
            start[i, j] = position.get((participant, from_event), n_wide)
            end[i, j] = position.get((participant, to_event), n_wide)
            from_code[i, j] = events.setdefault(from_event, len(events))
            to_code[i, j] = events.setdefault(to_event, len(events))
    # Row r is pair r // n_plans and plan r % n_plans (participant-major, as before).
    pair_of = np.repeat(np.arange(n_pairs, dtype=np.intp), n_plans)
    plan_of = np.tile(np.arange(n_plans, dtype=np.intp), n_pairs)
    start_row = start[:, period_of].ravel()
    end_row = end[:, period_of].ravel()

    values = np.full((n_wide + 1, len(plans)), np.nan)
    for k, (m, _) in enumerate(plans):
        if m.measure_id in wide:
            values[:n_wide, k] = wide[m.measure_id].to_numpy(dtype=float, na_value=np.nan)
    before = values[start_row, plan_of]
    after = values[end_row, plan_of]
    missing = np.isnan(before) | np.isnan(after)
    change = np.where(missing, np.nan, after - before)
    percent = percent_changes(before, after)
    codes = np.full(len(before), -1, dtype=np.int8)
    for better in (True, False):
        chosen = np.array([m.higher_is_better is better for m, _ in plans], dtype=bool)[plan_of]
        if chosen.any():
            codes[chosen] = change_category_codes(before[chosen], after[chosen], better)
    codes = np.where(codes < 0, len(CATEGORY_ORDER), codes)  # the trailing None

    dates = pa.array(wide["date"].array, type=pa.date32())
    dates = pa.concat_arrays([dates.combine_chunks() if isinstance(dates, pa.ChunkedArray)
                              else dates, pa.nulls(1, pa.date32())])
    from_date, to_date = dates.take(pa.array(start_row)), dates.take(pa.array(end_row))
    no_days = (from_date.is_null().to_numpy(zero_copy_only=False)
               | to_date.is_null().to_numpy(zero_copy_only=False))
    day = pa.int32()
    days = (to_date.cast(day).fill_null(0).to_numpy().astype(np.int64)
            - from_date.cast(day).fill_null(0).to_numpy().astype(np.int64))

    def floats(array: np.ndarray) -> pd.arrays.FloatingArray:
        return pd.arrays.FloatingArray(array, np.isnan(array))

    def per_plan(value: Any) -> pd.api.extensions.ExtensionArray:
        return _strings([value(m, p) for m, p in plans], plan_of)

    is_primary = np.array([m.measure_id == config.primary_measure
                           and p.name == config.primary_period for m, p in plans],
                          dtype=bool)[plan_of]
    columns = {
        "participant": _strings([participant for participant, _ in pairs], pair_of),
        "arm": pd.array(arms, dtype="Int64").take(pair_of),
        "measure_id": per_plan(lambda m, p: m.measure_id),
        "label": per_plan(lambda m, p: m.label),
        "unit": per_plan(lambda m, p: m.unit),
        "direction": per_plan(lambda m, p: m.direction),
        "period": per_plan(lambda m, p: p.name),
        "period_label": per_plan(lambda m, p: p.label),
        "from_event": _strings(list(events), from_code[:, period_of].ravel()),
        "to_event": _strings(list(events), to_code[:, period_of].ravel()),
        "from_date": pd.arrays.ArrowExtensionArray(from_date),
        "to_date": pd.arrays.ArrowExtensionArray(to_date),
        "days": pd.arrays.IntegerArray(np.where(no_days, 0, days), no_days),
        "from_value": floats(before),
        "to_value": floats(after),
        "change": floats(change),
        "percent_change": floats(percent),
        "change_category": _strings([c.value for c in CATEGORY_ORDER] + [None], codes),
        "change_category_label": _strings([CHANGE_LABELS[c] for c in CATEGORY_ORDER] + [None],
                                          codes),
        "is_primary_endpoint": pd.arrays.BooleanArray(is_primary, np.zeros(len(codes), bool)),
    }
    return pd.DataFrame({name: pd.Series(columns[name], dtype=dtype)
                         for name, dtype in SCHEMA.items()})
