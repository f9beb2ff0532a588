"""The study report: out/report/index.html with PNG figures, from the analysis tables."""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from imt_etl.io import write_bytes_atomic
from imt_etl.report.figures import (
    adherence_figure,
    change_figure,
    enrolment_figure,
    mip_figure,
    png_bytes,
)
from imt_etl.scores import ChangeCategory
from imt_etl.tables.common import AnalysisTable
from imt_etl.tables.config import AnalysisConfig

log = logging.getLogger(__name__)

QUALITY_LINK = "../quality/index.html"


def change_summary(change: pd.DataFrame) -> pd.DataFrame:
    """n, median and IQR of the absolute and percent change per measure and period."""
    rows = change[change["change"].notna()].astype({"change": float, "percent_change": float})
    grouped = rows.groupby(["measure_id", "period"], sort=False)
    summary = grouped.agg(
        n=("change", "size"), median=("change", "median"),
        q1=("change", partial(_quantile, q=0.25)), q3=("change", partial(_quantile, q=0.75)),
        median_pct=("percent_change", "median"),
    ).reset_index()
    units = rows.drop_duplicates("measure_id").set_index("measure_id")["unit"]
    summary.insert(1, "unit", summary["measure_id"].map(units))
    return summary


def _quantile(values: pd.Series, q: float) -> float:
    """Series.quantile(q) (linear) on a float Series, without its per-call frame overhead:
    pandas computes np.quantile on the non-NaN values, NaN when there are none."""
    array = values.to_numpy(dtype=float)
    array = array[~np.isnan(array)]
    return np.quantile(array, q) if len(array) else np.float64(np.nan)


def arm_summary(change: pd.DataFrame, arm_labels: Mapping[int, str] | None = None
                ) -> pd.DataFrame:
    """Per measure, period and arm: n, median change and % change, five-level category counts."""
    rows = change[change["change"].notna()].astype({"change": float, "percent_change": float})
    keys = ["measure_id", "period", "arm"]
    grouped = rows.groupby(keys, sort=False)
    summary = grouped.agg(n=("change", "size"), median=("change", "median"),
                          median_pct=("percent_change", "median")).reset_index()
    counts = rows.groupby(keys, sort=False)["change_category"].value_counts().unstack(
        fill_value=0)
    for category in (c.value for c in ChangeCategory):
        summary[category] = summary.set_index(keys).index.map(
            counts[category] if category in counts else {}).fillna(0).astype(int)
    labels = dict(arm_labels or {})
    summary.insert(3, "arm_label", [labels.get(int(a), f"Arm {a}") for a in summary["arm"]])
    return summary.sort_values(keys, kind="stable").reset_index(drop=True)


def tis_arm_summary(scores: pd.DataFrame, config: AnalysisConfig) -> pd.DataFrame:
    """Per arm and visit: participants with a TIS and the counts per response category."""
    cols = [c for c in ("tis_category", "tis3_category") if c in scores]
    rows = []
    order = {e: i for i, e in enumerate(config.visit_events)}
    groups = sorted(scores.groupby(["arm", "event"], sort=False),
                    key=lambda g: (g[0][0], order.get(str(g[0][1]), len(order))))
    for (arm, event), group in groups:
        row: dict[str, object] = {
            "arm": arm, "visit": config.event_labels.get(str(event), str(event))}
        for col in cols:
            prefix = col.removesuffix("_category")
            row[f"{prefix}_n"] = int(group[col].notna().sum())
            if f"{prefix}_total" in group:
                row[f"{prefix}_median"] = group[f"{prefix}_total"].astype(float).median()
            for level in ("minimal", "moderate", "major"):
                row[f"{prefix}_{level}"] = int((group[col] == level).sum())
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame[frame[[c for c in frame if c.endswith("_n")]].sum(axis=1) > 0] \
        if len(frame) else frame


def _frame(table: AnalysisTable | pd.DataFrame) -> pd.DataFrame:
    return table.frame if isinstance(table, AnalysisTable) else table


def _table_html(frame: pd.DataFrame, digits: int = 1) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, float):
                text = "" if pd.isna(value) else f"{value:.{digits}f}"
            else:
                text = "" if value is None or value is pd.NA else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;"
    "padding:2px 6px;text-align:right}th{background:#eee}img{max-width:100%}"
)


