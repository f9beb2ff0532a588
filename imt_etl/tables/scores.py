"""scores (per participant x visit) and mip_device_agreement (per visit), via imt_etl.scores.

Every formula lives in imt_etl.scores with its source: FSS mean (Krupp 1989), RAND-36 scales
(RAND scoring instructions), diaphragm thickening fraction (Ferrari 2014), % predicted MIP and
its lower limit of normal (Evans & Whitelaw 2009), best of trials (ATS/ERS 2002), device
agreement (Bland & Altman 1986) and the 2016 ACR/EULAR Total Improvement Score (Aggarwal 2017;
provisional: its per-measure % change formula is not confirmed, see imt_etl/scores/tis.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from imt_etl import scores
from imt_etl.fhir.mappings import StudyMapping
from imt_etl.scores.rand36 import RECODE, rand36_scales_array
from imt_etl.tables.common import (
    DATE,
    KEY_DESCRIPTIONS,
    STRING,
    AnalysisTable,
    Pseudonymise,
    identity,
    natural_order,
    plain,
    plain_values,
    typed_frame,
)
from imt_etl.tables.config import AnalysisConfig, ScoresConfig

log = logging.getLogger(__name__)

TIS_CATEGORIES = "none | minimal | moderate | major"


def _schema(cfg: ScoresConfig) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Column dtypes and descriptions; device columns depend on the configured devices."""
    cols: dict[str, tuple[Any, dict[str, str]]] = {
        "participant": (STRING, KEY_DESCRIPTIONS["participant"]),
        "arm": ("Int64", KEY_DESCRIPTIONS["arm"]),
        "event": (STRING, KEY_DESCRIPTIONS["event"]),
        "visit": (STRING, KEY_DESCRIPTIONS["visit"]),
        "date": (DATE, {"label": "Date of the MIP measurement (age is computed at this date)",
                        "source_field": cfg.mip_date_field}),
        "sex": (STRING, {"label": "Sex", "allowed": "female | male",
                         "source_field": cfg.sex_field}),
        "age_years": ("Float64", {"label": "Age at the visit in years (from date of birth)",
                                  "unit": "a"}),
        "fss_mean": ("Float64", {"label": "Fatigue Severity Scale mean of 9 items (1-7), Krupp "
                                 "1989", "unit": "{score}"}),
        "fss_significant_fatigue": ("boolean", {"label": "FSS mean > 4 (Krupp 1989)"}),
    }
    for scale in scores.SCALES:
        cols[f"rand36_{scale}"] = ("Float64", {
            "label": f"RAND-36 {scale.replace('_', ' ')} (0-100)", "unit": "{score}"})
    cols["thickening_fraction_pct"] = ("Float64", {
        "label": "Diaphragm thickening fraction (Ferrari 2014)", "unit": "%",
        "source_field": f"{cfg.thickness_insp_field}, {cfg.thickness_exp_field}"})
    cols["mip_predicted"] = ("Float64", {"label": "Predicted MIP, Evans & Whitelaw 2009",
                                         "unit": "cm[H2O]"})
    cols["mip_lln"] = ("Float64", {"label": "Lower limit of normal MIP, Evans & Whitelaw 2009",
                                   "unit": "cm[H2O]"})
    for device, (trials, best) in cfg.mip_devices.items():
        cols[f"mip_{device}_best"] = ("Float64", {
            "label": f"Best MIP of the trials, {device} (largest magnitude)", "unit": "cm[H2O]",
            "source_field": ", ".join(trials)})
        cols[f"mip_{device}_best_recorded"] = ("Float64", {
            "label": f"Best MIP as recorded in REDCap, {device}", "unit": "cm[H2O]",
            "source_field": best})
        cols[f"mip_{device}_pct_predicted"] = ("Float64", {
            "label": f"Best MIP, {device}, % predicted (Evans & Whitelaw 2009)", "unit": "%"})
        cols[f"mip_{device}_below_lln"] = ("boolean", {
            "label": f"Best MIP, {device}, below the lower limit of normal"})
    devices = list(cfg.mip_devices)
    if len(devices) >= 2:
        a, b = devices[:2]
        cols["mip_device_difference"] = ("Float64", {
            "label": f"Best MIP {a} - {b} (Bland-Altman difference)", "unit": "cm[H2O]"})
        cols["mip_device_mean"] = ("Float64", {
            "label": f"Mean of best MIP {a} and {b} (Bland-Altman mean)", "unit": "cm[H2O]"})
    for prefix, what in (("tis", "2016 ACR/EULAR Total Improvement Score (0-100)"),
                         ("tis3", "Three-measure TIS (MMT-8, HAQ, CK; 0-50), ISRCTN35925199")):
        cols[f"{prefix}_total"] = ("Float64", {"label": f"{what}, from baseline; provisional"})
        cols[f"{prefix}_category"] = (STRING, {"label": f"{what}: response category",
                                               "allowed": TIS_CATEGORIES})
    cols["tis_provisional"] = ("boolean", {
        "label": "True: the TIS per-measure % change formula is not yet confirmed"})
    return {k: v[0] for k, v in cols.items()}, {k: dict(v[1]) for k, v in cols.items()}


