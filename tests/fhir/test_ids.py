"""Deterministic FHIR ids: stable across runs, distinct across inputs, valid FHIR ids."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from imt_etl.fhir import context as refs
from imt_etl.fhir import ids

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def test_namespace_is_the_documented_derivation():
    assert ids.NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "urn:imt-etl:fhir-resource-ids")


def test_known_value_never_changes():
    # Pinned: if this changes, every published resource would be duplicated on re-publish.
    assert ids.patient_id("imt", "001") == str(
        uuid.uuid5(ids.NAMESPACE, '["Patient", "imt", "001", "", "", null, ""]')
    )


def test_same_input_same_id_and_valid_fhir_id():
    a = ids.observation_id("imt", "001", "baseline_arm_1", "spirometry", None, "fev1_l")
    b = ids.observation_id("imt", "001", "baseline_arm_1", "spirometry", None, "fev1_l")
    assert a == b
    assert FHIR_ID.match(a)
    assert uuid.UUID(a).version == 5


def test_int_and_str_instance_are_the_same_instance():
    assert ids.questionnaire_response_id("imt", "1", "e", "f", 3) == (
        ids.questionnaire_response_id("imt", "1", "e", "f", "3")
    )


def test_distinct_inputs_give_distinct_ids():
    made = {
        ids.resource_id("Patient", "imt", "001"),
        ids.resource_id("Encounter", "imt", "001"),  # kind matters
        ids.resource_id("Patient", "imt", "002"),
        ids.resource_id("Patient", "other", "001"),
        ids.resource_id("Patient", "imt|001"),  # no separator ambiguity
        ids.resource_id("Patient", "imt", "0", "01"),
        ids.resource_id("Patient", "imt", "00", "1"),
        ids.questionnaire_response_id("imt", "001", "e", "f", None),
        ids.questionnaire_response_id("imt", "001", "e", "f", ""),
        ids.questionnaire_response_id("imt", "001", "e", "f", "None"),
        ids.questionnaire_response_id("imt", "001", "e", "f", 1),
        ids.observation_id("imt", "001", "e", "f", None, "a"),
        ids.observation_id("imt", "001", "e", "f", None, "b"),
        ids.encounter_id("imt", "001", "e"),
        ids.research_subject_id("imt", "001"),
        ids.research_study_id("imt"),
        ids.questionnaire_id("imt", "f", "1.0"),
        ids.questionnaire_id("imt", "f", "1.1"),
    }
    assert len(made) == 18


def test_many_records_no_collisions():
    keys = [(r, e, i) for r in range(40) for e in ("a", "b", "c") for i in (None, 1, 2, 3)]
    made = {ids.questionnaire_response_id("imt", str(r), e, "diary", i) for r, e, i in keys}
    assert len(made) == len(keys)


@pytest.mark.parametrize("bad", [True, 1.5, b"x", ("a",)])
def test_bad_parts_are_refused(bad):
    with pytest.raises(TypeError):
        ids.resource_id("Patient", bad)  # type: ignore[arg-type]


def test_empty_kind_refused():
    with pytest.raises(ValueError):
        ids.resource_id("", "x")


@pytest.mark.parametrize("parts", [
    ("imt", "001", "baseline_arm_1", "spirometry", None, "fev1_l"),
    ("imt", "001", "", "diary", 3, 'q"u\\o\te ü 🙂'),
    ("imt", "001", "e", "f", "2", None),
    ("imt",),
])
def test_ids_are_uuid5_of_the_json_name_and_prefixed_ids_match(parts):
    normal = [str(p) if isinstance(p, int) else p for p in parts]
    name = json.dumps(["Observation", *normal], ensure_ascii=False)
    expected = str(uuid.uuid5(ids.NAMESPACE, name))
    assert ids.resource_id("Observation", *parts) == expected
    assert ids.prefixed_id(ids.id_prefix("Observation", *parts[:-1]),
                           ids.id_tail(parts[-1])) == expected
    if len(parts) > 1:
        shared = ids.shared_name(*parts[:-1])
        assert ids.prefixed_id(ids.named_prefix("Observation", shared),
                               ids.id_tail(parts[-1])) == expected
    if len(parts) == 6:
        response, prefix = ids.response_and_observation_prefix(*parts[:-1])  # type: ignore[arg-type]
        assert response == ids.questionnaire_response_id(*parts[:-1])  # type: ignore[arg-type]
        assert ids.prefixed_id(prefix, ids.id_tail(parts[-1])) == expected


def test_a_visit_forms_ids_are_those_of_its_response_and_observations():
    from tests.fhir.reference_data import reference_context

    ctx = reference_context()
    parts = ("001", "baseline_arm_1", "diary", 2)
    response, prefix = refs.visit_form_ids(ctx, *parts)
    assert response == refs.questionnaire_response_id(ctx, *parts)
    assert response == ids.questionnaire_response_id(ctx.study_id, ctx.subject_key("001"),
                                                     "baseline_arm_1", "diary", 2)
    assert ids.prefixed_id(prefix, ids.id_tail("fev1_l")) == refs.observation_id(
        ctx, *parts, "fev1_l")
