"""FHIR R4 validators: valid resources pass all three, deliberately broken ones are caught."""

import copy
import hashlib
import time
from importlib import resources

import pytest

from imt_etl.fhir.validation import (
    SCHEMA_FILE,
    resource_types,
    validate_many,
    validate_r4,
    validate_r4b_model,
)

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "https://example.org/imt/record", "value": "101"}],
    "gender": "female",
    "birthDate": "1961-04-02",
}

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs",
    }]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7",
                         "display": "Body weight"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01T10:00:00+02:00",
    "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org",
                      "code": "kg"},
}

QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "id": "q-6mwt",
    "url": "https://example.org/imt/Questionnaire/six_minute_walk",
    "status": "active",
    "description": "Six-minute walk test",  # an element named like a schema annotation
    "item": [
        {"linkId": "mwt_stops", "text": "Did the participant stop?", "type": "choice",
         "answerOption": [{"valueCoding": {"system": "https://example.org/cs/yesno", "code": "1",
                                           "display": "Yes"}}]},
        {"linkId": "mwt_n_stops", "text": "Number of stops", "type": "integer",
         "enableWhen": [
             {"question": "mwt_stops", "operator": "=",
              "answerCoding": {"system": "https://example.org/cs/yesno", "code": "1"}},
             {"question": "mwt_stops", "operator": "exists", "answerBoolean": True},
         ],
         "enableBehavior": "all"},
    ],
}

QUESTIONNAIRE_RESPONSE = {
    "resourceType": "QuestionnaireResponse",
    "id": "qr1",
    "questionnaire": "https://example.org/imt/Questionnaire/six_minute_walk",
    "status": "completed",
    "subject": {"reference": "Patient/p1"},
    "authored": "2024-05-01T10:00:00Z",
    "item": [
        {"linkId": "mwt_stops",
         "answer": [{"valueCoding": {"system": "https://example.org/cs/yesno", "code": "1"}}]},
        {"linkId": "mwt_n_stops", "answer": [{"valueInteger": 2}]},
    ],
}


def transaction(*resources_):
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{i}", "resource": r,
             "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for i, r in enumerate(resources_)
        ],
    }


VALID = {
    "patient": PATIENT,
    "observation": OBSERVATION,
    "questionnaire": QUESTIONNAIRE,
    "questionnaire_response": QUESTIONNAIRE_RESPONSE,
    "bundle": transaction(PATIENT, OBSERVATION, QUESTIONNAIRE, QUESTIONNAIRE_RESPONSE),
}


def changed(resource, **updates):
    out = copy.deepcopy(resource)
    out.update(updates)
    return out


def without(resource, key):
    return {k: v for k, v in resource.items() if k != key}


def test_vendored_schema_is_the_pinned_official_file():
    data = resources.files("imt_etl.fhir").joinpath("schema", SCHEMA_FILE).read_bytes()
    expected = "15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"
    assert hashlib.sha256(data).hexdigest() == expected
    assert {"Patient", "Observation", "Questionnaire", "Bundle"} <= resource_types()


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_resources_pass_every_validator(name):
    assert validate_r4(VALID[name]) == []
    assert validate_r4b_model(VALID[name]) == []


