"""Publishing bundles: retries and errors (mocked HTTP), then a real FHIR server on loopback."""

from __future__ import annotations

import logging
import time

import orjson
import pytest
import requests
import responses

from imt_etl.errors import PublishError
from imt_etl.fhir.bundles import deletions_since, write_bundles
from imt_etl.fhir.ndjson import write_ndjson
from imt_etl.fhir.publish import check_base_url, publish_bundles
from tests.fhir import sekmet_server
from tests.fhir.fhir_samples import observation, participant, patient_id, study_resources

BASE = "https://fhir.example.org/r4"
sekmet_url = sekmet_server.sekmet_url  # the fixture: a real FHIR server for this module


def _ok(n: int) -> dict:
    return {"status": 200, "json": {
        "resourceType": "Bundle", "type": "transaction-response",
        "entry": [{"response": {"status": "200 OK"}} for _ in range(n)]}}


def _outcome(text: str, status: int = 400) -> dict:
    return {"status": status, "json": {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "structure", "diagnostics": text,
         "expression": ["Observation.valueQuantity.value"]}]}}


@pytest.fixture()
def bundles(tmp_path):
    """3 bundles of 4, 4 and 3 entries (2 + 1 x 9 resources)."""
    write_bundles(study_resources(records=1, observations=6), tmp_path, bundle_size=4)
    return tmp_path


def _publish(bundle_dir, **kw):
    sleeps: list[float] = []
    kw.setdefault("max_retries", 3)
    report = publish_bundles(bundle_dir, BASE, sleep=sleeps.append, **kw)
    return report, sleeps


@responses.activate
def test_all_bundles_posted_in_order_as_fhir_json(bundles):
    for n in (4, 4, 3):
        responses.add(responses.POST, BASE, **_ok(n))
    seen = []
    report, sleeps = _publish(bundles, progress=lambda *a: seen.append(a))
    assert [o.file for o in report.outcomes] == [
        "bundle-0001.json", "bundle-0002.json", "bundle-0003.json"]
    assert [(o.status, o.entries, o.attempts) for o in report.outcomes] == [
        (200, 4, 1), (200, 4, 1), (200, 3, 1)]
    assert report.entries == 11 and sleeps == []
    sent = [c.request for c in responses.calls]
    assert [r.headers["Content-Type"] for r in sent] == ["application/fhir+json"] * 3
    assert sent[0].body == (bundles / "bundle-0001.json").read_bytes()
    assert seen == [("publish", 0, 3), ("publish", 1, 3), ("publish", 2, 3), ("publish", 3, 3)]


@responses.activate
def test_retries_on_503_and_429_then_succeeds(bundles):
    responses.add(responses.POST, BASE, status=503, body="upstream down")
    responses.add(responses.POST, BASE, status=429, headers={"Retry-After": "7"})
    for n in (4, 4, 3):
        responses.add(responses.POST, BASE, **_ok(n))
    report, sleeps = _publish(bundles, backoff=0.5)
    assert report.outcomes[0].attempts == 3
    assert len(responses.calls) == 5
    assert 0 <= sleeps[0] <= 0.5 and sleeps[1] == 7.0  # backoff, then the server's Retry-After


@responses.activate
def test_connection_errors_give_up_after_max_retries(bundles):
    responses.add(responses.POST, BASE, body=requests.ConnectionError("refused"))
    with pytest.raises(PublishError, match="bundle-0001.json: gave up after 4 attempts") as err:
        _publish(bundles, max_retries=3)
    assert len(responses.calls) == 4
    assert err.value.report.outcomes == []
    assert err.value.exit_code == 5


@responses.activate
def test_rejected_bundle_stops_with_operation_outcome(bundles):
    responses.add(responses.POST, BASE, **_ok(4))
    responses.add(responses.POST, BASE, **_outcome("Decimal value string does not match"))
    with pytest.raises(PublishError) as err:
        _publish(bundles)
    message = str(err.value)
    assert "bundle-0002.json rejected by https://fhir.example.org/r4 (HTTP 400)" in message
    assert "error structure: Decimal value string does not match @ Observation.valueQuantity" \
        in message
    assert len(responses.calls) == 2  # no retry of a 4xx, and bundle 3 never sent
    assert [o.file for o in err.value.report.outcomes] == ["bundle-0001.json"]


@responses.activate
def test_long_outcomes_are_trimmed_and_non_json_errors_shown(bundles):
    issues = [{"severity": "error", "code": "invalid", "diagnostics": "x" * 300}] * 9
    responses.add(responses.POST, BASE, status=422,
                  json={"resourceType": "OperationOutcome", "issue": issues})
    with pytest.raises(PublishError) as err:
        _publish(bundles)
    assert len(str(err.value)) < 800 and str(err.value).endswith("...")
    responses.replace(responses.POST, BASE, status=404, body="<html>Not Found</html>")
    with pytest.raises(PublishError, match=r"HTTP 404\): <html>Not Found</html>"):
        _publish(bundles)


