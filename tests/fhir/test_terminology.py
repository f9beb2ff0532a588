"""Tests for the verified-code table, LOINC/SNOMED check digits and the UCUM syntax check."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from imt_etl.errors import MappingError
from imt_etl.fhir.terminology import (
    WrongCode,
    load_terminology,
    loinc_check_digit,
    loinc_problem,
    snomed_problem,
    ucum_problem,
    verhoeff_valid,
)

ROOT = Path(__file__).resolve().parents[2]
TERMINOLOGY = ROOT / "mappings" / "terminology"
SOURCE = Path("/work/shared/reference/loinc_verified.csv")


@pytest.fixture(scope="module")
def term():
    return load_terminology(TERMINOLOGY)


@pytest.mark.parametrize(
    ("body", "digit"),
    [("2157", 6), ("20150", 9), ("100759", 0), ("19926", 5), ("8867", 4), ("39156", 5)],
)
def test_loinc_check_digit_known_codes(body, digit):
    assert loinc_check_digit(body) == digit


def test_every_loinc_code_in_the_table_has_a_valid_check_digit(term):
    codes = [r.code for r in term.codes if r.system == "loinc"]
    assert len(codes) > 50
    assert all(loinc_problem(c) is None for c in codes)


@pytest.mark.parametrize(
    ("code", "fragment"),
    [("2157-5", "expected 2157-6"), ("2157", "malformed"), ("21576", "malformed"),
     ("2157-66", "malformed"), ("A157-6", "malformed"), ("", "malformed")],
)
def test_loinc_problems(code, fragment):
    assert fragment in loinc_problem(code)


def test_snomed_verhoeff_and_partition():
    assert snomed_problem("27913002") is None
    assert snomed_problem("22298006") is None
    assert "Verhoeff" in snomed_problem("27913003")
    assert "partition" in snomed_problem("27913022")  # partition 02 is not a concept id
    assert "malformed" in snomed_problem("0123456")
    assert verhoeff_valid("2363") and not verhoeff_valid("2364")


USED_UNITS = [
    "cm[H2O]", "L", "%", "m", "/min", "{score}", "U/L", "ukat/L", "mg/L", "mm/h", "ug/L", "pg/mL",
    "kg", "cm", "kg/m2", "mm", "mm[Hg]", "kcal/d", "{ratio}", "s", "d", "{breaths}", "L/min",
    "L/s", "ng/mL", "mL", "m/(6.min)", "{beats}/min", "10.L",
]


@pytest.mark.parametrize("unit", USED_UNITS)
def test_ucum_accepts_the_units_we_use(unit):
    assert ucum_problem(unit) is None


@pytest.mark.parametrize(
    "unit",
    ["cmH2O", "mmHg", "IU/L", "bpm", "kg/m^2", "", " L", "L ", "beats/min", "cm[H2O", "(L",
     "L/", "{score", "U/l/", "xyz", "cm H2O", "Kg"],
)
def test_ucum_rejects_non_ucum(unit):
    assert ucum_problem(unit) is not None


def test_code_problem_marks_known_wrong_codes(term):
    assert "marked wrong" in term.code_problem("fev1_pct_predicted", "loinc", "19926-5")
    assert "marked wrong" in term.code_problem("mip", "loinc", "81444-2")
    assert "marked wrong" in term.code_problem("borg_cr10", "loinc", "82289-0")
    # VR-36 scores are listed as a range 71973-2..72008-6: 71990-6 (VR-36 MCS) falls inside it.
    assert "marked wrong" in term.code_problem("rand36", "loinc", "71990-6")
    assert "marked wrong" in term.code_problem("rand36_composite", "loinc", "71933-6")


def test_code_problem_accepts_verified_codes_for_their_concept(term):
    assert term.code_problem("creatine_kinase", "loinc", "2157-6") is None
    assert term.code_problem("fvc", "loinc", "19870-5") is None  # alternative is usable
    assert term.code_problem("mip", "snomed", "27913002") is None
    assert term.code_problem("mip", "local", "mip-kh2-best") is None


def test_code_problem_refuses_unverified_low_confidence_and_other_concepts(term):
    unverified = f"12345-{loinc_check_digit('12345')}"
    assert "not in the verified table" in term.code_problem("fev1", "loinc", unverified)
    borg_6mwt = term.code_problem("six_minute_walk_dyspnoea_post", "loinc", "64112-6")
    assert "low-confidence" in borg_6mwt
    assert "low-confidence" in term.code_problem("mep", "snomed", "17202005")
    assert "verified for concept(s) ['fev1']" in term.code_problem("fvc", "loinc", "20150-9")
    assert "check digit" in term.code_problem("fev1", "loinc", "20150-8")


def test_unit_problem(term):
    assert term.unit_problem("creatine_kinase", [("loinc", "2157-6")], "U/L") is None
    assert term.unit_problem("creatine_kinase", [("loinc", "2157-6")], "ukat/L") is None
    assert "contradicts" in term.unit_problem("creatine_kinase", [("loinc", "2157-6")], "mg/L")
    assert "for concept 'mip'" in term.unit_problem("mip", [], "kPa")
    assert term.unit_problem("some_local_concept", [], "kPa") is None


def test_wrong_code_range_and_pattern():
    rule = WrongCode("rand36*", "loinc", "71973-2..72008-6", "VR-36")
    assert rule.matches("rand36_scale", "loinc", "71990-6")
    assert not rule.matches("rand36_scale", "loinc", "72009-4")
    assert not rule.matches("fss", "loinc", "71990-6")
    assert not rule.matches("rand36", "snomed", "71990-6")


def test_bad_table_rows_raise_mapping_errors(tmp_path):
    (tmp_path / "wrong_codes.csv").write_text("concept,system,code,reason\n", encoding="utf-8")
    header = ",".join(
        ["concept", "system", "code", "use", "measure", "display", "ucum", "ucum_also",
         "ucum_note", "evidence", "confidence"]
    )
    verified = tmp_path / "verified_codes.csv"
    verified.write_text(header + "\nfev1,loinc,20150-8,preferred,FEV1,FEV1,L,,,x,high\n", "utf-8")
    with pytest.raises(MappingError, match=r"verified_codes.csv, key 'row 2.code'.*check digit"):
        load_terminology(tmp_path)
    bad_unit = "\nfev1,loinc,20150-9,preferred,FEV1,FEV1,cmH2O,,,x,high\n"
    verified.write_text(header + bad_unit, "utf-8")
    with pytest.raises(MappingError, match=r"row 2.ucum"):
        load_terminology(tmp_path)
    verified.write_text(header + "\nfev1,loinc,20150-9,maybe,FEV1,FEV1,L,,,x,high\n", "utf-8")
    with pytest.raises(MappingError, match=r"row 2.use"):
        load_terminology(tmp_path)


@pytest.mark.skipif(not SOURCE.exists(), reason="shared reference table not present")
def test_derived_table_keeps_the_source_rows_and_evidence():
    with SOURCE.open(newline="", encoding="utf-8") as handle:
        source = list(csv.DictReader(handle))
    with (TERMINOLOGY / "verified_codes.csv").open(newline="", encoding="utf-8") as handle:
        derived = [r for r in csv.DictReader(handle) if r["system"] in ("loinc", "")]
    assert len(derived) == len(source) + 1  # plus the split-out Borg RPE concept row
    by_measure = {(r["measure"], r["code"]): r for r in derived}
    for row in source:
        mine = by_measure[(row["measure"], row["loinc"])]
        assert (mine["evidence"], mine["confidence"]) == (row["evidence"], row["confidence"])
        assert mine["display"] == row["long_common_name"]
