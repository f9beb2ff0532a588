"""The IMT synthetic data generator: deterministic, plausible, and its flaws exactly as listed."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date

import pytest

from imt_etl.redcap.logic import evaluate, parse_logic
from imt_etl.redcap.model import ProjectDefinition, RecordRow
from imt_etl.studies.imt.design import ASSESSMENT_EVENTS, FORM_DATE_FIELDS
from imt_etl.studies.imt.generator import GeneratedStudy, generate_project, generate_study
from imt_etl.studies.imt.progression import rule_violations

Cell = tuple[str, str, int | None, str]


@pytest.fixture(scope="module")
def study() -> GeneratedStudy:
    return generate_study(33, 2024, with_errors=True)


@pytest.fixture(scope="module")
def clean() -> GeneratedStudy:
    return generate_study(33, 2024, with_errors=False)


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _dictionary_problems(project: ProjectDefinition) -> set[Cell]:
    """Cells breaking the dictionary: type, range, choice code, date (a mini validator)."""
    problems: set[Cell] = set()
    fields = {f.name: f for f in project.dictionary.fields}
    for row in project.rows:
        for name, value in row.values.items():
            f = fields.get(name)
            if f is None:
                assert name.endswith("_complete") or "___" in name, name
                continue
            cell = (row.record, row.event, row.repeat_instance, name)
            if f.field_type in ("radio", "dropdown", "yesno", "truefalse"):
                if value not in {c.code for c in f.choices}:
                    problems.add(cell)
            elif f.validation == "date_ymd":
                if _parse_date(value) is None:
                    problems.add(cell)
            elif f.validation in ("integer", "number"):
                number = _number(value)
                not_integer = f.validation == "integer" and not value.lstrip("-").isdigit()
                if number is None or not_integer:
                    problems.add(cell)
                elif f.validation_min and number < float(f.validation_min):
                    problems.add(cell)
                elif f.validation_max and number > float(f.validation_max):
                    problems.add(cell)
    return problems


def _rows(project: ProjectDefinition) -> dict[str, dict[str, RecordRow]]:
    by_record: dict[str, dict[str, RecordRow]] = defaultdict(dict)
    for row in project.rows:
        if not row.repeat_instrument:
            by_record[row.record][row.event] = row
    return by_record


def _diaries(project: ProjectDefinition) -> dict[str, list[RecordRow]]:
    diaries: dict[str, list[RecordRow]] = defaultdict(list)
    for row in project.rows:
        if row.repeat_instrument == "training_diary":
            diaries[row.record].append(row)
    return diaries


def _study_problems(project: ProjectDefinition) -> set[Cell]:
    """Cells breaking the IMT cross-field and plausibility rules."""
    problems: set[Cell] = set()
    for record, events in _rows(project).items():
        for event, row in events.items():
            v = row.values
            if "mip_kh2_best" in v:
                for device in ("kh2", "rpc"):
                    trials = [_number(v[f"mip_{device}_{t}"]) for t in (1, 2, 3)]
                    if None not in trials and float(v[f"mip_{device}_best"]) != max(trials):
                        problems.add((record, event, None, f"mip_{device}_best"))
            if "fev1_l" in v and float(v["fev1_l"]) > float(v["fvc_l"]):
                problems.add((record, event, None, "fev1_l"))
            if "thick_insp_mm" in v and float(v["thick_insp_mm"]) < float(v["thick_exp_mm"]):
                problems.add((record, event, None, "thick_insp_mm"))
        # Visit order: each form's date later than the same form's date at the previous visit.
        for form_date in FORM_DATE_FIELDS.values():
            previous: date | None = None
            for event in ASSESSMENT_EVENTS:
                day = _parse_date(events.get(event, RecordRow(record)).values.get(form_date, ""))
                if day and previous and day <= previous:
                    problems.add((record, event, None, form_date))
                previous = day or previous
    for record, diary in _diaries(project).items():
        events = _rows(project)[record]
        start = date.fromisoformat(events["baseline_arm_1"].values["rx_date"])
        for row in diary:
            day = _parse_date(row.values["diary_date"])
            # The training period: baseline to the end of the month-3 window (day 97).
            if day is None or not 0 <= (day - start).days <= 97:
                problems.add((record, row.event, row.repeat_instance, "diary_date"))
    return problems


def test_deterministic_per_seed():
    first, again = generate_project(12, seed=7), generate_project(12, seed=7)
    assert [(r.key, r.values) for r in first.rows] == [(r.key, r.values) for r in again.rows]
    other = generate_project(12, seed=8)
    assert [r.values for r in first.rows] != [r.values for r in other.rows]


def test_participants_and_record_ids(study):
    ids = study.project.record_ids()
    assert ids == [f"{i:03d}" for i in range(1, 34)]
    assert all(isinstance(r.record, str) for r in study.project.rows)
    assert all(r.values.get("record_id", r.record) == r.record for r in study.project.rows)
    assert generate_project(2, with_errors=False).record_ids() == ["001", "002"]


def test_rows_follow_the_design(study):
    project = study.project
    for row in project.rows:
        forms = {n.removesuffix("_complete") for n in row.values if n.endswith("_complete")}
        assert forms <= set(project.forms_for_event(row.event)), row.key
        if row.repeat_instrument:
            assert row.repeat_instrument in project.repeating_forms(row.event)
            assert forms == {row.repeat_instrument} and row.repeat_instance >= 1
        else:
            assert row.repeat_instance is None
    assert len({r.key for r in project.rows}) == len(project.rows)


def test_clean_data_passes_every_rule(clean):
    assert clean.errors == []
    assert _dictionary_problems(clean.project) == set()
    assert _study_problems(clean.project) == set()


def test_every_listed_error_is_in_the_data_and_caught(study, clean):
    assert 8 <= len(study.errors) <= 12
    assert len({e.intended_rule for e in study.errors}) == len(study.errors)
    index = {r.key: r for r in study.project.rows}
    clean_index = {r.key: r for r in clean.project.rows}
    for e in study.errors:
        key = (e.record, e.event, e.instrument if e.repeat_instance else "", e.repeat_instance)
        assert index[key].values[e.field] == e.value, e
        assert clean_index[key].values[e.field] != e.value, e
    found = _dictionary_problems(study.project) | _study_problems(study.project)
    listed = {(e.record, e.event, e.repeat_instance, e.field) for e in study.errors}
    assert found == listed


def test_plausible_physiology(clean):
    for record, events in _rows(clean.project).items():
        mips = {}
        for event in ASSESSMENT_EVENTS:
            v = events[event].values if event in events else {}
            if "rms_date" not in v:  # a withdrawn participant's month-12 row
                continue
            assert 0 < float(v["fev1_l"]) <= float(v["fvc_l"]) < 7
            assert float(v["thick_insp_mm"]) > float(v["thick_exp_mm"])
            assert abs(int(v["mip_kh2_best"]) - int(v["mip_rpc_best"])) <= 10
            assert 1 <= float(v["fss_score"]) <= 7
            mips[event] = int(v["mip_kh2_best"])
        assert 30 <= mips["screening_arm_1"] <= 110
        run_in = mips["baseline_arm_1"] / mips["screening_arm_1"] - 1
        assert abs(run_in) < 0.15, record
        if "month_3_arm_1" in mips:
            assert mips["month_3_arm_1"] / mips["baseline_arm_1"] - 1 > 0.05, record
            assert mips["month_12_arm_1"] < mips["month_3_arm_1"] + 5, record


def test_calculated_fields_match_redcap_logic(clean):
    calcs = [f for f in clean.project.dictionary.fields if f.field_type == "calc"]
    formulas = {f.name: parse_logic(f.choices_or_calc, field=f.name) for f in calcs}
    checked = 0
    for row in clean.project.rows:
        for name, formula in formulas.items():
            if name in row.values:
                result = evaluate(formula, row.values, field=name)
                assert f"{result:.10g}" == row.values[name], (row.key, name)
                checked += 1
    assert checked > 33 * 6


def test_dates_respect_event_windows(clean):
    windows = {e.unique_event_name: e for e in clean.project.events}
    for record, events in _rows(clean.project).items():
        baseline = date.fromisoformat(events["baseline_arm_1"].values["rms_date"])
        for event in ASSESSMENT_EVENTS:
            if "rms_date" in events.get(event, RecordRow(record)).values:
                offset = (date.fromisoformat(events[event].values["rms_date"]) - baseline).days
                w = windows[event]
                assert w.day_offset - w.offset_min <= offset <= w.day_offset + w.offset_max
        for row in clean.project.rows:
            if row.record == record and row.event == "training_arm_1":
                when = row.values[FORM_DATE_FIELDS[row.repeat_instrument]]
                day = (date.fromisoformat(when) - baseline).days
                assert 0 <= day <= 90, row.key


def test_load_progression_follows_rule_except_deviations(study):
    rx = {r: ev["baseline_arm_1"].values for r, ev in _rows(study.project).items()}
    listed = {(d.record, d.repeat_instance) for d in study.deviations if d.field == "diary_load"}
    found = set()
    for record, diary in _diaries(study.project).items():
        loads = [int(r.values["diary_load"]) for r in diary]
        borgs = [float(r.values["diary_borg"]) for r in diary]
        start = int(rx[record]["rx_start_load"])
        assert start == math.floor(0.3 * int(rx[record]["rx_mip"]) + 0.5)
        found |= {(record, i + 1) for i in rule_violations(start, loads, borgs)}
    assert found == listed
    kinds = {d.kind for d in study.deviations}
    assert kinds == {"load_raised_without_rule", "load_not_raised", "missed_week"}


def test_missed_week_and_adherence(study):
    diaries = _diaries(study.project)
    gaps = set()
    for record, diary in diaries.items():
        days = [date.fromisoformat(r.values["diary_date"]) for r in diary]
        for i in range(1, len(days)):
            if (days[i] - days[i - 1]).days > 7:
                gaps.add((record, i + 1))
        assert 0.75 < len(diary) / 90 <= 1 or record in _dropouts(study.project)
    error_rows = {(e.record, e.repeat_instance) for e in study.errors if e.field == "diary_date"}
    listed = {(d.record, d.repeat_instance) for d in study.deviations if d.kind == "missed_week"}
    assert gaps - {(r, i) for r, i in error_rows} - {(r, i + 1) for r, i in error_rows} == listed


def _dropouts(project: ProjectDefinition) -> set[str]:
    return {r.record for r in project.rows if r.values.get("withdrawn") == "1"}


def test_one_dropout_stops_having_visits(study):
    dropouts = _dropouts(study.project)
    assert len(dropouts) == 1
    (record,) = dropouts
    events = {r.event for r in study.project.rows if r.record == record and not r.repeat_instrument}
    assert events == {"screening_arm_1", "baseline_arm_1", "month_12_arm_1"}
    completion = _rows(study.project)[record]["month_12_arm_1"].values
    assert set(completion) == {"withdrawn", "withdrawal_date", "withdrawal_reason",
                               "completion_date", "study_completion_complete"}
    last_diary = max(r.values["diary_date"] for r in _diaries(study.project)[record])
    assert last_diary < completion["withdrawal_date"]


def test_phone_calls_every_two_weeks_match_the_diary(clean):
    diaries = _diaries(clean.project)
    calls = [r for r in clean.project.rows if r.repeat_instrument == "phone_followup"]
    assert {len([c for c in calls if c.record == r]) for r in clean.project.record_ids()} >= {6}
    for call in calls:
        day = date.fromisoformat(call.values["pf_date"])
        assert 0 <= int(call.values["pf_sessions"]) <= 14
        assert day > date.fromisoformat(diaries[call.record][0].values["diary_date"])
        assert ("pf_new_load" in call.values) == (call.values["pf_load_adjusted"] == "1")


def test_checkboxes_store_only_ticked_options(clean):
    ticked = [
        (name, value) for r in clean.project.rows for name, value in r.values.items()
        if "___" in name
    ]
    assert ticked and all(value == "1" for _, value in ticked)
    for row in clean.project.rows:
        other = row.values.get("diary_symptoms_other")
        assert (other is not None) == ("diary_symptoms___5" in row.values)


def test_adverse_events_for_a_few(clean):
    aes = [r for r in clean.project.rows if r.repeat_instrument == "adverse_events"]
    assert 1 <= len({r.record for r in aes}) <= 15


def test_scales_without_errors_and_larger_projects():
    project = generate_project(150, seed=3, with_errors=False)
    assert len(project.record_ids()) == 150 and project.record_ids()[-1] == "150"
    assert _dictionary_problems(project) == set()
