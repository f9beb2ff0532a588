"""Study rules on a project too small to have every kind of data (no withdrawal, few rows)."""

import json

import pytest

from imt_etl.redcap.emulator_store import ProjectStore, handle_request
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.studies.imt.generator import generate_project
from imt_etl.validate import study_rules, validate_project

TOKEN = "0" * 32


@pytest.mark.parametrize("participants", [1, 3])
def test_rules_with_nothing_to_compare_against_do_not_crash(participants):
    project = generate_project(n_participants=participants, seed=2024, with_errors=False)
    store = ProjectStore(project)
    params = {"token": TOKEN, "content": "record", "format": "json"}
    rows = json.loads(handle_request(store, params, TOKEN).body)
    meta = ProjectMeta.from_definition(project)
    result = validate_project(tidy_instruments(rows, meta), meta, study_rules("imt"))
    assert not result.has_errors
    for form, counts in result.counts.items():
        assert counts["extracted"] == counts["valid"] + counts["quarantined"], form
