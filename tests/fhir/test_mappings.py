"""Tests for the mapping loader: the reference study's mapping and every validation error."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from imt_etl.errors import MappingError
from imt_etl.fhir.mappings import (
    CATEGORIES,
    load_study_mapping,
    unmapped_fields,
    validate_against_dictionary,
)
from imt_etl.redcap.dictionary import DataDictionary

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "mappings" / "imt"
TERMINOLOGY = ROOT / "mappings" / "terminology"


@pytest.fixture(scope="module")
def dictionary() -> DataDictionary:
    path = ROOT / "imt_etl" / "studies" / "imt" / "data_dictionary.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return DataDictionary.from_csv_rows(csv.DictReader(handle))


@pytest.fixture(scope="module")
def mapping(dictionary):
    return load_study_mapping(REFERENCE, dictionary)


# --- the reference study ------------------------------------------------------------------------


def test_reference_mapping_covers_every_data_field(mapping, dictionary):
    assert unmapped_fields(mapping, dictionary) == []
    data_fields = {f.name for f in dictionary.fields if f.has_data}
    assert set(mapping.by_field) == data_fields
    assert {m.target for m in mapping.measures} == {
        "observation", "component", "questionnaire_only", "excluded"
    }


def test_reference_study_settings(mapping):
    study = mapping.study
    assert (study.study_id, study.nct_id, study.timezone) == ("imt", "NCT07274267", "Europe/Warsaw")
    assert study.loinc_version == "2.78" and study.version == "1.0.0"
    assert study.codesystem.url == "https://imt-etl.org/fhir/CodeSystem/imt"
    assert study.instruments[0] == "enrollment.yaml"


def test_every_assessment_is_an_observation(mapping):
    ids = {m.measure_id for m in mapping.measures if m.makes_fhir_data}
    expected = {
        "mip_kh2_best", "mip_rpc_best", "mip_kh2_trial_1", "mip_rpc_trial_3", "mep_best",
        "mip_kh2_pct_predicted", "fev1", "fvc", "fev1_fvc", "fivc", "irv", "fev1_pct_predicted",
        "diaphragm_excursion_quiet", "diaphragm_thickening_fraction", "six_minute_walk_distance",
        "mwt_spo2_pre", "mwt_hr_post", "borg_dyspnoea_post", "fss_item_9", "fss_total",
        "rand36_item_36", "rand36_general_health", "mmt8_total", "haq_di", "creatine_kinase",
        "body_height", "body_weight", "bmi", "diary_load", "diary_breaths", "diary_borg",
        "followup_adherence",
    }
    assert expected <= ids
    derived = [m.derived for m in mapping.observations if m.derived]
    scales = [d for d in derived if d.function == "rand36_scales"]
    assert len(scales) == 8


def test_observations_have_codes_units_categories_and_dates(mapping):
    for m in mapping.measures:
        if not m.makes_fhir_data:
            assert not m.codes
            continue
        assert m.codes and m.value_type
        assert (m.unit is not None) == (m.value_type == "quantity"), m.measure_id
        if m.target == "observation":
            assert m.category in CATEGORIES and m.effective_field, m.measure_id


def test_identifiers_are_excluded_and_never_exported(mapping, dictionary):
    for f in dictionary.fields:
        if f.identifier:
            assert mapping.by_field[f.name].target == "excluded"
            assert mapping.by_field[f.name].reason


def test_components_belong_to_their_parent(mapping):
    parent = mapping.measure("six_minute_walk_distance")
    parts = mapping.components_of(parent)
    assert [p.field for p in parts[:4]] == ["spo2_pre", "spo2_post", "hr_pre", "hr_post"]
    assert all(p.parent == parent.measure_id and p.target == "component" for p in parts)
    assert parts[0].codes[1].code == "59408-5"
    assert mapping.measure("mip_kh2_trial_2").parent == "mip_kh2_best"


def test_ck_conversion_is_configured_from_the_unit_field(mapping):
    ck = mapping.by_field["ck_value"]
    assert ck.unit == "U/L" and ck.codes[0].code == "2157-6"
    assert ck.convert.factor_for("2") == 60.0
    assert ck.convert.factor_for("1") == 1.0
    with pytest.raises(ValueError, match="ck_unit"):
        ck.convert.factor_for("3")


def test_derived_measures_call_the_score_functions(mapping):
    pct = mapping.measure("mip_kh2_pct_predicted")
    # Evans & Whitelaw: female aged 50 -> 108 - 0.61 * 50 = 77.5 cmH2O predicted.
    value = pct.derived.compute({"mip_kh2_best": 77.5, "sex": "1", "age": 50})
    assert value == pytest.approx(100.0)
    answers = {f"sf36_{i:02d}": 1 for i in range(1, 37)}
    pf = mapping.measure("rand36_physical_functioning").derived.compute(answers)
    assert pf == 0.0  # "limited a lot" on every physical-functioning item
    fss = mapping.measure("fss_total").derived.compute({f"fss_{i}": 4 for i in range(1, 10)})
    assert fss == 4.0
    assert mapping.measure("fss_total").derived.compute({"fss_1": 4}) is None


def test_direction_and_value_maps(mapping):
    assert mapping.measure("mip_kh2_best").higher_is_better is True
    assert mapping.measure("haq_di").higher_is_better is False
    assert mapping.measure("fev1_fvc").higher_is_better is None
    subtype = mapping.measure("iim_subtype")
    assert subtype.answer("1").code == "iim-subtype-dm"
    assert subtype.answer("42") is None


def test_local_concepts_are_unique_and_defined(mapping):
    concepts = mapping.local_concepts()
    codes = [c.code for c in concepts]
    assert len(codes) == len(set(codes))
    assert all(c.system == "local" and c.display and c.definition for c in concepts)
    assert {"mip-kh2-best", "fivc", "iim-subtype-dm", "rand36-pain"} <= set(codes)


# --- validation errors, with small temporary mapping folders ------------------------------------

STUDY = {
    "version": "0.1",
    "study_id": "tiny",
    "title": "Tiny study",
    "nct_id": "NCT07274267",
    "canonical_base": "https://example.org/fhir",
    "timezone": "Europe/Warsaw",
    "loinc_version": "2.78",
    "terminology": str(TERMINOLOGY),
    "codesystem": {"version": "0.1"},
    "instruments": ["spirometry.yaml"],
}


def _fev1() -> dict:
    return {
        "field": "fev1_l",
        "target": "observation",
        "code": [{"system": "loinc", "code": "20150-9", "display": "FEV1"}],
        "value_type": "quantity",
        "unit": "L",
    }


def _write(folder: Path, measures: dict, study: dict | None = None, **top) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "study.yaml").write_text(yaml.safe_dump(study or STUDY), encoding="utf-8")
    instrument = {"instrument": "spirometry", "effective_field": "spiro_date",
                  "category": "procedure", "measures": measures, **top}
    (folder / "spirometry.yaml").write_text(yaml.safe_dump(instrument, sort_keys=False), "utf-8")
    return folder


def _error(tmp_path: Path, measures: dict, dictionary=None, **top) -> MappingError:
    folder = _write(tmp_path / "tiny", measures, **top)
    with pytest.raises(MappingError) as info:
        load_study_mapping(folder, dictionary)
    return info.value


def test_minimal_mapping_loads(tmp_path, dictionary):
    mapping = load_study_mapping(_write(tmp_path / "tiny", {"fev1": _fev1()}), dictionary)
    assert [m.measure_id for m in mapping.measures] == ["fev1"]
    assert mapping.study.codesystem.url == "https://example.org/fhir/CodeSystem/tiny"


def test_unknown_key(tmp_path):
    err = _error(tmp_path, {"fev1": {**_fev1(), "colour": "red"}})
    assert (err.file, err.key) == ("spirometry.yaml", "measures.fev1.colour")
    assert "unknown key" in str(err)


def test_malformed_loinc_check_digit(tmp_path):
    fev1 = _fev1()
    fev1["code"][0]["code"] = "20150-8"
    err = _error(tmp_path, {"fev1": fev1})
    assert (err.file, err.key) == ("spirometry.yaml", "measures.fev1.code[0].code")
    assert "check digit" in str(err) and "20150-9" in str(err)


def test_unverified_loinc(tmp_path):
    fev1 = _fev1()
    fev1["code"][0]["code"] = "12345-5"  # well-formed, but not in the verified table
    err = _error(tmp_path, {"fev1": fev1})
    assert err.key == "measures.fev1.code[0].code"
    assert "not in the verified table" in str(err)


def test_code_marked_wrong_for_the_concept(tmp_path):
    pct = {**_fev1(), "field": "fev1_pct_pred", "unit": "%",
           "code": [{"system": "loinc", "code": "19926-5", "display": "FEV1/FVC"}]}
    err = _error(tmp_path, {"fev1_pct_predicted": pct})
    assert (err.file, err.key) == ("spirometry.yaml", "measures.fev1_pct_predicted.code[0].code")
    assert "marked wrong" in str(err) and "not FEV1 % predicted" in str(err)


def test_wrong_code_caught_through_an_explicit_concept(tmp_path):
    borg = {**_fev1(), "concept": "borg_cr10", "unit": "{score}",
            "code": [{"system": "loinc", "code": "82289-0", "display": "RPE"}]}
    err = _error(tmp_path, {"my_effort": borg})
    assert "marked wrong for concept 'borg_cr10'" in str(err)


def test_non_ucum_unit(tmp_path):
    err = _error(tmp_path, {"fev1": {**_fev1(), "unit": "litre"}})
    assert (err.file, err.key) == ("spirometry.yaml", "measures.fev1.unit")
    assert "not a UCUM unit" in str(err)


def test_unit_contradicting_the_verified_unit(tmp_path):
    err = _error(tmp_path, {"fev1": {**_fev1(), "unit": "mL"}})
    assert err.key == "measures.fev1.unit"
    assert "contradicts the verified unit ['L'] for loinc 20150-9" in str(err)


def test_unknown_field_against_the_dictionary(tmp_path, dictionary):
    err = _error(tmp_path, {"fev1": {**_fev1(), "field": "fev1_litres"}}, dictionary)
    assert (err.file, err.key) == ("spirometry.yaml", "measures.fev1.field")
    assert "not in the data dictionary" in str(err)


def test_field_from_another_instrument(tmp_path, dictionary):
    err = _error(tmp_path, {"fev1": {**_fev1(), "field": "weight_kg", "unit": "L"}}, dictionary)
    assert "belongs to instrument 'enrollment'" in str(err)


def test_validate_against_dictionary_is_separate(tmp_path, dictionary):
    folder = _write(tmp_path / "tiny", {"fev1": {**_fev1(), "field": "fev1_litres"}})
    mapping = load_study_mapping(folder)  # no dictionary: loads
    with pytest.raises(MappingError, match="fev1_litres"):
        validate_against_dictionary(mapping, dictionary)


def test_component_errors_name_the_nested_key(tmp_path):
    fev1 = _fev1()
    fev1["components"] = {"fvc_part": {**_fev1(), "field": "fvc_l", "unit": "cmH2O",
                                       "code": [{"system": "loinc", "code": "19868-9",
                                                 "display": "FVC"}]}}
    fev1["components"]["fvc_part"].pop("target")
    fev1["components"]["fvc_part"]["concept"] = "fvc"
    err = _error(tmp_path, {"fev1": fev1})
    assert err.key == "measures.fev1.components.fvc_part.unit"


def test_duplicate_yaml_key(tmp_path):
    folder = _write(tmp_path / "tiny", {"fev1": _fev1()})
    text = (folder / "spirometry.yaml").read_text(encoding="utf-8")
    (folder / "spirometry.yaml").write_text(text + "category: exam\n", encoding="utf-8")
    with pytest.raises(MappingError, match="duplicate key 'category'") as info:
        load_study_mapping(folder)
    assert info.value.file == "spirometry.yaml"


def test_field_mapped_twice(tmp_path):
    err = _error(tmp_path, {"fev1": _fev1()}, questionnaire_only=["fev1_l"])
    assert err.key == "questionnaire_only.fev1_l" and "already mapped" in str(err)


def test_quantity_needs_a_unit_and_integers_have_none(tmp_path):
    fev1 = _fev1()
    del fev1["unit"]
    assert _error(tmp_path, {"fev1": fev1}).key == "measures.fev1.unit"
    err = _error(tmp_path, {"fev1": {**_fev1(), "value_type": "integer"}})
    assert "only a quantity has a unit" in str(err)


def test_local_code_needs_a_definition(tmp_path):
    fivc = {**_fev1(), "field": "fivc_l",
            "code": [{"system": "local", "code": "fivc", "display": "FIVC"}]}
    err = _error(tmp_path, {"fivc": fivc})
    assert err.key == "measures.fivc.code[0].definition"


def test_value_map_checked_against_the_choices(tmp_path, dictionary):
    answer = {"system": "local", "code": "yes", "display": "Yes", "definition": "Yes."}
    pred = {"field": "pred_available", "target": "observation", "value_type": "codeable",
            "code": [{"system": "local", "code": "pred", "display": "P", "definition": "P."}],
            "value_map": {"1": answer, "7": {**answer, "code": "seven"}}}
    err = _error(tmp_path, {"pred": pred}, dictionary)
    assert err.key == "measures.pred.value_map.7" and "not a choice" in str(err)


def test_value_type_must_fit_the_field(tmp_path, dictionary):
    err = _error(tmp_path, {"fev1": {**_fev1(), "value_type": "boolean", "unit": None}},
                 dictionary)
    assert err.key == "measures.fev1.value_type"


def test_derived_function_and_parameters_are_checked(tmp_path):
    base = {"code": [{"system": "local", "code": "x", "display": "X", "definition": "X."}],
            "value_type": "quantity", "unit": "%"}
    err = _error(tmp_path, {}, derived={"x": {**base, "function": "no_such", "inputs": {}}})
    assert err.key == "derived.x.function"
    err = _error(tmp_path, {}, derived={"x": {**base, "function": "thickening_fraction",
                                              "inputs": {"insp": "fev1_l"}}})
    assert err.key == "derived.x.inputs.insp" and "has no parameter 'insp'" in str(err)
    err = _error(tmp_path, {}, derived={"x": {**base, "function": "thickening_fraction",
                                              "inputs": {"thickness_insp_mm": "fev1_l"}}})
    assert err.key == "derived.x.inputs" and "needs parameter 'thickness_exp_mm'" in str(err)
    err = _error(tmp_path, {}, derived={"x": {**base, "function": "rand36_scales",
                                              "inputs": {"responses": {"numbered": ["a"]}},
                                              "output": "happiness"}})
    assert err.key == "derived.x.output"


def test_identifier_fields_must_be_excluded(tmp_path, dictionary):
    study = {**STUDY, "instruments": ["enrollment.yaml"]}
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    (folder / "enrollment.yaml").write_text(
        yaml.safe_dump({"instrument": "enrollment", "questionnaire_only": ["mrn"]}), "utf-8"
    )
    with pytest.raises(MappingError, match="identifier") as info:
        load_study_mapping(folder, dictionary)
    assert (info.value.file, info.value.key) == ("enrollment.yaml", "questionnaire_only.mrn")


def test_study_file_errors(tmp_path):
    folder = _write(tmp_path / "tiny", {"fev1": _fev1()}, study={**STUDY, "colour": "red"})
    with pytest.raises(MappingError, match="unknown key") as info:
        load_study_mapping(folder)
    assert (info.value.file, info.value.key) == ("study.yaml", "colour")
    _write(folder, {"fev1": _fev1()}, study={**STUDY, "timezone": "Mars/Olympus"})
    with pytest.raises(MappingError, match="IANA"):
        load_study_mapping(folder)
    _write(folder, {"fev1": _fev1()})
    (folder / "stray.yaml").write_text("instrument: x\n", encoding="utf-8")
    with pytest.raises(MappingError, match="stray.yaml is in the folder but not listed"):
        load_study_mapping(folder)