def _safe(what: str, where: str, func: Callable[..., Any], *args: Any) -> Any:
    """Call a score function; a value it refuses (out of range) gives None and a warning."""
    try:
        return func(*args)
    except (ValueError, TypeError) as exc:
        log.warning("%s: %s not computed: %s", where, what, exc)
        return None


def _as_int(value: Any) -> int | None:
    value = plain(value)
    return None if value is None else int(float(value))


def _visit_values(tables: Mapping[str, pd.DataFrame], fields: Collection[str]
                  ) -> dict[tuple[str, str], dict[str, Any]]:
    """(record, event) -> the non-repeating values of `fields` at that visit, across instruments.

    Every visit with a non-repeating row gets an entry, even with none of the fields: the scores
    rows are the visits. Only `fields` are read: converting every column to Python values was
    most of the cost."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for frame in tables.values():
        rows = frame[frame["redcap_repeat_instance"].isna()]
        names = [c for c in rows.columns if c in fields]
        keys = zip(rows["record_id"].to_numpy(dtype=object).tolist(),
                   rows["redcap_event_name"].to_numpy(dtype=object).tolist(), strict=True)
        if not names:
            for key in keys:
                merged.setdefault(key, {})
            continue
        for key, row in zip(keys, plain_values(rows[names]), strict=True):
            values = {k: v for k, v in zip(names, row, strict=True) if v is not None}
            merged.setdefault(key, {}).update(values)
    return merged


def _fields(cfg: ScoresConfig, ck_unit_field: str | None) -> set[str]:
    """Every field the scores read from a visit (keep in step with _score_row and _core_set)."""
    fields = {"redcap_arm", cfg.sex_field, cfg.dob_field, cfg.mip_date_field,
              cfg.thickness_insp_field, cfg.thickness_exp_field, cfg.ck_field,
              *cfg.fss_items, *cfg.rand36_items, *cfg.core_set.values()}
    for trials, best in cfg.mip_devices.values():
        fields.update(trials)
        fields.add(best)
    if ck_unit_field:
        fields.add(ck_unit_field)
    return fields


def _first_value(merged: Mapping[tuple[str, str], dict[str, Any]], record: str, field: str,
                 events: tuple[str, ...]) -> Any:
    for event in events:
        value = merged.get((record, event), {}).get(field)
        if value is not None:
            return value
    return None


def _core_set(values: Mapping[str, Any], cfg: ScoresConfig, ck_factor: Callable) -> scores.CoreSet:
    ck = values.get(cfg.ck_field)
    return scores.CoreSet(
        **{measure: values.get(f) for measure, f in cfg.core_set.items()},
        enzymes={"ck": None if ck is None else float(ck) * ck_factor(values)},
    )


# _score_row's `rand36` when the row's RAND-36 scales were not computed in advance.
_SCALAR: Any = object()


def _as_code(value: Any) -> float | None:
    """_as_int's response code as a float (NaN for None); None where _as_int raises or the code
    is too large to be any response (the scalar path then runs and fails exactly as before)."""
    try:
        code = _as_int(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if code is None:
        return math.nan
    return float(code) if abs(code) < 1000 else None


def _rand36_in_advance(cfg: ScoresConfig, visits: list[Mapping[str, Any]]) -> list[Any]:
    """Per visit, the RAND-36 scales as _score_row computes them (None when no item is
    answered), from one array for all visits; _SCALAR for a visit _score_row must compute
    itself (a value _as_int refuses, or a response rand36_scales refuses: it logs the warning).

    The items are mostly a handful of distinct codes: _as_int runs once per distinct value."""
    out: list[Any] = [_SCALAR] * len(visits)
    if not visits or len(cfg.rand36_items) != len(RECODE):
        return out
    rows = [[v.get(f) for f in cfg.rand36_items] for v in visits]
    try:
        codes = {value: _as_code(value) for value in {x for row in rows for x in row}}
    except TypeError:  # an unhashable value: leave every visit to the scalar path
        return out
    easy = [i for i, row in enumerate(rows) if all(codes[x] is not None for x in row)]
    if not easy:
        return out
    matrix = np.array([[codes[x] for x in rows[i]] for i in easy], dtype=float)
    scales, scored = rand36_scales_array(matrix)
    answered = ~np.isnan(matrix).all(axis=1)
    columns = {k: v.tolist() for k, v in scales.items()}
    for j, i in enumerate(easy):
        if scored[j]:
            out[i] = {k: None if v[j] != v[j] else v[j] for k, v in columns.items()} \
                if answered[j] else None
    return out


def _score_row(record: str, event: str, values: Mapping[str, Any], sex: str | None,
               dob: date | None, cfg: ScoresConfig, rand36: Any = _SCALAR) -> dict[str, Any]:
    where = f"record {record}, event {event}"
    row: dict[str, Any] = {}
    items = [_as_int(values.get(f)) for f in cfg.fss_items]
    # A study without the FSS (no items configured) gets null columns, not a warning per row.
    row["fss_mean"] = _safe("FSS", where, scores.fss_score, items) if items else None
    row["fss_significant_fatigue"] = scores.fss_significant_fatigue(row["fss_mean"])
    if rand36 is _SCALAR:
        rand = {i: _as_int(values.get(f)) for i, f in enumerate(cfg.rand36_items, start=1)}
        scales = _safe("RAND-36", where, scores.rand36_scales, rand) \
            if any(v is not None for v in rand.values()) else None
    else:
        scales = rand36
    for scale in scores.SCALES:
        row[f"rand36_{scale}"] = (scales or {}).get(scale)
    row["thickening_fraction_pct"] = _safe(
        "thickening fraction", where, scores.thickening_fraction,
        values.get(cfg.thickness_insp_field), values.get(cfg.thickness_exp_field))
    visit_day = values.get(cfg.mip_date_field)
    row["date"] = visit_day
    age = (visit_day - dob).days / 365.25 if visit_day and dob else None
    row["age_years"] = age
    known = bool(cfg.mip_devices) and sex is not None and age is not None
    row["mip_predicted"] = _safe("predicted MIP", where, scores.predicted_mip, sex, age) \
        if known else None
    row["mip_lln"] = _safe("MIP LLN", where, scores.lln_mip, sex, age) if known else None
    for device, (trials, best) in cfg.mip_devices.items():
        top = _safe(f"best MIP {device}", where, scores.best_of,
                    [values.get(t) for t in trials])
        row[f"mip_{device}_best"] = top
        row[f"mip_{device}_best_recorded"] = values.get(best)
        row[f"mip_{device}_pct_predicted"] = _safe(
            "% predicted MIP", where, scores.percent_predicted_mip, top, sex, age) \
            if known else None
        row[f"mip_{device}_below_lln"] = _safe(
            "MIP below LLN", where, scores.mip_below_lln, top, sex, age) if known else None
    devices = list(cfg.mip_devices)
    if len(devices) >= 2:
        a, b = (row[f"mip_{d}_best"] for d in devices[:2])
        row["mip_device_difference"] = scores.device_difference(a, b)
        row["mip_device_mean"] = scores.device_mean(a, b)
    return row


def _tis(base: scores.CoreSet, follow: scores.CoreSet, tis_cfg: scores.TisConfig,
         where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"tis_provisional": True}
    for prefix, func in (("tis", scores.total_improvement_score),
                         ("tis3", scores.tis_three_measure)):
        result = _safe("TIS", where, func, base, follow, tis_cfg)
        out[f"{prefix}_total"] = result.total if result else None
        out[f"{prefix}_category"] = result.category if result else None
    return out


def scores_tables(tables: Mapping[str, pd.DataFrame], mapping: StudyMapping,
                  config: AnalysisConfig, *, pseudonymise: Pseudonymise = identity
                  ) -> tuple[AnalysisTable, AnalysisTable]:
    """(scores, mip_device_agreement) for every participant x configured visit."""
    cfg = config.scores
    if cfg is None:
        raise ValueError("the analysis config has no scores settings")
    dtypes, described = _schema(cfg)
    conversion = mapping.measure(cfg.ck_unit_measure).convert \
        if cfg.ck_unit_measure else None
    merged = _visit_values(tables, _fields(cfg, conversion.from_unit_field if conversion else None))

    def ck_factor(values: Mapping[str, Any]) -> float:
        if conversion is None:
            return 1.0
        code = values.get(conversion.from_unit_field) if conversion.from_unit_field else None
        return conversion.factor_for(None if code is None else str(code)) \
            if code is not None or not conversion.from_unit_field else 1.0

    tis_cfg = scores.TisConfig(enzyme_uln={"ck": cfg.ck_uln}, mmt_max=cfg.mmt_max)
    order = {e: i for i, e in enumerate(config.visit_events)}
    rows = []
    keys = sorted((k for k in merged if k[1] in order),
                  key=lambda k: (natural_order(k[0]), order[k[1]]))
    rand36 = _rand36_in_advance(cfg, [merged[k] for k in keys])
    for (record, event), scales in zip(keys, rand36, strict=True):
        values = merged[(record, event)]
        code = _first_value(merged, record, cfg.sex_field, config.visit_events)
        sex = cfg.sex_codes.get(str(code)) if code is not None else None
        dob = _first_value(merged, record, cfg.dob_field, config.visit_events)
        row = {"participant": pseudonymise(record), "arm": values.get("redcap_arm"),
               "event": event, "visit": config.event_labels.get(event, event), "sex": sex}
        scored = _score_row(record, event, values, sex, dob, cfg, scales)
        if all(v is None for v in scored.values()):
            continue  # no assessment at this visit (e.g. only the completion form)
        row.update(scored)
        base_event = cfg.tis_baseline(_as_int(values.get("redcap_arm")))
        base = merged.get((record, base_event))
        if base is not None and order[event] > order.get(base_event, len(order)):
            row.update(_tis(_core_set(base, cfg, ck_factor), _core_set(values, cfg, ck_factor),
                            tis_cfg, f"record {record}, event {event}"))
        rows.append(row)
    frame = typed_frame(rows, dtypes)
    return (
        AnalysisTable("scores", frame, described,
                      "Derived scores per participant x visit (TIS provisional)"),
        device_agreement(frame, cfg, config),
    )


AGREEMENT_SCHEMA = {
    "event": STRING, "visit": STRING, "device_a": STRING, "device_b": STRING, "n": "Int64",
    "bias": "Float64", "sd": "Float64", "lower_loa": "Float64", "upper_loa": "Float64",
}
AGREEMENT_DESCRIPTIONS = {
    "event": KEY_DESCRIPTIONS["event"], "visit": KEY_DESCRIPTIONS["visit"],
    "device_a": {"label": "First device (difference = a - b)"},
    "device_b": {"label": "Second device"},
    "n": {"label": "Participants with best MIP on both devices"},
    "bias": {"label": "Mean difference a - b (Bland & Altman 1986)", "unit": "cm[H2O]"},
    "sd": {"label": "SD of the differences", "unit": "cm[H2O]"},
    "lower_loa": {"label": "Lower 95 % limit of agreement (bias - 1.96 SD)", "unit": "cm[H2O]"},
    "upper_loa": {"label": "Upper 95 % limit of agreement (bias + 1.96 SD)", "unit": "cm[H2O]"},
}


def device_agreement(frame: pd.DataFrame, cfg: ScoresConfig,
                     config: AnalysisConfig) -> AnalysisTable:
    """Bland-Altman agreement of the first two MIP devices at each visit (nulls below 2 pairs)."""
    rows = []
    devices = list(cfg.mip_devices)[:2]
    if len(devices) == 2:
        a, b = devices
        for event in config.visit_events:
            at = frame[frame["event"] == event]
            pairs = at[[f"mip_{a}_best", f"mip_{b}_best"]].dropna()
            row = {"event": event, "visit": config.event_labels.get(event, event),
                   "device_a": a, "device_b": b, "n": len(pairs)}
            if len(pairs) >= 2:
                ba = scores.bland_altman(list(pairs.iloc[:, 0].astype(float)),
                                         list(pairs.iloc[:, 1].astype(float)))
                row.update(bias=ba.bias, sd=ba.sd, lower_loa=ba.lower_loa,
                           upper_loa=ba.upper_loa)
            rows.append(row)
    return AnalysisTable("mip_device_agreement", typed_frame(rows, AGREEMENT_SCHEMA),
                         {k: dict(v) for k, v in AGREEMENT_DESCRIPTIONS.items()},
                         "Agreement of best MIP between the two devices, per visit")
