"""The data-quality report: findings and quarantine parquet plus one self-contained HTML page."""

from __future__ import annotations

import html
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pandas as pd
import pyarrow as pa

from imt_etl.io import write_parquet_atomic, write_text_atomic
from imt_etl.validate.quarantine import (
    ERROR,
    FINDING_KEY,
    ROW_KEY,
    finding_row_keys,
    table_row_keys,
)

if TYPE_CHECKING:
    from imt_etl.validate.run import ValidationResult

log = logging.getLogger(__name__)

# What makes a finding "the same" across runs (the value and message may change).
IDENTITY = ("rule_id", "instrument", *FINDING_KEY, "field")


def trend(current: pd.DataFrame, previous: pd.DataFrame | None) -> dict[str, int] | None:
    """new / resolved / persisting finding counts against the previous run (None if no run)."""
    if previous is None:
        return None
    now, before = _identities(current), _identities(previous)
    return {"new": len(now - before), "resolved": len(before - now),
            "persisting": len(now & before)}


def _identities(frame: pd.DataFrame) -> set[tuple]:
    cols = [frame[c].astype("string").fillna("") for c in IDENTITY]
    return set(zip(*cols, strict=True)) if len(frame) else set()


def read_previous(path: Path | None) -> pd.DataFrame | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        log.warning("previous findings %s unreadable, no trend: %s", path, exc)
        return None


# The value shown instead of an identifier field's (name, MRN, date of birth...): the quality
# report names the REDCap record, where the data manager sees the value itself.
REDACTED = "[identifier: see the REDCap record]"


def redact_identifiers(result: ValidationResult) -> ValidationResult:
    """`result` with the values of identifier fields hidden in its findings and raw rows."""
    fields = {(form, name) for form, names in result.identifiers.items() for name in names}
    if not fields:
        return result
    findings = result.findings.copy()
    hidden = [(form, name) in fields for form, name in
              zip(findings["instrument"], findings["field"], strict=True)]
    hidden = pd.Series(hidden, index=findings.index, dtype=bool) & findings["value"].notna()
    # Messages quote the value ("'1962-02-30' is not a date"): hidden there too.
    findings.loc[hidden, "message"] = [
        str(message).replace(str(value), REDACTED) for message, value
        in zip(findings.loc[hidden, "message"], findings.loc[hidden, "value"], strict=True)]
    findings.loc[hidden, "value"] = REDACTED
    raw = {}
    for form, frame in result.raw.items():
        names = [c for c in frame.columns if (form, c) in fields]
        if names:
            frame = frame.copy()
            for name in names:
                frame[name] = frame[name].where(frame[name].fillna("") == "", REDACTED)
        raw[form] = frame
    return replace(result, findings=findings, raw=raw)


def quarantine_rows(result: ValidationResult) -> pd.DataFrame:
    """One row per error finding, with the whole raw row (REDCap strings) as JSON."""
    errors = result.findings[result.findings["severity"] == ERROR].copy()
    rows = pd.Series("", index=errors.index, dtype="string")
    for form, raw in result.raw.items():
        mine = errors["instrument"] == form
        if not mine.any():
            continue
        keys = finding_row_keys(errors[mine])
        # Only the rows an error points at: to_dict of whole raw tables was most of the report.
        row_keys = table_row_keys(raw)
        wanted = row_keys.isin(set(keys)).to_numpy()
        lookup = dict(zip(row_keys[wanted],
                          raw[wanted].drop(columns=list(ROW_KEY)).to_dict("records"), strict=True))
        rows[mine] = [orjson.dumps(lookup.get(k, {}), default=str).decode() for k in keys]
    errors["raw_row_json"] = rows
    return errors.reset_index(drop=True)


