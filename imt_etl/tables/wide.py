"""visits_wide: one row per participant x visit, one numeric column per measure (units in meta)."""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd

from imt_etl.fhir.mappings import Measure, StudyMapping
from imt_etl.tables.common import DATE, KEY_DESCRIPTIONS, STRING, AnalysisTable, natural_order

NUMERIC_TYPES = ("quantity", "integer", "boolean")
KEYS = ("participant", "arm", "event", "visit", "week", "date")


def visit_measures(mapping: StudyMapping, repeating_forms: Collection[str]) -> list[Measure]:
    """Numeric measures recorded once per visit (not in repeating forms), in mapping order."""
    return [
        m for m in mapping.measures
        if m.makes_fhir_data and m.value_type in NUMERIC_TYPES
        and m.instrument not in repeating_forms
    ]


def _describe(m: Measure) -> dict[str, str]:
    first = m.codes[0] if m.codes else None
    return {
        "label": m.label or (first.display if first else m.measure_id),
        "unit": m.unit or "",
        "code_system": first.system if first else "",
        "code": first.code if first else "",
        "source_field": m.field or "",
        "instrument": m.instrument,
        "direction": m.direction or "",
        "measure_id": m.measure_id,
    }


def visits_wide(long: pd.DataFrame, mapping: StudyMapping,
                repeating_forms: Collection[str]) -> AnalysisTable:
    """Pivot observations_long's per-visit rows: the columns come from the mapping, not the data."""
    measures = visit_measures(mapping, repeating_forms)
    ids = [m.measure_id for m in measures]
    # Filter only the columns used here: the long table has many more, and is the largest.
    used = ["participant", "arm", "event", "visit", "week", "date", "measure_id", "value"]
    rows = long.loc[long["instance"].isna() & long["measure_id"].isin(ids), used]
    index = ["participant", "arm", "event", "visit", "week"]
    keys = rows.groupby(index, dropna=False, sort=False)["date"].min().reset_index()
    values = rows.pivot_table(index=["participant", "event"], columns="measure_id",
                              values="value", aggfunc="first", dropna=False)
    frame = keys.merge(values.reset_index(), on=["participant", "event"], how="left") \
        if len(keys) else keys
    for mid in ids:
        frame[mid] = frame[mid].astype("Float64") if mid in frame else pd.Series(
            [None] * len(frame), dtype="Float64")
    frame = frame.astype({"participant": STRING, "arm": "Int64", "event": STRING,
                          "visit": STRING, "week": "Float64", "date": DATE})
    # unique() keeps first-appearance order, without iterating every row in Python.
    event_order = {e: i for i, e in enumerate(long["event"].dropna().unique())}
    frame = frame.sort_values(
        ["participant", "event"],
        key=lambda s: s.map(natural_order if s.name == "participant" else event_order.get),
    )
    frame = frame[[*KEYS, *ids]].reset_index(drop=True)
    columns = {k: dict(KEY_DESCRIPTIONS[k]) for k in KEYS if k in KEY_DESCRIPTIONS}
    columns["week"] = {"label": "Nominal study week of the visit (0 = start of training)"}
    columns["date"] = {"label": "Visit date (earliest measurement date of the visit)"}
    columns.update({m.measure_id: _describe(m) for m in measures})
    return AnalysisTable("visits_wide", frame, columns,
                         "One row per participant x visit, one column per measure")
