"""Identifiers, record ids and true dates stay out of what a run shares.

Two whole runs over the same 12-participant project, one plain and one with per-participant date
shifting; an impossible date of birth (an identifier field) is planted so that the quality report
has an identifier to redact. Every output file is scanned for the synthetic identifiers; the
scanner is first shown to find them in the raw snapshot, so a clean scan means something.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from imt_etl import pipeline
from imt_etl.privacy import date_shift_days, pseudonym
from imt_etl.validate.report import REDACTED

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import TEST_KEY, emulator_for, fast_settings  # noqa: E402

SHIFT_DAYS = 60
BAD_DOB = "1962-02-30"  # an identifier value that fails validation: quarantined, then redacted
PLANTED = "002"


def file_text(path: Path) -> str:
    """What a reader of `path` could see: every cell and the schema metadata of a parquet file,
    the bytes of anything else."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        meta = json.dumps({k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
                           if k != b"pandas"})
        return table.to_pandas().to_csv(index=False) + meta
    return path.read_bytes().decode("utf-8", errors="replace")


def shared_files(out: Path) -> list[Path]:
    """Every output file except the sync state (the raw snapshot a sync resumes from)."""
    return [p for p in sorted(out.rglob("*"))
            if p.is_file() and "state" not in p.relative_to(out).parts]


@pytest.fixture(scope="module")
def project(reference_project):
    return reference_project


@pytest.fixture(scope="module")
def identifier_values(project) -> dict[str, set[str]]:
    """record id -> its identifier values (4+ characters: long enough to mean something)."""
    names = {f.name for f in project.dictionary.fields if f.identifier}
    values: dict[str, set[str]] = {}
    for row in project.rows:
        for name, value in row.values.items():
            if name in names and len(value) >= 4:
                values.setdefault(row.record, set()).add(value)
    planted = next(r for r in project.rows if r.record == PLANTED and "dob" in r.values)
    values[PLANTED] = (values[PLANTED] - {planted.values["dob"]}) | {BAD_DOB}
    return values


@pytest.fixture(scope="module")
def runs(project, token, run_time, tmp_path_factory):
    """(plain, shifted) output folders of two full runs over the same data."""
    root = tmp_path_factory.mktemp("privacy")
    event = next(r.event for r in project.rows if r.record == PLANTED and "dob" in r.values)
    folders = []
    with emulator_for(project, token) as emulator:
        emulator.store.set_values(PLANTED, {"dob": BAD_DOB}, event=event)
        for name, days in (("plain", 0), ("shifted", SHIFT_DAYS)):
            out = root / name
            summary = pipeline.run(fast_settings(emulator.url, token, out, run_time=run_time,
                                                 date_shift_max_days=days))
            folders.append((out, summary))
    return folders


def test_the_scan_finds_identifiers_where_they_are(runs, identifier_values):
    (plain, _), _ = runs
    raw = file_text(plain / "state" / "raw-records.parquet")
    expected = set().union(*identifier_values.values())
    assert len(expected) > 50
    assert {v for v in expected if v in raw} == expected


def test_no_identifier_value_reaches_any_output(runs, identifier_values):
    values = set().union(*identifier_values.values())
    for out, _ in runs:
        files = shared_files(out)
        assert len(files) > 40
        leaks = {(p.relative_to(out).as_posix(), v) for p in files
                 for text in [file_text(p)] for v in values if v in text}
        assert leaks == set()
        print(f"\n{out.name}: {len(values)} identifier values, {len(files)} files: none found")


def test_the_quality_report_names_the_record_but_redacts_the_value(runs):
    (plain, _), _ = runs
    findings = pd.read_parquet(plain / "quality" / "findings.parquet")
    dob = findings[(findings["record_id"] == PLANTED) & (findings["field"] == "dob")]
    assert list(dob["value"]) == [REDACTED]
    assert "dob" in dob["message"].iloc[0]
    quarantine = pd.read_parquet(plain / "quality" / "quarantine.parquet")
    row = quarantine[(quarantine["record_id"] == PLANTED) & (quarantine["field"] == "dob")]
    raw = json.loads(row["raw_row_json"].iloc[0])
    assert raw["dob"] == REDACTED and raw["first_name"] == REDACTED
    assert raw["height_cm"]  # the rest of the row is kept for the data manager


