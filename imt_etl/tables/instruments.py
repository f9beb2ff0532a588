"""Instrument tables for analysis: pseudonymised composite key, identifiers dropped, typed."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import pandas as pd

from imt_etl.fhir.mappings import StudyMapping
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.model import DAG_KEY
from imt_etl.redcap.tidy import KEY_COLUMNS
from imt_etl.tables.common import (
    KEY_DESCRIPTIONS,
    STRING,
    AnalysisTable,
    Pseudonymise,
    identity,
    pseudonyms,
)

log = logging.getLogger(__name__)


def identifier_fields(dictionary: DataDictionary, allowed: Collection[str] = ()) -> set[str]:
    """Fields flagged as identifiers in the dictionary (and the record id), minus `allowed`."""
    found = {f.name for f in dictionary.fields if f.identifier}
    found.add(dictionary.record_id_field)
    return found - set(allowed)


def _allowed_values(dictionary: DataDictionary, field: str) -> str:
    if not dictionary.has_field(field):
        return ""
    f = dictionary.field(field)
    return " | ".join(f"{c.code}, {c.label}" for c in f.choices) if f.choices else ""


def analysis_instrument(
    form: str,
    frame: pd.DataFrame,
    dictionary: DataDictionary,
    *,
    mapping: StudyMapping | None = None,
    pseudonymise: Pseudonymise = identity,
    event_labels: Mapping[str, str] | None = None,
    allowed_identifiers: Collection[str] = (),
) -> AnalysisTable:
    """One tidy instrument table with analyst-facing keys and without identifying columns."""
    described: dict[str, dict[str, str]] = frame.attrs.get("columns", {})
    # Valid rows keep their positions in the full table; new columns must align by position.
    # Without attrs (read above): pandas deep-copies them on every operation.
    frame = pd.DataFrame(frame, copy=False).reset_index(drop=True)
    dropped = identifier_fields(dictionary, allowed_identifiers)
    labels = event_labels or {}
    out = pd.DataFrame({
        "participant": pseudonyms(frame["record_id"], pseudonymise),
        "arm": frame["redcap_arm"].astype("Int64"),
        "event": frame["redcap_event_name"].astype(STRING),
        "visit": frame["redcap_event_name"].map(lambda e: labels.get(e, e)).astype(STRING),
        "instance": frame["redcap_repeat_instance"].astype("Int64"),
    })
    columns = {k: dict(v) for k, v in KEY_DESCRIPTIONS.items()}
    kept = []
    for col in frame.columns:
        if col in KEY_COLUMNS:
            continue
        info = dict(described.get(col, {}))
        source = info.get("field", col)
        if source in dropped:
            continue
        kept.append(col)
        info["source_field"] = source
        info.pop("field", None)
        if col == DAG_KEY:
            info["label"] = "REDCap data access group (site)"
        elif info.get("kind") == "choice":
            info["allowed"] = _allowed_values(dictionary, source)
        measure = mapping.by_field.get(source) if mapping is not None else None
        if measure is not None and info.get("kind") not in ("missing_code", "choice_label"):
            info["unit"] = measure.unit or ""
            if measure.codes:
                info["code_system"] = measure.codes[0].system
                info["code"] = measure.codes[0].code
        columns[col] = info
    out = pd.concat([out, frame[kept].reset_index(drop=True)], axis=1)
    return AnalysisTable(
        f"instruments/{form}", out, columns,
        f"REDCap instrument {form}: one row per participant x event x repeat instance",
    )


def analysis_instruments(
    tables: Mapping[str, pd.DataFrame],
    dictionary: DataDictionary,
    **kwargs,
) -> dict[str, AnalysisTable]:
    """analysis_instrument for every table, keyed by form name."""
    return {form: analysis_instrument(form, df, dictionary, **kwargs)
            for form, df in tables.items()}