def write_study_report(
    tables: Mapping[str, AnalysisTable | pd.DataFrame],
    config: AnalysisConfig,
    out_dir: Path,
    *,
    title: str = "Study report",
    quality_link: str = QUALITY_LINK,
) -> Path:
    """Write index.html and its figures into `out_dir` (e.g. out/report); returns the page."""
    out_dir = Path(out_dir)
    frames = {name: _frame(t) for name, t in tables.items()}
    wide = frames["visits_wide"]
    change = frames["change_from_baseline"]
    enrollment = frames.get("instruments/enrollment")
    consent = enrollment["consent_date"] if enrollment is not None \
        and "consent_date" in enrollment else pd.Series(dtype=object)
    visit_order = [config.event_labels.get(e, e) for e in config.visit_events]
    measure = config.primary_measure or "mip_kh2_best"
    unit = next(iter(change.loc[change["measure_id"] == measure, "unit"].dropna()), "")
    run_in, train = _spans(config)
    figures = {
        "enrolment.png": enrolment_figure(consent, wide, visit_order),
        "mip_over_time.png": mip_figure(wide, measure, unit, run_in, train) if measure in wide
        else None,
        "change.png": change_figure(change, measure, [p.name for p in config.periods]),
    }
    if "training_adherence" in frames:
        figures["adherence.png"] = adherence_figure(frames["training_adherence"])
    for name, fig in figures.items():
        if fig is not None:
            write_bytes_atomic(out_dir / name, png_bytes(fig))
    summary = change_summary(change)
    n = wide["participant"].nunique() if len(wide) else 0
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{n} participants with at least one visit. Data quality: "
        f"<a href=\"{html.escape(quality_link)}\">data-quality report</a>.</p>",
        "<h2>Enrolment and visit completion</h2><img src=\"enrolment.png\" alt=\"enrolment\">",
    ]
    if figures.get("mip_over_time.png") is not None:
        spans = (f"<p>Grey: run-in (weeks {run_in[0]:g} to {run_in[1]:g}), green: training "
                 f"(weeks {train[0]:g} to {train[1]:g}).</p>") if run_in != train else ""
        sections.append(
            f"<h2>{html.escape(measure)} over time</h2>{spans}"
            "<img src=\"mip_over_time.png\" alt=\"MIP over time\">")
    sections.append(
        f"<h2>Change from baseline</h2><p>Primary endpoint: {html.escape(measure)}, period "
        f"{html.escape(config.primary_period)}.</p><img src=\"change.png\" alt=\"change\">"
        "<p>n, median and interquartile range (q1-q3) of the absolute change; median percent "
        "change.</p>" + _table_html(summary, 2))
    if change["arm"].dropna().nunique() > 1:
        sections.append(_arm_section(change, frames.get("scores"), config))
    if "adherence.png" in figures:
        sections.append("<h2>Training adherence</h2><img src=\"adherence.png\" alt=\"adherence\">")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>")
    return write_bytes_atomic(out_dir / "index.html", page.encode("utf-8"))


def _spans(config: AnalysisConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """Nominal weeks of the run-in and training periods (from the configured periods)."""
    weeks = config.event_weeks

    def span(name: str, default: tuple[float, float]) -> tuple[float, float]:
        try:
            p = config.period(name)
        except KeyError:
            return default
        return (weeks.get(p.from_event, default[0]), weeks.get(p.to_event, default[1]))

    return span("run_in", (0.0, 0.0)), span("training", (0.0, 0.0))


def _arm_section(change: pd.DataFrame, scores: pd.DataFrame | None,
                 config: AnalysisConfig) -> str:
    """The per-arm comparison: change per measure and period, TIS response per visit."""
    labels = ", ".join(f"arm {n}: {html.escape(t)}" for n, t in sorted(config.arm_labels.items()))
    parts = [
        "<h2>Per-arm summary</h2>",
        f"<p>{labels}.</p>" if labels else "",
        "<p>Per measure, period and arm: n, median absolute change, median percent change and the "
        "number of participants per five-level change category (ISRCTN35925199).</p>",
        _table_html(arm_summary(change, config.arm_labels), 2),
    ]
    if scores is not None and len(scores) and "arm" in scores:
        parts += ["<p>Total Improvement Score against the arm's baseline visit, per visit: "
                  "participants scored, median and counts per response category (tis: 2016 "
                  "ACR/EULAR, 0-100; tis3: MMT-8, HAQ, CK, 0-50; provisional).</p>",
                  _table_html(tis_arm_summary(scores, config), 1)]
    return "".join(parts)
