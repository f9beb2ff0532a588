"""The reference study: the deliberate errors are caught by their intended rules, nothing else."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from imt_etl.studies.imt import reference_errors
from imt_etl.validate import ValidationResult, validate_project


@pytest.fixture(scope="module")
def result(reference, imt_rules) -> ValidationResult:
    return validate_project(reference.tidy, reference.meta, imt_rules)


def _cells(frame: pd.DataFrame) -> set[tuple]:
    return {(r.record_id, r.event, r.instrument,
             None if pd.isna(r.repeat_instance) else int(r.repeat_instance), r.field, r.rule_id)
            for r in frame.itertuples()}


def test_deliberate_errors_exactly(result):
    expected = {(e.record, e.event, e.instrument, e.repeat_instance, e.field, e.intended_rule)
                for e in reference_errors()}
    assert len(expected) == 12
    assert _cells(result.errors) == expected
    assert len(result.errors) == 12
    by_rule = {e.intended_rule: e.value for e in reference_errors()}
    assert dict(zip(result.errors["rule_id"], result.errors["value"], strict=True)) == by_rule


def test_reference_warnings_exactly(result):
    # The month-3 date planted before baseline is also outside the month-3 window.
    assert _cells(result.warnings) == {
        ("018", "month_3_arm_1", "respiratory_muscle_strength", None, "rms_date",
         "imt.visit_window")}


def test_clean_data_has_no_findings(clean, imt_rules):
    result = validate_project(clean.tidy, clean.meta, imt_rules)
    assert result.findings.empty
    assert all(c["quarantined"] == 0 for c in result.counts.values())


def test_extracted_equals_valid_plus_quarantined(reference, result):
    for form, table in reference.tidy.tables.items():
        c = result.counts[form]
        assert c["extracted"] == len(table) == c["valid"] + c["quarantined"]
        assert len(result.valid[form]) + len(result.quarantined[form]) == len(table)
    assert result.counts["six_minute_walk"]["quarantined"] == 4
    assert result.counts["training_diary"]["quarantined"] == 2
    assert result.counts["respiratory_muscle_strength"]["warnings"] == 1
    # Quarantined rows are whole rows of the table, valid tables keep tidy's descriptions.
    assert set(result.quarantined["spirometry"]["record_id"]) == {"015"}
    assert result.valid["spirometry"].attrs == reference.tidy.tables["spirometry"].attrs


def test_dictionary_ranges_without_study_rules(reference):
    """Without study rules the dictionary min/max catch the out-of-range values themselves."""
    result = validate_project(reference.tidy, reference.meta, None)
    ranges = result.errors[result.errors["rule_id"] == "dict.range"]
    assert set(zip(ranges["record_id"], ranges["field"], strict=True)) == {
        ("002", "borg_dysp_post"), ("014", "diary_breaths"), ("016", "mwt_distance_m"),
        ("031", "spo2_post")}


def test_timing_33_participants(reference, imt_rules, result):
    runs = [result.seconds]  # the fixture's run warmed up imports and caches
    for _ in range(2):
        started = time.perf_counter()
        validate_project(reference.tidy, reference.meta, imt_rules)
        runs.append(time.perf_counter() - started)
    print(f"validate_project on 33 participants: best {min(runs):.3f} s")
    # Target is well under 1 s; the bound leaves room for a loaded CI machine.
    assert min(runs) < 2.0
