"""Observation.status becomes `amended` when a re-sync changes a published value, and stays so."""

import orjson

from imt_etl.fhir.amend import mark_amended, previous_observations


def obs(oid: str, value: float, status: str = "final") -> dict:
    return {"resourceType": "Observation", "id": oid, "status": status,
            "valueQuantity": {"value": value}}


def write(folder, resources):
    folder.mkdir(exist_ok=True)
    (folder / "Observation.ndjson").write_bytes(
        b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in resources))


def test_changed_values_are_amended_new_and_unchanged_stay_final(tmp_path):
    write(tmp_path, [obs("a", 1), obs("b", 2)])
    current = [obs("a", 1), obs("b", 3), obs("c", 4)]
    assert mark_amended(current, previous_observations(tmp_path)) == 1
    assert [o["status"] for o in current] == ["final", "amended", "final"]


def test_amended_stays_amended_on_an_unchanged_rerun(tmp_path):
    write(tmp_path, [obs("b", 3, "amended")])
    current = [obs("b", 3)]
    mark_amended(current, previous_observations(tmp_path))
    assert current[0]["status"] == "amended"


def test_no_previous_output_changes_nothing(tmp_path):
    current = [obs("a", 1)]
    assert mark_amended(current, previous_observations(tmp_path / "none")) == 0
    assert current[0]["status"] == "final"
