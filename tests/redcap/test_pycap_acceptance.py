"""PyCap's own export calls work against the emulator for the reference and real REDCap projects."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from redcap import Project, RedcapError

from imt_etl.redcap.emulator import RedcapEmulator, new_token
from imt_etl.redcap.project_xml import read_project_xml
from imt_etl.studies.imt import reference_project_path

FIXTURES = Path(__file__).parents[1] / "data" / "redcap_xml"
PROJECTS = {
    "reference IMT (longitudinal, repeating)": reference_project_path(),
    "classic with DAGs": FIXTURES / "redcapr_dag.xml",
    "longitudinal, three arms": FIXTURES / "redcapr_arm_multiple.xml",
    "repeating instruments": FIXTURES / "redcapr_repeating_sparse.xml",
}


@pytest.fixture(scope="module", params=list(PROJECTS), ids=list(PROJECTS))
def served(request):
    definition = read_project_xml(PROJECTS[request.param])
    token = new_token()
    with RedcapEmulator(definition, token=token) as emulator:
        yield definition, Project(emulator.url, token)


def test_export_records_in_every_format(served):
    definition, project = served
    rows = project.export_records(format_type="json")
    assert len(rows) == len(definition.rows)
    rid = definition.record_id_field
    assert list(dict.fromkeys(r[rid] for r in rows)) == definition.record_ids()
    csv_text = project.export_records(format_type="csv")
    assert csv_text.splitlines()[0].split(",")[0] == rid
    frame = project.export_records(format_type="df")
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(rows)
    eav = project.export_records(format_type="json", record_type="eav")
    non_empty = sum(1 for r in rows for k, v in r.items() if v != "" and k != rid
                    and not k.startswith("redcap_"))
    assert 0 < len(eav) <= non_empty + len(rows)


def test_design_exports(served):
    definition, project = served
    metadata = project.export_metadata(format_type="json")
    assert [m["field_name"] for m in metadata] == [f.name for f in definition.dictionary.fields]
    info = project.export_project_info(format_type="json")
    assert info["is_longitudinal"] == int(definition.is_longitudinal)
    repeating = project.export_repeating_instruments_events(format_type="json")
    assert len(repeating) == len(definition.repeating)
    if definition.is_longitudinal:
        mapping = project.export_instrument_event_mappings(format_type="json")
        assert len(mapping) == len(definition.form_event_mapping)
    else:
        with pytest.raises(RedcapError, match="classic projects"):
            project.export_instrument_event_mappings(format_type="json")


def test_logging_shows_a_deleted_record(served):
    definition, project = served
    victim = definition.record_ids()[-1]
    assert project.delete_records([victim]) == 1
    entries = project.export_logging(format_type="json", log_type="record_delete")
    assert any(victim in (e.get("record", ""), *e.get("action", "").split()) for e in entries)
    remaining = {r[definition.record_id_field] for r in project.export_records()}
    assert victim not in remaining
