"""A record deleted in REDCap, followed through the whole chain: full sync, publish to a real FHIR
server, deletion in REDCap, incremental sync, publish again. Afterwards no parquet table holds the
participant, the bundles carry DELETEs for every resource of theirs, and the server returns none
of them; re-publishing the same bundles leaves every count unchanged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests

from imt_etl import pipeline
from imt_etl.fhir.publish import publish_bundles
from imt_etl.privacy import pseudonym
from tests.fhir import sekmet_server

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import TEST_KEY, emulator_for, fast_settings  # noqa: E402

sekmet_url = sekmet_server.sekmet_url  # a real FHIR server (sekmet-fhir) on loopback
GONE, KEPT = "002", "003"
TYPES = ("Patient", "ResearchSubject", "Encounter", "Observation", "QuestionnaireResponse")


def _total(base: str, kind: str) -> int:
    response = requests.get(f"{base}/{kind}?_summary=count", timeout=30)
    response.raise_for_status()
    return response.json()["total"]


def _type_counts(base: str) -> dict[str, int]:
    return {kind: _total(base, kind) for kind in TYPES}


def _found(base: str, urls: set[str]) -> dict[str, int]:
    """How many of the 'Type/id's the server holds, per type (_id searches of 50 ids)."""
    by_type: dict[str, list[str]] = {}
    for url in sorted(urls):
        kind, rid = url.split("/")
        by_type.setdefault(kind, []).append(rid)
    found = {}
    with requests.Session() as session:
        for kind, ids in by_type.items():
            found[kind] = 0
            for n in range(0, len(ids), 50):
                query = f"{base}/{kind}?_id={','.join(ids[n:n + 50])}&_summary=count"
                response = session.get(query, timeout=30)
                response.raise_for_status()
                found[kind] += response.json()["total"]
    return found


def _per_type(urls: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for url in urls:
        counts[url.split("/")[0]] = counts.get(url.split("/")[0], 0) + 1
    return counts


# R4 ResearchSubject names its patient `individual`; the others `subject`.
REFERENCE = {"ResearchSubject": "individual"}


def _ids(folder: Path, patient: str) -> set[str]:
    """'Type/id' of every NDJSON resource about `patient` (the Patient included)."""
    found = set()
    for path in (folder / "fhir").glob("*.ndjson"):
        for line in path.open():
            resource = json.loads(line)
            field = REFERENCE.get(resource["resourceType"], "subject")
            subject = (resource.get(field) or {}).get("reference")
            if subject == f"Patient/{patient}" or (
                    resource["resourceType"] == "Patient" and resource["id"] == patient):
                found.add(f"{resource['resourceType']}/{resource['id']}")
    return found


@pytest.fixture(scope="module")
def small_project():
    from imt_etl.studies.imt.generator import generate_project

    return generate_project(n_participants=3, seed=7)


def test_a_deleted_record_leaves_every_table_and_the_fhir_server(small_project, token,
                                                                  sekmet_url, tmp_path):
    out = tmp_path / "out"
    with emulator_for(small_project, token) as emulator:
        settings = fast_settings(emulator.url, token, out)
        pipeline.run(settings)
        publish_bundles(out / "fhir" / "bundles", sekmet_url)
        patients = _patient_ids(out)
        gone = next(p for p in patients if _identifier(out, p) == pseudonym(GONE, TEST_KEY, "imt"))
        kept = next(p for p in patients if _identifier(out, p) == pseudonym(KEPT, TEST_KEY, "imt"))
        published, kept_ids = _ids(out, gone), _ids(out, kept)
        assert {url.split("/")[0] for url in published} == set(TYPES)
        # Each participant's resources are found by id, and only theirs (the searches are real:
        # every type holds the other participants' resources too).
        assert _found(sekmet_url, published) == _per_type(published)
        assert _found(sekmet_url, kept_ids) == _per_type(kept_ids)
        assert all(_total(sekmet_url, kind) > n for kind, n in _per_type(published).items())
        long = pd.read_parquet(out / "parquet" / "observations_long.parquet")
        assert pseudonym(GONE, TEST_KEY, "imt") in set(long["participant"])

        emulator.store.delete_records([GONE])
        summary = pipeline.run(settings, incremental=True)
    assert summary.records_deleted == 1

    # Every parquet table, instrument and analysis alike, has lost the participant.
    tables = sorted((out / "parquet").rglob("*.parquet"))
    assert len(tables) > 20
    for path in tables:
        frame = pd.read_parquet(path)
        if "participant" in frame.columns:
            assert pseudonym(GONE, TEST_KEY, "imt") not in set(frame["participant"]), path.name
    assert _ids(out, gone) == set()

    # The bundles DELETE exactly what was published about them.
    deletes = {e["request"]["url"] for p in sorted((out / "fhir" / "bundles").glob("b*.json"))
               for e in json.loads(p.read_text())["entry"] if e["request"]["method"] == "DELETE"}
    assert deletes == published
    print(f"\ndeleted participant: {_per_type(published)} DELETEd; "
          f"{len(tables)} parquet tables checked")

    publish_bundles(out / "fhir" / "bundles", sekmet_url)
    assert _found(sekmet_url, published) == dict.fromkeys(TYPES, 0)
    status = requests.get(f"{sekmet_url}/{next(iter(sorted(published)))}", timeout=30)
    assert status.status_code in (404, 410)
    assert _found(sekmet_url, kept_ids) == _per_type(kept_ids)
    # Re-publishing changes no count (tests/fhir/test_publish.py checks it at more length).
    counts = _type_counts(sekmet_url)
    publish_bundles(out / "fhir" / "bundles", sekmet_url)
    assert _type_counts(sekmet_url) == counts


def _patient_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "fhir" / "Patient.ndjson").open()]


def _identifier(out: Path, patient: str) -> str:
    for line in (out / "fhir" / "Patient.ndjson").open():
        resource = json.loads(line)
        if resource["id"] == patient:
            return resource["identifier"][0]["value"]
    raise AssertionError(f"no Patient/{patient}")
