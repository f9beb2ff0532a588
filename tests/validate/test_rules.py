"""Each study rule of schemas/imt/rules.yaml: it passes on clean data and fails on a bad value."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from imt_etl.errors import ConfigError
from imt_etl.redcap.tidy import TidyResult
from imt_etl.validate import Finding, load_rules, register_check, validate_project
from imt_etl.validate.rules import RuleContext, StudyRules, run_rules

BASE, M3, M6 = "baseline_arm_1", "month_3_arm_1", "month_6_arm_1"
RMS, DIARY = "respiratory_muscle_strength", "training_diary"


def _row(table: pd.DataFrame, record: str, event: str, instance: int | None) -> pd.Series:
    mask = (table["record_id"] == record) & (table["redcap_event_name"] == event)
    if instance is not None:
        mask &= table["redcap_repeat_instance"] == instance
    assert mask.sum() == 1, (record, event, instance)
    return mask.fillna(False).astype(bool)


def _typed(table: pd.DataFrame, name: str, value: str):
    dtype = str(table[name].dtype)
    if dtype.startswith("date32"):
        return date.fromisoformat(value)
    return {"Int64": int, "Float64": float}.get(dtype, str)(value)


def mutate(tidy: TidyResult, form: str, record: str, event: str, values: dict[str, str],
           instance: int | None = None) -> TidyResult:
    """A copy of `tidy` with some values of one row changed (typed and raw alike)."""
    tables, raw = dict(tidy.tables), dict(tidy.raw)
    table, strings = tables[form].copy(), raw[form].copy()
    mask = _row(table, record, event, instance)
    for name, value in values.items():
        table.loc[mask, name] = _typed(table, name, value)
        strings.loc[mask, name] = value
    tables[form], raw[form] = table, strings
    return TidyResult(tables, raw, list(tidy.issues))


def value(tidy: TidyResult, form: str, record: str, event: str, name: str,
          instance: int | None = None):
    table = tidy.tables[form]
    return table.loc[_row(table, record, event, instance), name].iloc[0]


def _day(d: date, days: int) -> str:
    return (d + timedelta(days=days)).isoformat()


def _cases(t) -> list[tuple[str, str, str, str, dict[str, str], int | None]]:
    """(rule, record, form, event, changed values, instance): one bad value per rule."""
    tidy = t.tidy
    rx_date = value(tidy, "imt_prescription", "001", BASE, "rx_date")
    rx_mip = value(tidy, "imt_prescription", "001", BASE, "rx_mip")
    screening = value(tidy, "spirometry", "001", "screening_arm_1", "spiro_date")
    base_date = value(tidy, "spirometry", "001", BASE, "spiro_date")
    comp = tidy.tables["study_completion"]
    quitter = comp.loc[comp["withdrawn"] == "1", "record_id"].iloc[0]
    quit_on = comp.loc[comp["withdrawn"] == "1", "withdrawal_date"].iloc[0]
    diary = tidy.tables[DIARY]
    last = int(diary.loc[diary["record_id"] == quitter, "redcap_repeat_instance"].max())
    return [
        ("imt.mip_range", "001", RMS, BASE, {"mip_kh2_1": "260"}, None),
        ("imt.mep_range", "001", RMS, BASE, {"mep_done": "1", "mep_1": "350"}, None),
        ("imt.fev1_range", "001", "spirometry", BASE, {"fev1_l": "0.1"}, None),
        ("imt.fvc_range", "001", "spirometry", BASE, {"fvc_l": "12"}, None),
        ("imt.spo2_range", "001", "six_minute_walk", BASE, {"spo2_pre": "40"}, None),
        ("imt.heart_rate_range", "001", "six_minute_walk", BASE, {"hr_post": "250"}, None),
        ("imt.6mwd_range", "001", "six_minute_walk", BASE, {"mwt_distance_m": "1200"}, None),
        ("imt.borg_cr10_range", "001", "six_minute_walk", BASE, {"borg_fat_post": "16"}, None),
        ("imt.borg_cr10_above_10", "001", "six_minute_walk", BASE, {"borg_fat_post": "12"},
         None),
        ("imt.diary_borg_range", "001", DIARY, "training_arm_1", {"diary_borg": "-2"}, 1),
        ("imt.diary_breaths_range", "001", DIARY, "training_arm_1", {"diary_breaths": "61"}, 1),
        ("imt.best_mip_equals_max_trial", "001", RMS, BASE, {"mip_kh2_best": "20"}, None),
        ("imt.best_mip_rpc_equals_max_trial", "001", RMS, BASE, {"mip_rpc_best": "20"}, None),
        ("imt.best_mep_equals_max_trial", "001", RMS, BASE,
         {"mep_done": "1", "mep_1": "80", "mep_2": "90", "mep_3": "85", "mep_best": "85"}, None),
        ("imt.fev1_le_fvc", "001", "spirometry", BASE, {"fev1_l": "2.5", "fvc_l": "2.0"}, None),
        ("imt.thickness_insp_ge_exp", "001", "diaphragm_ultrasound", BASE,
         {"thick_insp_mm": "0.6"}, None),
        ("imt.visit_order", "001", "spirometry", M6, {"spiro_date": _day(screening, -1)}, None),
        ("imt.visit_window", "001", "spirometry", M6, {"spiro_date": _day(base_date, 150)},
         None),
        ("imt.diary_date_in_training", "001", DIARY, "training_arm_1",
         {"diary_date": _day(rx_date, 98)}, 1),
        ("imt.no_diary_after_withdrawal", quitter, DIARY, "training_arm_1",
         {"diary_date": _day(date.fromisoformat(str(quit_on)), 1)}, last),
        ("imt.diary_load_le_mip", "001", DIARY, "training_arm_1",
         {"diary_load": str(int(rx_mip) + 1)}, 1),
    ]


def test_every_rule_has_a_case(clean, imt_rules):
    assert {c[0] for c in _cases(clean)} == {r.id for r in imt_rules.rules}


def test_each_rule_fails_on_its_bad_value(clean, imt_rules):
    for rule_id, record, form, event, values, instance in _cases(clean):
        bad = mutate(clean.tidy, form, record, event, values, instance)
        only = StudyRules("imt", tuple(r for r in imt_rules.rules if r.id == rule_id))
        found = run_rules(only, RuleContext(bad.tables, bad.raw, clean.meta))
        assert [(f.rule_id, f.record_id, f.event, f.repeat_instance) for f in found] == [
            (rule_id, record, event, instance)], rule_id
        assert found[0].field in values and "{" not in found[0].message
        # ... and passes on the clean data.
        assert run_rules(only, RuleContext(clean.tidy.tables, clean.tidy.raw, clean.meta)) == []


def test_mip_magnitude_accepts_a_negative_sign(clean, imt_rules):
    trial = value(clean.tidy, RMS, "001", BASE, "mip_kh2_1")
    bad = mutate(clean.tidy, RMS, "001", BASE, {"mip_kh2_1": str(-int(trial))})
    result = validate_project(bad, clean.meta, imt_rules)
    assert "imt.mip_range" not in set(result.findings["rule_id"])
    assert "dict.range" not in set(result.findings["rule_id"])  # replaced by imt.mip_range


def test_borg_between_10_and_15_warns_and_flows_on(clean, imt_rules):
    bad = mutate(clean.tidy, "six_minute_walk", "001", BASE, {"borg_fat_post": "12"})
    result = validate_project(bad, clean.meta, imt_rules)
    assert list(result.findings["rule_id"]) == ["imt.borg_cr10_above_10"]
    assert result.counts["six_minute_walk"]["quarantined"] == 0


@register_check("test.no_load_above_80")
def _no_high_load(rule, ctx: RuleContext) -> list[Finding]:
    table = ctx.tables[rule.params["instrument"]]
    return ctx.findings(rule, rule.params["instrument"], table["diary_load"] > 80, "diary_load")


def test_registered_python_check(clean, tmp_path: Path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "study: t\nrules:\n  - {id: t.load, kind: python, check: test.no_load_above_80, "
        "instrument: training_diary, severity: warning, message: 'load {value} above 80'}\n")
    rules = load_rules(path)
    assert validate_project(clean.tidy, clean.meta, rules).findings.empty
    bad = mutate(clean.tidy, DIARY, "001", "training_arm_1", {"diary_load": "85"}, 2)
    found = validate_project(bad, clean.meta, rules).findings
    assert list(zip(found["rule_id"], found["message"], strict=True))[-1] == (
        "t.load", "load 85 above 80")


@pytest.mark.parametrize(("text", "problem"), [
    ("- {id: a, kind: nope, severity: error, message: m}", "kind"),
    ("- {id: a, kind: range, severity: fatal, message: m, instrument: x, fields: [y]}",
     "severity"),
    ("- {id: a, kind: range, severity: error, message: m, instrument: x}", "missing key"),
    ("- {id: a, kind: range, severity: error, message: m, instrument: x, fields: [y], z: 1}",
     "unknown key"),
    ("- {id: a, kind: range, severity: error, message: '{oops}', instrument: x, fields: [y]}",
     "placeholder"),
    ("- {id: a, kind: compare, severity: error, message: m, instrument: x, field: y, op: '=>',"
     " other: z}", "op"),
])
def test_bad_rule_files_are_rejected(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  {text}\n")
    with pytest.raises(ConfigError, match=problem):
        load_rules(path)


def test_rules_naming_unknown_fields_are_rejected(clean, tmp_path: Path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {id: a, kind: range, severity: error, message: m, "
                    "instrument: spirometry, fields: [no_such_field], max: 1}\n")
    with pytest.raises(ConfigError, match="no_such_field"):
        validate_project(clean.tidy, clean.meta, load_rules(path))
