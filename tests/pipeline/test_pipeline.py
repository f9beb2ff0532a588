"""The whole extraction pipeline over real HTTP: full sync, incremental sync, outputs on disk.

The runs are over the 12-participant generated project (small_project, same design as the
shipped one); one full sync is shared: the incremental tests start from copies of its folder.
"""

from __future__ import annotations

import copy
import json
import shutil
from datetime import datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from imt_etl import pipeline
from imt_etl.config import Settings
from imt_etl.outputs import instruments_dir
from imt_etl.privacy import pseudonym
from imt_etl.redcap.emulator import RedcapEmulator, new_token

KEY = b"pipeline-test-key-0123456789"


def participant(record: str) -> str:
    return pseudonym(record, KEY, "imt")


def settings_for(emulator, token, out_dir, **extra) -> Settings:
    return Settings(redcap_url=emulator.url, token=token, out_dir=out_dir, project_name="imt",
                    batch_size=7, pseudonym_key=KEY, **extra)


def read_table(out_dir, form) -> pd.DataFrame:
    return pd.read_parquet(instruments_dir(out_dir) / f"{form}.parquet")


@pytest.fixture(scope="module")
def first_sync(small_project, tmp_path_factory):
    """A full sync of small_project into a folder of its own: (folder, summary). Read it, or
    copy it (copytree keeps the mtimes) as the previous run of an incremental sync."""
    out = tmp_path_factory.mktemp("first-sync")
    loaded = datetime.now() - timedelta(days=30)
    token = new_token()
    with RedcapEmulator(copy.deepcopy(small_project), token=token, load_time=loaded) as emulator:
        summary = pipeline.run(settings_for(emulator, token, out))
    return out, summary


def previous_sync(first_sync, folder):
    """A copy of the shared full sync: what a first run left in `folder`."""
    shutil.copytree(first_sync[0], folder)
    return folder


def test_full_sync_writes_one_typed_table_per_instrument(first_sync, small_project):
    out, summary = first_sync
    forms = small_project.dictionary.forms
    assert sorted(p.stem for p in instruments_dir(out).iterdir()) == sorted(forms)
    assert summary.mode == "full" and summary.records == 12 and summary.batches == 2
    enrollment = read_table(out, "enrollment")
    assert set(enrollment["participant"]) == {participant(f"{i:03d}") for i in range(1, 13)}
    assert "record_id" not in enrollment.columns  # pseudonyms replace record ids
    diary_rows = sum(1 for r in small_project.rows if r.repeat_instrument == "training_diary")
    written = json.loads((out / "run-summary.json").read_text())
    assert written["status"] == "success" and written["mode"] == "full"
    diary = written["instruments"]["training_diary"]
    assert diary["rows_extracted"] == diary_rows == diary["rows_valid"] + diary["rows_quarantined"]
    assert len(read_table(out, "training_diary")) == diary["rows_valid"]
    for output in ("quality/index.html", "report/index.html", "fhir/Observation.ndjson",
                   "parquet/change_from_baseline.parquet", "fhir/bundles/manifest.json"):
        assert output in written["files_written"], output
    assert f"parquet/instruments/{forms[0]}.parquet" in written["files_written"]
    field = pq.read_schema(instruments_dir(out) / "spirometry.parquet").field(
        "fev1_l"
    )
    assert field.metadata and b"description" in field.metadata


def test_incremental_sync_picks_up_modified_and_deleted_records(first_sync, live_small,
                                                                tmp_path):
    emulator, token = live_small
    out = previous_sync(first_sync, tmp_path / "out")
    settings = settings_for(emulator, token, out)
    emulator.store.set_values("002", {"mip_kh2_1": "99", "mip_kh2_best": "99"},
                              event="baseline_arm_1")
    emulator.store.delete_records(["005"])
    summary = pipeline.run(settings, incremental=True)
    assert summary.mode == "incremental"
    assert summary.records_changed == 1 and summary.records_deleted == 1 and summary.records == 11
    strength = read_table(out, "respiratory_muscle_strength")
    row = strength[(strength.participant == participant("002"))
                   & (strength.event == "baseline_arm_1")]
    assert row["mip_kh2_best"].tolist() == [99]
    assert summary.stages["fhir"]["observations_amended"] >= 1
    assert summary.stages["fhir"]["deletions"] > 0  # record 005's resources are DELETEd
    bundles = [json.loads(p.read_text()) for p in (out / "fhir" / "bundles").glob("b*.json")]
    deletes = [e for b in bundles for e in b["entry"] if e["request"]["method"] == "DELETE"]
    assert any(e["request"]["url"].startswith("Patient/") for e in deletes)
    for form in ("enrollment", "training_diary", "sf36"):
        assert participant("005") not in set(read_table(out, form)["participant"])


def test_incremental_result_equals_a_fresh_full_sync(first_sync, live_small, tmp_path):
    emulator, token = live_small
    incremental_out, full_out = previous_sync(first_sync, tmp_path / "inc"), tmp_path / "full"
    emulator.store.set_values("010", {"fss_1": "6"}, event="month_3_arm_1")
    emulator.store.delete_records(["011"])
    pipeline.run(settings_for(emulator, token, incremental_out), incremental=True)
    pipeline.run(settings_for(emulator, token, full_out))
    outputs = sorted((full_out / "parquet").rglob("*.parquet"))
    assert len(outputs) > 13
    for path in outputs:
        got = pd.read_parquet(incremental_out / path.relative_to(full_out))
        pd.testing.assert_frame_equal(got, pd.read_parquet(path), obj=str(path))
    for ndjson in sorted((full_out / "fhir").glob("*.ndjson")):
        got = (incremental_out / "fhir" / ndjson.name).read_bytes()
        if ndjson.name != "Observation.ndjson":
            assert got == ndjson.read_bytes(), ndjson.name
            continue
        # The incremental folder knows what it published before: the changed value is amended.
        fresh = [json.loads(line) for line in ndjson.read_bytes().splitlines()]
        synced = [json.loads(line) for line in got.splitlines()]
        assert [o["status"] for o in fresh] == ["final"] * len(fresh)
        assert sum(o["status"] == "amended" for o in synced) >= 1
        assert [{**o, "status": "final"} for o in synced] == fresh


def test_incremental_without_previous_state_falls_back_to_full(live_small, tmp_path):
    emulator, token = live_small
    summary = pipeline.run(settings_for(emulator, token, tmp_path), incremental=True)
    assert summary.mode == "full" and summary.records == 12