@responses.activate
def test_a_failed_entry_in_a_2xx_answer_is_an_error(bundles):
    answer = _ok(4)
    answer["json"]["entry"][2]["response"] = {"status": "409 Conflict", "outcome": _outcome(
        "version conflict")["json"]}
    responses.add(responses.POST, BASE, **answer)
    with pytest.raises(PublishError, match="bundle-0001.json, entry 2: status '409 Conflict'"
                                           ".*version conflict"):
        _publish(bundles)
    responses.replace(responses.POST, BASE, **_ok(3))
    with pytest.raises(PublishError, match="sent 4 entries, the server answered for 3"):
        _publish(bundles)
    responses.replace(responses.POST, BASE, status=200, json={"resourceType": "Patient"})
    with pytest.raises(PublishError, match="expected a transaction-response"):
        _publish(bundles)


@responses.activate
def test_bundles_are_checked_against_the_manifest_before_sending(bundles):
    path = bundles / "bundle-0003.json"
    path.write_bytes(path.read_bytes().replace(b"final", b"amended"))
    with pytest.raises(PublishError, match="bundle-0003.json does not match its manifest"):
        _publish(bundles)
    assert len(responses.calls) == 0
    (bundles / "manifest.json").unlink()
    with pytest.raises(PublishError, match="cannot read the bundle manifest"):
        _publish(bundles)


def test_plain_http_only_on_loopback_unless_allowed(caplog):
    assert check_base_url("http://127.0.0.1:8080/fhir/") == "http://127.0.0.1:8080/fhir"
    assert check_base_url("http://localhost/fhir") == "http://localhost/fhir"
    assert check_base_url("http://[::1]:9/fhir") == "http://[::1]:9/fhir"
    assert check_base_url("https://fhir.example.org/r4") == "https://fhir.example.org/r4"
    with pytest.raises(PublishError, match="plain http to fhir.example.org"):
        check_base_url("http://fhir.example.org/r4")
    with caplog.at_level(logging.WARNING):
        check_base_url("http://10.0.0.5/fhir", allow_insecure_http=True)
    assert "not encrypted" in caplog.text
    for bad in ("ftp://x/fhir", "fhir.example.org/r4", "https:///fhir"):
        with pytest.raises(PublishError, match="must be http"):
            check_base_url(bad)


# --- against a real FHIR server (sekmet-fhir on loopback) ----------------------------------


def _get(base: str, query: str) -> dict:
    response = requests.get(f"{base}/{query}", timeout=10)
    response.raise_for_status()
    return response.json()


def _count(base: str, query: str) -> int:
    sep = "&" if "?" in query else "?"
    return _get(base, f"{query}{sep}_summary=count")["total"]


def _type_counts(base: str) -> dict[str, int]:
    types = ("CodeSystem", "ResearchStudy", "Patient", "ResearchSubject", "Encounter",
             "Observation")
    return {t: _count(base, t) for t in types}


def test_publish_read_back_and_republish_without_duplicates(sekmet_url, tmp_path):
    study = "pub"
    resources = study_resources(study, records=3, observations=4)
    write_bundles(resources, tmp_path, bundle_size=7)
    report = publish_bundles(tmp_path, sekmet_url)
    assert sum(o.entries for o in report.outcomes) == len(resources) == 23

    pid = patient_id(study, "002")
    found = _get(sekmet_url, f"Observation?subject=Patient/{pid}&_count=100")
    assert found["total"] == 4
    got = sorted((e["resource"] for e in found["entry"]), key=lambda r: r["id"])
    mine = sorted((r for r in resources if r["resourceType"] == "Observation"
                   and r["subject"]["reference"] == f"Patient/{pid}"), key=lambda r: r["id"])
    assert [r["id"] for r in got] == [r["id"] for r in mine]
    assert [r["valueQuantity"] for r in got] == [r["valueQuantity"] for r in mine]

    before = _type_counts(sekmet_url)
    publish_bundles(tmp_path, sekmet_url)
    assert _type_counts(sekmet_url) == before
    assert _count(sekmet_url, f"Observation?subject=Patient/{pid}") == 4


