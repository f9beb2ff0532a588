"""Property test: generated REDCap values go through export -> tidy -> validate -> FHIR, and the
invariants hold whatever the values: each extracted row is valid or quarantined (never both,
never lost), each value of a valid row survives (typed, or as a missing-data code), and every
FHIR resource written is valid R4."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imt_etl.config import OutputConfig
from imt_etl.fhir.validation import validate_r4
from imt_etl.outputs import load_study_config, write_fhir
from imt_etl.redcap.emulator_store import ProjectStore, export_records
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.summary import RunSummary
from imt_etl.validate.run import validate_project

RUN_TIME = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
KEY = b"property-test-pseudonym-key-0001"

# Values a data-entry screen, an import or a broken integration could put in a REDCap cell.
ODD_VALUES = ["", " ", "2025-02-30", "13/05/2025", "1,5", "NaN", "inf", "-0", "00012", " 12 ",
              "1e309", "<b>bold</b>", "<script>alert(1)</script>", "Zażółć gęślą jaźń",
              "測定", "UNK", "NA", "0", "1", "2", "99", "-1", "9999999999"]
VALUES = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(min_value=-10_000, max_value=10_000).map(str),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: f"{x:.3f}"),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)).map(date.isoformat),
    st.text(max_size=40),
)


@pytest.fixture(scope="module")
def small_project():
    from imt_etl.studies.imt.generator import generate_project

    return generate_project(n_participants=1, seed=7)


def data_fields(project, row) -> list[str]:
    """Fields a value may be written to in this row (its forms' non-descriptive fields)."""
    forms = (set(project.forms_for_event(row.event)) if not row.repeat_instrument
             else {row.repeat_instrument})
    return [f.name for f in project.dictionary.fields
            if f.form in forms and f.has_data and not f.is_checkbox
            and f.name != project.record_id_field]


@st.composite
def edits(draw, project):
    """1-8 cells (row, field) set to generated values."""
    chosen = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        row_index = draw(st.integers(min_value=0, max_value=len(project.rows) - 1))
        fields = data_fields(project, project.rows[row_index])
        if fields:
            chosen.append((row_index, draw(st.sampled_from(fields)), draw(VALUES)))
    return chosen


def exported_rows(project) -> list[dict[str, str]]:
    """What a flat JSON export of every record returns (the emulator's own export code)."""
    response = export_records(ProjectStore(project), {"content": "record", "format": "json",
                                                      "type": "flat"})
    return json.loads(response.body)


def row_key(row) -> tuple:
    return (row.record, row.event, row.repeat_instrument or None, row.repeat_instance)


def frame_keys(frame) -> set[tuple]:
    repeat = frame.get("redcap_repeat_instrument")
    keys = set()
    for i in range(len(frame)):
        instrument = None if repeat is None or str(repeat.iloc[i]) in ("", "<NA>", "None") \
            else str(repeat.iloc[i])
        instance = frame["redcap_repeat_instance"].iloc[i] \
            if "redcap_repeat_instance" in frame else None
        keys.add((str(frame["record_id"].iloc[i]), str(frame["redcap_event_name"].iloc[i]),
                  instrument, None if instance is None or str(instance) == "<NA>"
                  else int(instance)))
    return keys


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_generated_values_end_valid_or_quarantined_and_fhir_stays_valid(small_project,
                                                                       tmp_path_factory, data):
    project = copy.deepcopy(small_project)
    changes = data.draw(edits(project))
    for row_index, name, value in changes:
        if value == "":
            project.rows[row_index].values.pop(name, None)
        else:
            project.rows[row_index].values[name] = value
    meta = ProjectMeta.from_definition(project)
    tidy = tidy_instruments(exported_rows(project), meta)
    out = tmp_path_factory.mktemp("prop")
    study = load_study_config("imt", meta)
    result = validate_project(tidy, meta, study.rules)
    summary = RunSummary(project="prop", study="imt", mode="full", started_at="")
    write_fhir(result, meta, study.mapping, OutputConfig(out_dir=out, pseudonym_key=KEY),
               summary, RUN_TIME)

    # 1. Every extracted row is valid or quarantined, exactly once.
    for form, table in tidy.tables.items():
        valid, quarantined = frame_keys(result.valid[form]), frame_keys(result.quarantined[form])
        assert not valid & quarantined, form
        assert len(valid) + len(quarantined) == len(table), form

    # 2. Each edited value of a valid row is still there: typed, or as a missing-data code.
    for row_index, name, value in changes:
        if not value.strip():
            continue
        row = project.rows[row_index]
        form = project.dictionary.field(name).form
        valid = result.valid[form]
        keys = frame_keys(valid)
        if row_key(row) not in keys and (row.record, row.event, None, None) not in keys:
            continue  # quarantined: the quality report says why (checked in 1.)
        found = valid[(valid["record_id"].astype(str) == row.record)
                      & (valid["redcap_event_name"].astype(str) == row.event)]
        if row.repeat_instance is not None and "redcap_repeat_instance" in valid:
            found = found[found["redcap_repeat_instance"] == row.repeat_instance]
        assert len(found) == 1, (name, value)
        kept = found[name].notna().iloc[0] if name in found else False
        missing = f"{name}_missing"
        if not kept and missing in found:
            kept = str(found[missing].iloc[0]) == value.strip()
        assert kept, f"{name}={value!r} vanished from a valid row"

    # 3. Every FHIR resource written is valid R4 (schema, fhirkit and R4B models).
    problems = {}
    count = 0
    for path in sorted(Path(out, "fhir").glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            resource = json.loads(line)
            count += 1
            if issues := validate_r4(resource):
                problems[f"{resource['resourceType']}/{resource['id']}"] = issues
    assert count > 100 and not problems, list(problems.items())[:3]