def write_report(result: ValidationResult, quality_dir: Path,
                 previous_findings_path: Path | None = None) -> list[Path]:
    """Write findings.parquet, quarantine.parquet and index.html into `quality_dir`.
    Identifier values are redacted (REDACTED); record ids stay, to find the record in REDCap."""
    result = redact_identifiers(result)
    quality_dir.mkdir(parents=True, exist_ok=True)
    findings_path = quality_dir / "findings.parquet"
    previous = read_previous(previous_findings_path or findings_path)
    change = trend(result.findings, previous)
    status = _status(result.findings, previous)
    paths = [
        write_parquet_atomic(findings_path, _arrow(result.findings)),
        write_parquet_atomic(quality_dir / "quarantine.parquet", _arrow(quarantine_rows(result))),
        write_text_atomic(quality_dir / "index.html", render_html(result, change, status)),
    ]
    log.info("quality report written to %s", quality_dir)
    return paths


def _arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _status(current: pd.DataFrame, previous: pd.DataFrame | None) -> list[str]:
    if previous is None:
        return [""] * len(current)
    before = _identities(previous)
    cols = [current[c].astype("string").fillna("") for c in IDENTITY]
    return ["persisting" if key in before else "new" for key in zip(*cols, strict=True)]


# -- HTML --------------------------------------------------------------------------------------

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f2f2f2}.error{color:#b00020;font-weight:600}
.warning{color:#8a6d00}.num{text-align:right}.new{background:#fff3cd}"""


def _e(value: object) -> str:
    return html.escape("" if value is None or value is pd.NA else str(value))


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr class='{classes[i] if classes else ''}'>" + "".join(f"<td>{c}</td>" for c in row)
        + "</tr>" for i, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _counts_table(result: ValidationResult) -> str:
    headers = ["instrument", "extracted", "valid", "quarantined", "errors", "warnings"]
    rows = [[_e(form)] + [f"<span class='num'>{c[k]}</span>" for k in headers[1:]]
            for form, c in result.counts.items()]
    return _table(headers, rows)


def _by_rule(findings: pd.DataFrame) -> str:
    if findings.empty:
        return "<p>No findings.</p>"
    grouped = findings.groupby(["rule_id", "severity"], sort=True).size().reset_index(name="n")
    rows = [[_e(r.rule_id), f"<span class='{_e(r.severity)}'>{_e(r.severity)}</span>",
             str(r.n)] for r in grouped.itertuples()]
    return _table(["rule", "severity", "findings"], rows)


def _finding_list(findings: pd.DataFrame, status: list[str]) -> str:
    if findings.empty:
        return "<p>Nothing to fix.</p>"
    rows, classes = [], []
    for f, st in zip(findings.itertuples(index=False), status, strict=True):
        instance = "" if pd.isna(f.repeat_instance) else f"#{f.repeat_instance}"
        rows.append([_e(f.record_id), _e(f.event), _e(f.instrument) + _e(instance), _e(f.field),
                     _e(f.value), f"<span class='{_e(f.severity)}'>{_e(f.severity)}</span>",
                     _e(f.rule_id), _e(f.message), _e(st)])
        classes.append(st)
    return _table(["record", "event", "instrument", "field", "value", "severity", "rule",
                   "message", "since last run"], rows, classes)


def render_html(result: ValidationResult, change: dict[str, int] | None,
                status: list[str]) -> str:
    """A readable page: counts, findings by rule, trend, and the list to work through."""
    f = result.findings
    n_err, n_warn = int((f["severity"] == ERROR).sum()), int((f["severity"] != ERROR).sum())
    trend_html = ("<p>No previous run to compare with.</p>" if change is None else
                  f"<p>Since the previous run: <b>{change['new']}</b> new, "
                  f"<b>{change['resolved']}</b> resolved, <b>{change['persisting']}</b> "
                  "persisting.</p>")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Data quality</title><style>{CSS}</style></head><body>"
        f"<h1>Data quality</h1><p><span class='error'>{n_err} error(s)</span> (rows held in "
        f"quarantine), <span class='warning'>{n_warn} warning(s)</span> (rows passed on).</p>"
        f"<h2>Trend</h2>{trend_html}<h2>By instrument</h2>{_counts_table(result)}"
        f"<h2>By rule</h2>{_by_rule(f)}"
        f"<h2>Findings to work through</h2>{_finding_list(f, status)}</body></html>"
    )
