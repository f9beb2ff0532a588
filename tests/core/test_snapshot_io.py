"""Raw snapshot merging for incremental syncs, atomic writes and secret scrubbing."""

import json
import logging

from imt_etl.io import write_json_atomic
from imt_etl.redact import RedactingFilter, scrub
from imt_etl.redcap.snapshot import RawSnapshot


def rows(*specs):
    return [{"record_id": rid, "v": v} for rid, v in specs]


def test_merge_replaces_changed_adds_new_and_drops_deleted():
    snap = RawSnapshot.from_rows("record_id", rows(("1", "a"), ("1", "b"), ("2", "c"), ("3", "d")))
    merged = snap.merged(rows(("1", "z"), ("4", "n")), changed_ids=["1", "4", "5"],
                         deleted_ids=["3"])
    assert merged.rows_by_record == {
        "1": [{"record_id": "1", "v": "z"}],
        "2": [{"record_id": "2", "v": "c"}],
        "4": [{"record_id": "4", "v": "n"}],
    }
    assert snap.record_ids == ["1", "2", "3"]  # the original is untouched


def test_snapshot_round_trips_through_parquet(tmp_path):
    snap = RawSnapshot.from_rows("record_id", rows(("001", "x"), ("002", "")))
    snap.save(tmp_path)
    loaded = RawSnapshot.load(tmp_path, "record_id")
    assert loaded.rows_by_record == snap.rows_by_record
    assert RawSnapshot.load(tmp_path / "none", "record_id") is None


def test_atomic_json_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "x.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]})
    write_json_atomic(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_redacting_filter_scrubs_messages_and_args(caplog):
    secret = "A" * 32
    logger = logging.getLogger("test.redact")
    caplog.handler.addFilter(RedactingFilter([secret]))
    logger.warning("token=%s in url", secret)
    assert secret not in caplog.text and "[REDACTED]" in caplog.text
    assert scrub(f"x{secret}y", [secret]) == "x[REDACTED]y"


def test_stale_temp_files_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    from imt_etl.io import remove_stale_temp_files

    (tmp_path / "fhir").mkdir()
    stale = [tmp_path / ".Patient.ndjson.k2x_9abc.tmp",
             tmp_path / "fhir" / ".a.parquet.abcdefgh.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "fhir" / "Patient.ndjson",
            tmp_path / ".x.toolongname.tmp"]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(stale)
    assert [p for p in stale if p.exists()] == [] and all(p.exists() for p in kept)
    assert remove_stale_temp_files(tmp_path / "missing") == []
