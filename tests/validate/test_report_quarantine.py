"""The quality report files, the trend against the previous run, and the quarantine invariant."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from imt_etl.validate import FINDING_COLUMNS, InvariantError, validate_project, write_quality_report
from imt_etl.validate.quarantine import Finding, check_invariant, findings_frame, split_table


@pytest.fixture(scope="module")
def result(reference, imt_rules):
    return validate_project(reference.tidy, reference.meta, imt_rules)


def test_report_files_and_trend(result, tmp_path: Path):
    paths = write_quality_report(result, tmp_path)
    quality = tmp_path / "quality"
    assert sorted(p.name for p in paths) == ["findings.parquet", "index.html",
                                             "quarantine.parquet"]
    findings = pd.read_parquet(quality / "findings.parquet")
    assert list(findings.columns) == list(FINDING_COLUMNS) and len(findings) == 13
    quarantine = pd.read_parquet(quality / "quarantine.parquet")
    assert len(quarantine) == 12 and set(quarantine["severity"]) == {"error"}
    spo2 = quarantine[quarantine["rule_id"] == "imt.spo2_range"].iloc[0]
    assert json.loads(spo2["raw_row_json"])["spo2_post"] == "150"
    page = (quality / "index.html").read_text(encoding="utf-8")
    assert "No previous run" in page and "imt.best_mip_equals_max_trial" in page
    assert "<script" not in page  # self-contained, static

    # Second run: one finding fixed, one new one -> the trend says so.
    previous = findings[findings["rule_id"] != "imt.fev1_le_fvc"].copy()
    extra = previous.iloc[[0]].assign(record_id="999")
    prev_path = tmp_path / "previous.parquet"
    pd.concat([previous, extra]).to_parquet(prev_path)
    write_quality_report(result, tmp_path, prev_path)
    page = (quality / "index.html").read_text(encoding="utf-8")
    assert "<b>1</b> new, <b>1</b> resolved, <b>12</b> persisting" in page


def test_report_uses_last_findings_when_no_previous_is_given(result, tmp_path: Path):
    write_quality_report(result, tmp_path)
    write_quality_report(result, tmp_path)
    page = (tmp_path / "quality" / "index.html").read_text(encoding="utf-8")
    assert "<b>0</b> new, <b>0</b> resolved, <b>13</b> persisting" in page


def test_findings_sorted_by_record_then_event(result):
    records = list(result.findings["record_id"])
    assert records == sorted(records, key=int)


def test_invariant_is_enforced(reference):
    table = reference.tidy.tables["spirometry"]
    with pytest.raises(InvariantError, match="spirometry"):
        check_invariant("spirometry", table, table.iloc[1:], table.iloc[0:0])
    with pytest.raises(InvariantError, match="both valid and quarantined"):
        check_invariant("spirometry", table, table.iloc[:-1], table.iloc[:1])


def test_error_for_a_missing_row_is_not_dropped_silently(reference):
    table = reference.tidy.tables["spirometry"]
    ghost = Finding("dict.range", "error", "spirometry", "nobody", "baseline_arm_1", None, None,
                    "fev1_l", "9", "m")
    with pytest.raises(InvariantError, match="not in the table"):
        split_table("spirometry", table, findings_frame([ghost]))


def test_warnings_flow_on(reference):
    table = reference.tidy.tables["spirometry"]
    row = table.iloc[0]
    warning = Finding("x.w", "warning", "spirometry", str(row["record_id"]),
                      str(row["redcap_event_name"]), None, None, "fev1_l", "1", "m")
    error = Finding("x.e", "error", "spirometry", str(row["record_id"]),
                    str(row["redcap_event_name"]), None, None, "fev1_l", "1", "m")
    valid, quarantined = split_table("spirometry", table, findings_frame([warning]))
    assert len(valid) == len(table) and quarantined.empty
    valid, quarantined = split_table("spirometry", table, findings_frame([warning, error]))
    assert len(valid) == len(table) - 1 and list(quarantined.index) == [table.index[0]]
