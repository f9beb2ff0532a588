"""Transaction bundle writer: order, sizes, fullUrl, deletions, manifest, validity, re-runs."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from imt_etl.fhir.bundles import (
    TYPE_ORDER,
    deletions_since,
    full_url,
    plan_entries,
    read_manifest,
    write_bundles,
)
from imt_etl.fhir.ids import resource_id
from imt_etl.fhir.ndjson import write_ndjson
from imt_etl.fhir.validation import validate_r4
from tests.fhir.fhir_samples import patient_id, study_resources


def _bundles(directory):
    return [orjson.loads(p.read_bytes()) for p in sorted(directory.glob("bundle-*.json"))]


def _entries(directory):
    return [e for b in _bundles(directory) for e in b["entry"]]


def test_puts_in_dependency_order_then_by_id(tmp_path):
    resources = study_resources(records=3, observations=2)
    write_bundles(resources, tmp_path, bundle_size=4)
    urls = [e["request"]["url"] for e in _entries(tmp_path)]
    assert len(urls) == len(resources)
    types = [u.split("/")[0] for u in urls]
    ranks = [TYPE_ORDER.index(t) for t in types]
    assert ranks == sorted(ranks)
    for rtype in set(types):
        ids = [u.split("/")[1] for u in urls if u.startswith(rtype + "/")]
        assert ids == sorted(ids)
    assert all(e["request"]["method"] == "PUT" for e in _entries(tmp_path))


def test_every_reference_points_backwards(tmp_path):
    """A server checking references finds each target in this or an earlier bundle."""
    write_bundles(study_resources(records=3), tmp_path, bundle_size=2)
    seen: set[str] = set()
    for entry in _entries(tmp_path):
        for ref in _references(entry["resource"]):
            assert ref in seen, f"{entry['request']['url']} references {ref} before it is sent"
        seen.add(entry["request"]["url"])


def _references(node):
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def test_bundle_size_files_and_manifest(tmp_path):
    resources = study_resources(records=2, observations=3)  # 2 + 2 * 6 = 14 resources
    manifest = write_bundles(resources, tmp_path, bundle_size=5)
    assert [b.file for b in manifest.bundles] == [
        "bundle-0001.json", "bundle-0002.json", "bundle-0003.json"]
    assert [b.entries for b in manifest.bundles] == [5, 5, 4]
    assert [len(b["entry"]) for b in _bundles(tmp_path)] == [5, 5, 4]
    assert manifest.entries == 14
    assert manifest.resources == {"CodeSystem": 1, "Encounter": 2, "Observation": 6,
                                  "Patient": 2, "ResearchStudy": 1, "ResearchSubject": 2}
    for info in manifest.bundles:
        assert info.sha256 == hashlib.sha256((tmp_path / info.file).read_bytes()).hexdigest()
    assert read_manifest(tmp_path) == manifest
    doc = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert doc["entries"] == 14 and doc["bundle_size"] == 5


def test_bundles_are_valid_r4_transactions(tmp_path):
    resources = study_resources(records=2)
    gone = [("Observation", resource_id("Observation", "old")), ("Patient", "old-patient")]
    write_bundles(resources, tmp_path, bundle_size=100, deletions=gone)
    (bundle,) = _bundles(tmp_path)
    assert bundle["type"] == "transaction"
    assert validate_r4(bundle) == []
    full_urls = [e["fullUrl"] for e in bundle["entry"] if "fullUrl" in e]
    assert len(full_urls) == len(set(full_urls)) == len(resources)


def test_full_url():
    rid = resource_id("Patient", "t", "001")
    assert full_url("Patient", rid) == f"urn:uuid:{rid}"
    assert full_url("Patient", rid, "https://fhir.example.org/r4/") == (
        f"https://fhir.example.org/r4/Patient/{rid}")
    # A non-uuid id gets a stable uuid of its own, different per type.
    cs = full_url("CodeSystem", "imt-local-codes")
    assert cs.startswith("urn:uuid:") and cs == full_url("CodeSystem", "imt-local-codes")
    assert cs != full_url("ValueSet", "imt-local-codes")
    assert full_url("Patient", rid.upper()) != f"urn:uuid:{rid.upper()}"  # only canonical form


def test_deletes_come_last_referrers_first(tmp_path):
    gone = [("Patient", "p-b"), ("Observation", "o-2"), ("Patient", "p-a"),
            ("Observation", "o-1"), ("Encounter", "e-1"), ("Observation", "o-1")]
    entries = plan_entries(study_resources(records=1), gone)
    deletes = [e for e in entries if e["request"]["method"] == "DELETE"]
    assert entries[-len(deletes):] == deletes
    assert [e["request"]["url"] for e in deletes] == [
        "Observation/o-1", "Observation/o-2", "Encounter/e-1", "Patient/p-a", "Patient/p-b"]
    assert all(set(e) == {"request"} for e in deletes)


def test_write_and_delete_same_resource_is_a_bug():
    resources = study_resources(records=1)
    with pytest.raises(ValueError, match="both write and delete Patient/"):
        plan_entries(resources, [("Patient", patient_id("t", "001"))])


def test_manifest_counts_puts_and_deletes(tmp_path):
    gone = [("Observation", f"o-{i}") for i in range(3)]
    manifest = write_bundles(study_resources(records=1, observations=2), tmp_path,
                             bundle_size=4, deletions=gone)
    assert manifest.deletions == {"Observation": 3}
    assert [b.puts for b in manifest.bundles] == [4, 3, 0]
    assert [b.deletes for b in manifest.bundles] == [0, 1, 2]


def test_rerun_is_byte_identical_and_removes_stale_bundles(tmp_path):
    first = write_bundles(study_resources(records=4), tmp_path, bundle_size=3)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = write_bundles(list(reversed(study_resources(records=4))), tmp_path, bundle_size=3)
    assert again == first
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    smaller = write_bundles(study_resources(records=1), tmp_path, bundle_size=3)
    assert sorted(p.name for p in tmp_path.glob("bundle-*.json")) == [
        b.file for b in smaller.bundles]
    assert smaller.sha256 != first.sha256


def test_bad_bundle_size(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        write_bundles(study_resources(), tmp_path, bundle_size=0)


def test_empty_run_writes_an_empty_manifest(tmp_path):
    manifest = write_bundles([], tmp_path / "b")
    assert manifest.bundles == () and manifest.entries == 0
    assert read_manifest(tmp_path / "b") == manifest


def test_deletions_since_previous_ndjson(tmp_path):
    previous = study_resources(records=3, observations=2)
    write_ndjson(previous, tmp_path)
    # Record 002 was deleted in REDCap; record 001 lost one Observation; 004 is new.
    current = [
        r for r in study_resources(records=4, observations=2)
        if patient_id("t", "002") not in orjson.dumps(r).decode()
    ]
    dropped_obs = next(r for r in current if r["resourceType"] == "Observation"
                       and r["subject"]["reference"].endswith(patient_id("t", "001")))
    current.remove(dropped_obs)
    gone = deletions_since(tmp_path, current)
    removed_002 = [
        (r["resourceType"], r["id"]) for r in previous
        if r["resourceType"] != "CodeSystem"
        and patient_id("t", "002") in orjson.dumps(r).decode()
    ]
    expected = {("Observation", dropped_obs["id"]), *removed_002}
    assert set(gone) == expected
    assert len(gone) == len(expected) == 6  # Patient, ResearchSubject, Encounter, 2 + 1 obs
    assert gone == sorted(gone, key=lambda d: (TYPE_ORDER.index(d[0]), d[1]))
    assert deletions_since(tmp_path / "never-written", current) == []
    assert deletions_since(tmp_path, previous) == []