# Each: (resource, source expected to catch it, a fragment of its message).
BROKEN = {
    "bad status code": (changed(OBSERVATION, status="bogus"), "schema: Observation.status",
                        "bogus"),
    "bad gender code": (changed(PATIENT, gender="f"), "schema: Patient.gender", "not one of"),
    "unknown element": (changed(PATIENT, favouriteColour="blue"),
                        "fhirkit: Patient.favouriteColour", "unknown element"),
    "wrong type": (changed(OBSERVATION, valueQuantity={"value": "72.5", "unit": "kg"}),
                   "Observation.valueQuantity.value", "number"),
    "single value where a list belongs": (changed(PATIENT, identifier={"value": "1"}),
                                          "Patient.identifier", ""),
    "dateTime without timezone": (changed(OBSERVATION, effectiveDateTime="2024-05-01T10:00:00"),
                                  "Observation.effectiveDateTime", ""),
    "month 13": (changed(PATIENT, birthDate="1961-13-01"), "fhirkit: Patient.birthDate",
                 "not a valid date"),
    "R5 Encounter.class as a list": (
        {"resourceType": "Encounter", "status": "finished",
         "class": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}]},
        "fhirkit: Encounter.class", "array"),
    "R5 ResearchSubject.subject": (
        {"resourceType": "ResearchSubject", "status": "on-study",
         "study": {"reference": "ResearchStudy/s1"}, "subject": {"reference": "Patient/p1"}},
        "ResearchSubject", "subject"),
    "missing required code": (without(OBSERVATION, "code"), "Observation", "code"),
    "bad enableWhen operator": (
        changed(QUESTIONNAIRE, item=[{**QUESTIONNAIRE["item"][1],
                                      "enableWhen": [{"question": "mwt_stops", "operator": "==",
                                                      "answerBoolean": True}]}]),
        "schema: Questionnaire.item[0].enableWhen[0].operator", "=="),
    "bad bundle type": (changed(VALID["bundle"], type="batch-transaction"), "schema: Bundle.type",
                        "not one of"),
    "broken resource inside a bundle": (transaction(changed(OBSERVATION, status="done")),
                                        "schema: Bundle.entry[0].resource.status", "done"),
    "broken contained resource": (
        changed(PATIENT, contained=[changed(OBSERVATION, id="c1", status="nope")]),
        "schema: Patient.contained[0].status", "nope"),
    "entry without resourceType": (
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"id": "x"}}]},
        "Bundle.entry[0].resource", "resourceType"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_resources_are_caught(name):
    resource, where, fragment = BROKEN[name]
    problems = validate_r4(resource)
    hits = [p for p in problems if where in p and fragment in p]
    assert hits, f"{name}: no problem mentions {where!r}/{fragment!r}: {problems}"


def test_decimal_values_are_accepted():
    from decimal import Decimal

    quantity = {**OBSERVATION["valueQuantity"], "value": Decimal("72.5")}
    assert validate_r4(changed(OBSERVATION, valueQuantity=quantity)) == []


def test_problems_from_both_sources_are_reported_and_short():
    problems = validate_r4(changed(PATIENT, favouriteColour="blue", gender="f"))
    assert any(p.startswith("fhirkit: ") for p in problems)
    assert any(p.startswith("schema: ") for p in problems)
    pattern_problem = validate_r4(changed(OBSERVATION, effectiveDateTime="2024-05-01T10:00"))
    assert all(len(p) < 300 for p in pattern_problem)


@pytest.mark.parametrize(
    ("resource", "fragment"),
    [({"id": "x"}, "resourceType is missing"),
     ({"resourceType": "Banana"}, "not an R4 resource"),
     ({"resourceType": "ActorDefinition"}, "not an R4 resource"),  # R5-only type
     (["not", "a", "resource"], "not a JSON object")],
)
def test_not_a_resource(resource, fragment):
    assert fragment in validate_r4(resource)[0]
    assert fragment in validate_r4b_model(resource)[0]


def test_calendar_check_needs_the_r4b_model():
    # Known gap: fhirkit-rs and the schema regex both accept 30 February; pydantic does not.
    impossible = changed(PATIENT, birthDate="1961-02-30")
    assert validate_r4(impossible) == []
    assert "day value is outside expected range" in validate_r4b_model(impossible)[0]


def test_r4b_model_reports_paths():
    problems = validate_r4b_model(changed(OBSERVATION, effectiveDateTime="2024-05-01T10:00:00"))
    assert problems and problems[0].startswith("R4B: Observation.effectiveDateTime")
    assert validate_r4b_model(changed(PATIENT, extra=1)) == ["R4B: Patient.extra: Extra inputs are "
                                                             "not permitted"]


def test_validate_many_reports_only_invalid_positions():
    batch = [PATIENT, changed(PATIENT, gender="x"), OBSERVATION, without(OBSERVATION, "status")]
    found = validate_many(batch)
    assert sorted(found) == [1, 3]
    assert any("Patient.gender" in p for p in found[1])
    assert validate_many([]) == {}


def test_throughput_is_usable_at_run_time():
    # 2,000 Observations: a real run validates every resource, so this must stay fast.
    batch = [changed(OBSERVATION, id=f"o{i}") for i in range(2000)]
    start = time.perf_counter()
    assert validate_many(batch) == {}
    rate = len(batch) / (time.perf_counter() - start)
    assert rate > 1000, f"{rate:.0f} resources/s"
