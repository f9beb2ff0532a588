"""NDJSON writer: Bulk Data layout, deterministic bytes, stale files, Decimal, bad input."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import orjson
import pytest

from imt_etl.errors import ImtEtlError
from imt_etl.fhir.ndjson import dumps, read_ids, read_ndjson, write_ndjson
from imt_etl.fhir.validation import validate_r4
from tests.fhir.fhir_samples import observation, study_resources


def test_samples_are_valid_r4():
    for resource in study_resources():
        assert validate_r4(resource) == [], resource["resourceType"]


def test_one_file_per_type_one_resource_per_line_sorted_by_id(tmp_path):
    resources = study_resources(records=3, observations=4)
    counts = write_ndjson(resources, tmp_path)
    assert counts == {
        "CodeSystem": 1, "Encounter": 3, "Observation": 12, "Patient": 3,
        "ResearchStudy": 1, "ResearchSubject": 3,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}.ndjson" for t in counts)
    lines = (tmp_path / "Observation.ndjson").read_bytes().split(b"\n")
    assert lines[-1] == b""  # every line, the last included, ends in a newline
    parsed = [orjson.loads(line) for line in lines[:-1]]
    assert [r["id"] for r in parsed] == sorted(r["id"] for r in parsed)
    originals = {r["id"]: r for r in resources}
    assert all(r == originals[r["id"]] for r in parsed)


def test_same_input_in_any_order_gives_identical_bytes(tmp_path):
    resources = study_resources(records=4)
    write_ndjson(resources, tmp_path / "a")
    shuffled = [dict(reversed(list(r.items()))) for r in resources]  # key order differs too
    random.Random(7).shuffle(shuffled)
    write_ndjson(shuffled, tmp_path / "b")
    for path in (tmp_path / "a").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_types_gone_since_last_run_are_removed_other_files_kept(tmp_path):
    write_ndjson(study_resources(), tmp_path)
    (tmp_path / "notes.txt").write_text("keep me")
    counts = write_ndjson([r for r in study_resources() if r["resourceType"] != "Encounter"],
                          tmp_path)
    assert "Encounter" not in counts
    assert not (tmp_path / "Encounter.ndjson").exists()
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_decimal_keeps_its_digits():
    obs = observation("t", "001", "enc", 0)
    obs["valueQuantity"]["value"] = Decimal("250.50")
    assert b'"value":250.50}' in dumps(obs)
    with pytest.raises(TypeError):
        dumps({"resourceType": "Observation", "id": "x", "v": Decimal("NaN")})
    with pytest.raises(TypeError):
        dumps({"resourceType": "Observation", "id": "x", "v": object()})


@pytest.mark.parametrize(
    "bad, message",
    [
        ([{"id": "x"}], "without resourceType"),
        ([{"resourceType": "Patient"}], "without resourceType/id"),
        ([{"resourceType": "Patient", "id": "p"}, {"resourceType": "Patient", "id": "p"}],
         "duplicate resource id Patient/p"),
    ],
)
def test_malformed_input_is_refused_and_nothing_written(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_ndjson(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_same_id_in_two_types_is_fine(tmp_path):
    counts = write_ndjson(
        [{"resourceType": "Patient", "id": "a"}, {"resourceType": "Encounter", "id": "a"}],
        tmp_path,
    )
    assert counts == {"Encounter": 1, "Patient": 1}


def test_read_ids_and_read_back(tmp_path):
    resources = study_resources(records=2)
    write_ndjson(resources, tmp_path)
    ids = read_ids(tmp_path)
    assert ids["Patient"] == {r["id"] for r in resources if r["resourceType"] == "Patient"}
    assert read_ndjson(tmp_path / "CodeSystem.ndjson") == [resources[0]]
    assert read_ids(tmp_path / "missing") == {}
    (tmp_path / "Patient.ndjson").write_bytes(b'{"resourceType": "Patient"}\n')
    with pytest.raises(ImtEtlError, match="Patient.ndjson: not FHIR NDJSON"):
        read_ids(tmp_path)


def test_serialisation_throughput_10k_observations(tmp_path):
    """Measured, printed with -s; the floor only catches an accidental slow path."""
    resources = [observation("t", f"{n:05d}", "enc", n % 7) for n in range(10_000)]
    start = time.perf_counter()
    write_ndjson(resources, tmp_path)
    seconds = time.perf_counter() - start
    rate = len(resources) / seconds
    print(f"\nNDJSON write: 10k Observations in {seconds * 1000:.0f} ms = {rate:,.0f}/s")
    assert rate > 20_000
