"""CLI commands beyond sync: validate, questionnaire and publish, with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imt_etl import cli
from imt_etl.fhir.bundles import write_bundles
from tests.fhir import sekmet_server
from tests.fhir.fhir_samples import study_resources

sekmet_url = sekmet_server.sekmet_url
FIXTURES = Path(__file__).parent / "data" / "redcap_xml"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_exits_4_on_the_demo_errors_and_0_when_warn_only(capsys, demo_out):
    code, out, err = run_cli(capsys, "validate", "--out", str(demo_out))
    assert code == 4 and "12 validation error(s)" in err and "Traceback" not in err
    assert "imt.fev1_le_fvc" in out
    code, out, _ = run_cli(capsys, "validate", "--out", str(demo_out), "--warn-only", "--json")
    assert code == 0 and json.loads(out)["errors"] == 12


def test_validate_without_a_previous_sync_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "validate", "--out", str(tmp_path))
    assert code == 2 and "run a sync first" in err


def test_questionnaire_prints_one_instrument(capsys):
    code, out, _ = run_cli(capsys, "questionnaire", "--form", "spirometry")
    resource = json.loads(out)
    assert code == 0 and resource["resourceType"] == "Questionnaire"
    assert resource["url"].endswith("/Questionnaire/spirometry")


def test_questionnaire_of_another_project_writes_files(capsys, tmp_path):
    project = FIXTURES / "redcapr_repeating_sparse.xml"
    code, _, _ = run_cli(capsys, "questionnaire", "--project", str(project),
                         "--write", str(tmp_path))
    assert code == 0 and sorted(tmp_path.glob("Questionnaire-*.json"))


def test_questionnaire_unknown_form(capsys):
    code, _, err = run_cli(capsys, "questionnaire", "--form", "nope")
    assert code == 2 and "not an instrument" in err


@pytest.fixture()
def bundles_out(tmp_path):
    write_bundles(study_resources(), tmp_path / "fhir" / "bundles", bundle_size=3)
    return tmp_path


def test_publish_to_a_real_fhir_server(capsys, bundles_out, sekmet_url):
    code, out, err = run_cli(capsys, "publish", "--out", str(bundles_out),
                             "--fhir-base", sekmet_url, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["entries"] == len(study_resources())
    assert (bundles_out / "fhir" / "publish-report.json").is_file()


def test_publish_rejected_bundle_exits_5(capsys, tmp_path, sekmet_url):
    resources = study_resources()
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    encounter["period"]["start"] = "early March"  # not a dateTime: the server must refuse it
    write_bundles(resources, tmp_path / "fhir" / "bundles", bundle_size=50)
    code, _, err = run_cli(capsys, "publish", "--out", str(tmp_path), "--fhir-base", sekmet_url)
    assert code == 5 and "rejected" in err and "Traceback" not in err


def test_publish_without_bundles(capsys, tmp_path):
    code, _, err = run_cli(capsys, "publish", "--out", str(tmp_path),
                           "--fhir-base", "http://127.0.0.1:9/fhir")
    assert code == 2 and "no FHIR bundles" in err
