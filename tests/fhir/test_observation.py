"""Observations: hand-checked resources, value types, codes, units, conversions, validity."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from imt_etl.errors import FhirBuildError
from imt_etl.fhir import context as refs
from imt_etl.fhir.mappings import CATEGORY_SYSTEM
from imt_etl.fhir.observation import UCUM, observations, to_observation
from imt_etl.fhir.terminology import ucum_problem
from imt_etl.fhir.validation import validate_r4, validate_r4b_model
from imt_etl.measures import measurements
from tests.fhir.reference_data import (
    reference_build,
    reference_context,
    reference_mapping,
    reference_tidy,
)

LOCAL = "https://imt-etl.org/fhir/CodeSystem/imt"
SCREENING = "screening_arm_1"


@pytest.fixture(scope="module")
def table():
    tables = {f: df[df.record_id.isin({"001", "002"})] for f, df in reference_tidy().tables.items()}
    return measurements(tables, reference_mapping())


def _rows(table: pd.DataFrame, record: str, event: str, measure: str) -> list[dict]:
    hit = table[(table.record_id == record) & (table.redcap_event_name == event)
                & ((table.measure_id == measure) | (table.parent_measure_id == measure))]
    return hit.to_dict("records")


def _common(ctx, record: str, event: str, form: str, field: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": refs.observation_id(ctx, record, event, form, None, field),
        "status": "final",
        "subject": {"reference": refs.patient_ref(ctx, record)},
        "encounter": {"reference": refs.encounter_ref(ctx, record, event)},
        "derivedFrom": [{"reference": refs.questionnaire_response_ref(ctx, record, event, form,
                                                                      None)}],
    }


def test_mip_best_trial_observation_by_hand(table):
    ctx = reference_context()
    obs = to_observation(_rows(table, "001", SCREENING, "mip_kh2_best"), ctx)
    trial = {"system": LOCAL, "version": "1.0.0"}
    expected = {
        **_common(ctx, "001", SCREENING, "respiratory_muscle_strength", "mip_kh2_best"),
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "exam",
                                  "display": "Exam"}]}],
        "code": {
            "coding": [
                {**trial, "code": "mip-kh2-best",
                 "display": "Maximal inspiratory pressure, POWERbreathe KH2, best trial"},
                {"system": "http://snomed.info/sct", "code": "27913002",
                 "display": "Maximum inspiratory pressure"},
            ],
            "text": "Maximal inspiratory pressure, POWERbreathe KH2, best trial",
        },
        "effectiveDateTime": "2024-08-12",
        "valueQuantity": {"value": 61, "unit": "cm[H2O]", "system": UCUM, "code": "cm[H2O]"},
        "component": [
            {"code": {"coding": [{**trial, "code": f"mip-kh2-trial-{i}",
                                  "display": f"MIP, POWERbreathe KH2, trial {i}"}],
                      "text": f"MIP, POWERbreathe KH2, trial {i}"},
             "valueQuantity": {"value": v, "unit": "cm[H2O]", "system": UCUM, "code": "cm[H2O]"}}
            for i, v in ((1, 61), (2, 59), (3, 61))
        ],
    }
    assert obs == expected
    assert validate_r4(obs) == [] and validate_r4b_model(obs) == []


def _component(code: str, display: str, value: dict, loinc: tuple[str, str] | None = None):
    coding = [{"system": LOCAL, "version": "1.0.0", "code": code, "display": display}]
    if loinc:
        coding.append({"system": "http://loinc.org", "code": loinc[0], "display": loinc[1]})
    return {"code": {"coding": coding, "text": display}, **value}


def _qty(value, unit):
    return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def test_six_minute_walk_with_components_by_hand(table):
    ctx = reference_context()
    obs = to_observation(_rows(table, "001", SCREENING, "six_minute_walk_distance"), ctx)
    spo2 = ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
    hr = ("8867-4", "Heart rate")
    expected = {
        **_common(ctx, "001", SCREENING, "six_minute_walk", "mwt_distance_m"),
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "activity",
                                  "display": "Activity"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "64098-7",
                             "display": "Walking distance 6 minutes"}],
                 "text": "Walking distance 6 minutes"},
        "effectiveDateTime": "2024-08-12",
        "valueQuantity": {"value": 480, "unit": "m", "system": UCUM, "code": "m"},
        "component": [
            _component("mwt-spo2-pre", "SpO2 before the six-minute walk", _qty(96, "%"), spo2),
            _component("mwt-spo2-post", "SpO2 after the six-minute walk", _qty(93, "%"), spo2),
            _component("mwt-heart-rate-pre", "Heart rate before the six-minute walk",
                       _qty(78, "/min"), hr),
            _component("mwt-heart-rate-post", "Heart rate after the six-minute walk",
                       _qty(105, "/min"), hr),
            _component("mwt-stopped", "Stopped during the six-minute walk",
                       {"valueBoolean": False}),
            _component("mwt-perceived-effort", "Perceived overall effort of the six-minute walk",
                       {"valueInteger": 48}),
        ],
    }
    assert obs == expected
    assert validate_r4(obs) == [] and validate_r4b_model(obs) == []


def test_value_types(table):
    ctx = reference_context()
    item = to_observation(_rows(table, "001", SCREENING, "fss_item_1"), ctx)
    assert item["valueInteger"] == 6 and "valueQuantity" not in item
    subtype = to_observation(_rows(table, "001", SCREENING, "iim_subtype"), ctx)
    assert subtype["valueCodeableConcept"] == {
        "coding": [{"system": LOCAL, "code": "iim-subtype-ibm",
                    "display": "Inclusion body myositis"}],
        "text": "Inclusion body myositis"}
    derived = to_observation(_rows(table, "001", SCREENING, "mip_kh2_pct_predicted"), ctx)
    assert derived["valueQuantity"]["value"] == round(61 / (120 - 0.41 * 62) * 100, 6)
    assert derived["id"] == refs.observation_id(ctx, "001", SCREENING,
                                                "respiratory_muscle_strength", None,
                                                "mip_kh2_pct_predicted")


def test_datetime_effective_gets_the_study_zone_offset(table):
    rows = _rows(table, "001", SCREENING, "body_height")
    rows[0]["effective_datetime"] = pd.Timestamp(datetime(2024, 8, 12, 13, 33))
    obs = to_observation(rows, reference_context())
    assert obs["effectiveDateTime"] == "2024-08-12T13:33:00+02:00"  # Warsaw summer time
    rows[0]["effective_datetime"] = pd.Timestamp(datetime(2024, 1, 12, 8, 5))
    assert to_observation(rows, reference_context())["effectiveDateTime"].endswith("+01:00")


def test_components_without_parent_value_get_a_data_absent_reason(table):
    rows = [r for r in _rows(table, "001", SCREENING, "mep_best") if r["measure_id"] != "mep_best"]
    obs = to_observation(rows, reference_context())
    assert "valueQuantity" not in obs and obs["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert len(obs["component"]) == 3
    assert validate_r4(obs) == [] and validate_r4b_model(obs) == []


def test_a_row_without_its_value_is_an_error(table):
    rows = _rows(table, "001", SCREENING, "body_height")
    rows[0]["value"] = pd.NA
    with pytest.raises(FhirBuildError, match="001"):
        to_observation(rows, reference_context())


def test_ck_in_ukat_per_litre_is_published_in_u_per_litre():
    core = reference_tidy().tables["myositis_core_set"]
    row = core[core.ck_unit == "2"].iloc[0]
    tables = {f: df[df.record_id == row.record_id] for f, df in reference_tidy().tables.items()}
    ctx = reference_context()
    obs = [o for o in observations(measurements(tables, reference_mapping()), ctx)
           if o["code"]["coding"][0]["code"] == "2157-6"
           and o["effectiveDateTime"] == row.mcs_date.isoformat()]
    assert len(obs) == 1
    assert obs[0]["valueQuantity"] == {"value": round(row.ck_value * 60, 6), "unit": "U/L",
                                       "system": UCUM, "code": "U/L"}


def test_every_observation_code_is_verified_or_local_and_every_unit_ucum():
    built = reference_build()
    terminology = reference_mapping().terminology
    local = {c["code"] for c in built["CodeSystem"][0]["concept"]}
    systems = {"http://loinc.org": "loinc", "http://snomed.info/sct": "snomed"}
    seen = 0
    for obs in built["Observation"]:
        parts = [obs, *obs.get("component", [])]
        for part in parts:
            for coding in part["code"]["coding"]:
                seen += 1
                if coding["system"] == LOCAL:
                    assert coding["code"] in local, coding
                else:
                    assert terminology.rows_for_code(systems[coding["system"]], coding["code"])
            quantity = part.get("valueQuantity")
            if quantity:
                assert quantity["system"] == UCUM and ucum_problem(quantity["code"]) is None
            answer = part.get("valueCodeableConcept")
            if answer:
                assert all(c["code"] in local for c in answer["coding"] if c["system"] == LOCAL)
    assert seen > len(built["Observation"])


def test_one_observation_of_every_measure_is_valid_r4_and_r4b():
    # Every shape (each measure, its value type and components) once: validating all ~22k
    # Observations with the schema and the models would take minutes.
    sample: dict[tuple, dict] = {}
    for obs in reference_build()["Observation"]:
        parts = tuple(c["code"]["coding"][0]["code"] for c in obs.get("component", []))
        sample.setdefault((obs["code"]["coding"][0]["code"], parts), obs)
    measures = {key[0] for key in sample}
    assert len(measures) == len(reference_mapping().observations)
    for obs in sample.values():
        assert validate_r4(obs) == [], obs["code"]
        assert validate_r4b_model(obs) == [], obs["code"]


def test_effective_dates_are_dates_or_zoned(table):
    for obs in observations(table, reference_context()):
        value = obs["effectiveDateTime"]
        assert len(value) == 10 and date.fromisoformat(value) or value[-6] in "+-"