def test_delete_bundle_removes_a_participants_resources(sekmet_url, tmp_path):
    study = "del"
    first = study_resources(study, records=2, observations=3)
    write_ndjson(first, tmp_path / "ndjson")
    write_bundles(first, tmp_path / "bundles")
    publish_bundles(tmp_path / "bundles", sekmet_url)
    gone_pid, kept_pid = patient_id(study, "002"), patient_id(study, "001")
    assert _count(sekmet_url, f"Observation?subject=Patient/{gone_pid}") == 3

    # Record 002 was deleted in REDCap: the next run no longer builds its resources.
    second = [r for r in first if gone_pid not in orjson.dumps(r).decode()]
    deletions = deletions_since(tmp_path / "ndjson", second)
    assert len(deletions) == 6
    manifest = write_bundles(second, tmp_path / "bundles", deletions=deletions)
    assert manifest.deletions == {"Encounter": 1, "Observation": 3, "Patient": 1,
                                  "ResearchSubject": 1}
    publish_bundles(tmp_path / "bundles", sekmet_url)

    assert _count(sekmet_url, f"Observation?subject=Patient/{gone_pid}") == 0
    assert _count(sekmet_url, f"Encounter?subject=Patient/{gone_pid}") == 0
    assert requests.get(f"{sekmet_url}/Patient/{gone_pid}", timeout=10).status_code in (404, 410)
    assert _count(sekmet_url, f"Observation?subject=Patient/{kept_pid}") == 3


def test_invalid_resource_stops_publishing_and_nothing_after_it_lands(sekmet_url, tmp_path):
    study = "bad"
    # 17 resources in bundles of 4: the Encounters are in bundle 3 of 5.
    resources = study_resources(study, records=3, observations=2)
    broken = next(r for r in resources if r["resourceType"] == "Encounter")
    broken["period"]["start"] = "early March"
    manifest = write_bundles(resources, tmp_path, bundle_size=4)
    files = [b.file for b in manifest.bundles]
    with pytest.raises(PublishError) as err:
        publish_bundles(tmp_path, sekmet_url)
    message = str(err.value)
    assert "bundle-0003.json rejected by" in message and "(HTTP 4" in message
    assert "Encounter.period.start" in message and "\n" not in message
    assert [o.file for o in err.value.report.outcomes] == files[:2]

    def urls(file: str) -> list[str]:
        return [e["request"]["url"] for e in orjson.loads((tmp_path / file).read_bytes())["entry"]]

    # The transaction rolled back and later bundles were never sent.
    for url in [u for f in files[2:] for u in urls(f)]:
        assert requests.get(f"{sekmet_url}/{url}", timeout=10).status_code in (404, 410), url
    for url in [u for f in files[:2] for u in urls(f)]:
        assert requests.get(f"{sekmet_url}/{url}", timeout=10).status_code == 200, url


def test_publish_time_for_many_resources(sekmet_url, tmp_path):
    """Measured, printed with -s: N resources in bundles of 500 against sekmet."""
    resources = study_resources("speed", records=0)
    for n in range(20):
        resources += participant("speed", f"{n:03d}", observations=0)
        enc = next(r["id"] for r in resources[-3:] if r["resourceType"] == "Encounter")
        resources += [observation("speed", f"{n:03d}", enc, i) for i in range(22)]
    write_bundles(resources, tmp_path, bundle_size=500)
    start = time.perf_counter()
    report = publish_bundles(tmp_path, sekmet_url)
    seconds = time.perf_counter() - start
    print(f"\npublish: {len(resources)} resources in {len(report.outcomes)} bundles, "
          f"{seconds:.2f} s = {len(resources) / seconds:,.0f}/s")
    assert report.entries == len(resources) == 2 + 20 * 25
    assert _count(sekmet_url, "Observation?code=http://loinc.org|8867-4") >= 20 * 22


def test_publish_reference_project_output(sekmet_url, tmp_path):
    """The real builders' output for one participant of the reference project (~700 resources)."""
    from imt_etl.fhir.study import build_study_resources
    from imt_etl.redcap.tidy import ProjectMeta
    from imt_etl.studies.imt import load_reference_project
    from tests.fhir.reference_data import reference_context, reference_mapping, reference_tidy

    keep = {"001"}
    tables = {f: df[df.record_id.isin(keep)] for f, df in reference_tidy().tables.items()}
    built = build_study_resources(
        tables, reference_mapping(), ProjectMeta.from_definition(load_reference_project()),
        ctx=reference_context(), derived_from=False,  # QuestionnaireResponses not built here
    )
    resources = [r for rs in built.values() for r in rs]
    manifest = write_bundles(resources, tmp_path, bundle_size=500)
    publish_bundles(tmp_path, sekmet_url)
    publish_bundles(tmp_path, sekmet_url)  # again: updates, no duplicates

    for rtype, count in manifest.resources.items():
        if rtype not in ("ResearchStudy", "CodeSystem"):  # other tests publish those types too
            ours = {r["id"] for r in built[rtype]}
            assert count == len(ours)
            found = _get(sekmet_url, f"{rtype}?_id={','.join(sorted(ours)[:50])}&_count=100")
            assert found["total"] == min(50, count), rtype
    pid = next(r["id"] for r in built["Patient"])
    expected = {r["id"] for r in built["Observation"]
                if r["subject"]["reference"] == f"Patient/{pid}"}
    assert expected and _count(sekmet_url, f"Observation?subject=Patient/{pid}") == len(expected)
