"""`imt-etl demo --study adl` end to end: valid FHIR, arms, lab units, tables, per-arm report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pandas as pd
import pytest

from imt_etl import cli
from imt_etl.fhir.validation import validate_r4, validate_r4b_model
from imt_etl.redcap.project_xml import read_project_xml
from imt_etl.studies.adl import project_path

UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("adl-demo")
    assert cli.main(["demo", "--study", "adl", "--out", str(folder), "--quiet"]) == 0
    return folder


@pytest.fixture(scope="module")
def written(out) -> list[dict]:
    return [orjson.loads(line) for path in sorted((out / "fhir").glob("*.ndjson"))
            for line in path.read_bytes().splitlines()]


def _observations(written, code: str) -> list[dict]:
    return [r for r in written if r["resourceType"] == "Observation"
            and any(c["code"] == code for c in r["code"]["coding"])]


def test_every_resource_is_valid_r4_and_loads_as_r4b(written):
    assert {f"{r['resourceType']}/{r['id']}": p for r in written if (p := validate_r4(r))} == {}
    assert {f"{r['resourceType']}/{r['id']}": p for r in written
            if (p := validate_r4b_model(r))} == {}
    assert Counter(r["resourceType"] for r in written)["Patient"] == 57


def test_research_subjects_carry_their_arm(written):
    subjects = [r for r in written if r["resourceType"] == "ResearchSubject"]
    assert Counter(s["assignedArm"] for s in subjects) == {
        "Intervention: supervised training": 30, "Control: home exercise": 27}
    assert all(s["actualArm"] == s["assignedArm"] for s in subjects)
    assert Counter(s["status"] for s in subjects)["withdrawn"] == 7
    study = next(r for r in written if r["resourceType"] == "ResearchStudy")
    assert [a["name"] for a in study["arm"]] == [
        "Intervention: supervised training", "Control: home exercise"]
    assert study["identifier"] == [{"system": "https://www.isrctn.com",
                                    "value": "ISRCTN35925199"}]


def test_ck_is_converted_from_ukat_to_u_per_l_and_ld_is_kept_in_ukat(written):
    raw = read_project_xml(project_path())
    ck_ukat = sorted(float(r.values["ck_ukat"]) for r in raw.rows if "ck_ukat" in r.values)
    ld_ukat = sorted(float(r.values["ld_ukat"]) for r in raw.rows if "ld_ukat" in r.values)
    ck = _observations(written, "2157-6")
    assert {o["valueQuantity"]["code"] for o in ck} == {"U/L"}
    # 1 ukat/L = 60 U/L (terminology.md): every stored value is exactly 60 x the recorded one.
    assert sorted(o["valueQuantity"]["value"] for o in ck) == pytest.approx(
        [v * 60 for v in ck_ukat])
    ld = _observations(written, "2532-0")
    assert {(o["valueQuantity"]["system"], o["valueQuantity"]["code"]) for o in ld} == {
        (UCUM, "ukat/L")}
    assert sorted(o["valueQuantity"]["value"] for o in ld) == pytest.approx(ld_ukat)


def test_concepts_without_loinc_are_in_the_project_codesystem(written):
    codesystem = next(r for r in written if r["resourceType"] == "CodeSystem")
    codes = {c["code"] for c in codesystem["concept"]}
    assert {"mmt8-total", "fi2-total", "fis-total", "borg-cr10-exertion", "mcp1-serum",
            "interleukin-8-serum", "basal-metabolic-rate-bia", "ecm-bcm-ratio",
            "posturography-fva-eyes-open", "physician-global-activity-vas",
            "rand36-physical-functioning"} <= codes
    for code in ("mcp1-serum", "interleukin-8-serum", "mmt8-total"):
        obs = _observations(written, code)
        assert obs and all(c["system"] == codesystem["url"]
                           for o in obs for c in o["code"]["coding"])


def test_tables_and_report_exist_with_a_per_arm_summary(out):
    for name in ("observations_long", "visits_wide", "change_from_baseline", "scores",
                 "codebook"):
        assert (out / "parquet" / f"{name}.parquet").is_file(), name
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "Per-arm summary" in page and "Control: home exercise" in page


def test_change_periods_follow_the_paper(out):
    change = pd.read_parquet(out / "parquet" / "change_from_baseline.parquet")
    periods = change.groupby("measure_id")["period"].unique().map(sorted)
    for measure in ("fva_eyes_open", "basal_metabolic_rate", "ecm_bcm_ratio"):
        assert periods[measure] == ["weeks_0_12"], measure
    assert periods["mmt8_total"] == ["weeks_0_12", "weeks_0_24", "weeks_0_48"]
    arm2 = change[(change["arm"] == 2) & (change["period"] == "weeks_0_24")]
    assert set(arm2["from_event"]) == {"week_0_arm_2"}
    assert set(arm2["to_event"]) == {"week_24_arm_2"}
    primary = change[change["is_primary_endpoint"].fillna(False)]
    assert set(primary["measure_id"]) == {"mmt8_total"}
    assert set(primary["period"]) == {"weeks_0_24"}


def test_tis_is_scored_per_participant_and_visit_against_the_arms_week_0(out):
    scores = pd.read_parquet(out / "parquet" / "scores.parquet")
    week0 = scores["event"].str.startswith("week_0_")
    assert scores.loc[week0, "tis_total"].isna().all()
    later = scores[~week0 & scores["tis3_total"].notna()]
    assert set(later["arm"]) == {1, 2}
    assert later["tis3_total"].between(0, 50).all() and later["tis_total"].between(0, 100).all()
    at24 = later[later["event"].str.startswith("week_24_")]
    by_arm = at24.groupby("arm")["tis3_total"].median()
    assert by_arm[1] > by_arm[2]  # supervised training responds more than home exercise