def test_record_ids_are_replaced_by_pseudonyms(runs, project):
    (plain, _), _ = runs
    records = set(project.record_ids())
    expected = {pseudonym(r, TEST_KEY, "imt") for r in records}
    for path in (plain / "parquet").rglob("*.parquet"):
        frame = pd.read_parquet(path)
        assert "record_id" not in frame.columns, path.name
        if "participant" in frame.columns:
            assert set(frame["participant"].dropna()) <= expected, path.name
    patients = [json.loads(line) for line in (plain / "fhir" / "Patient.ndjson").open()]
    assert {p["identifier"][0]["value"] for p in patients} <= expected
    for path in (plain / "fhir").glob("*.ndjson"):
        text = path.read_text()
        assert not [r for r in records if f'"{r}"' in text], path.name


def _by_participant_days(plain: pd.Series, shifted: pd.Series) -> pd.Series:
    return (pd.to_datetime(shifted) - pd.to_datetime(plain)).dt.days


def test_date_shifting_moves_every_date_and_keeps_intervals(runs, project):
    (plain, plain_summary), (shifted, summary) = runs
    assert summary.stages["date_shifting"]["max_days"] == SHIFT_DAYS
    assert summary.stages["date_shifting"]["dates_shifted"] > 300
    assert "date_shifting" not in plain_summary.stages
    key = ["participant", "event", "instance", "measure_id"]
    a = pd.read_parquet(plain / "parquet" / "observations_long.parquet").set_index(key)
    b = pd.read_parquet(shifted / "parquet" / "observations_long.parquet").set_index(key)
    assert a.index.equals(b.index) and a["value"].equals(b["value"])
    days = _by_participant_days(a["date"], b["date"]).dropna()
    per_participant = days.groupby(level="participant").unique()
    offsets = {pseudonym(r, TEST_KEY, "imt"): date_shift_days(r, TEST_KEY, SHIFT_DAYS, "imt")
               for r in project.record_ids()}
    # One constant offset per participant, the one privacy.date_shift_days gives: intervals kept.
    assert {p: list(v) for p, v in per_participant.items()} == {
        p: [offsets[p]] for p in per_participant.index}
    assert len(set(offsets.values())) > 3 and 0 not in offsets.values()
    print(f"\n{summary.stages['date_shifting']['dates_shifted']} dates shifted, "
          f"{len(days)} long-table dates compared, offsets {sorted(offsets.values())}")
    # Validation saw the dates as entered: the quality findings are the same in both runs.
    pd.testing.assert_frame_equal(pd.read_parquet(plain / "quality" / "findings.parquet"),
                                  pd.read_parquet(shifted / "quality" / "findings.parquet"))


def test_fhir_dates_are_shifted_like_the_tables(runs, project):
    (plain, _), (shifted, _) = runs
    offsets = {pseudonym(r, TEST_KEY, "imt"): date_shift_days(r, TEST_KEY, SHIFT_DAYS, "imt")
               for r in project.record_ids()}

    def dated(folder: Path, kind: str, path: tuple[str, ...]) -> dict[str, tuple[str, str]]:
        found = {}
        for line in (folder / "fhir" / f"{kind}.ndjson").open():
            resource = json.loads(line)
            value = resource
            for step in path:
                value = value.get(step) if isinstance(value, dict) else None
            if value:
                subject = resource["subject"]["reference"].split("/")[1]
                found[resource["id"]] = (subject, value[:10])
        return found

    checked = 0
    for kind, path in (("Observation", ("effectiveDateTime",)),
                       ("QuestionnaireResponse", ("authored",)),
                       ("Encounter", ("period", "start"))):
        before, after = dated(plain, kind, path), dated(shifted, kind, path)
        assert before.keys() == after.keys() and before, kind
        patients = [json.loads(line) for line in (plain / "fhir" / "Patient.ndjson").open()]
        owner = {p["id"]: p["identifier"][0]["value"] for p in patients}
        for rid, (subject, day) in before.items():
            moved = pd.Timestamp(after[rid][1]) - pd.Timestamp(day)
            assert moved.days == offsets[owner[subject]], (kind, rid)
            checked += 1
    assert checked > 1000
    print(f"\nFHIR dates checked against the table offsets: {checked}")
