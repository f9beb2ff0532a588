"""The study report: page, figures, summary numbers, link to the quality report, empty project."""

from __future__ import annotations

import pandas as pd
import pytest

from imt_etl.config import MAPPINGS_ROOT
from imt_etl.report.study import change_summary, write_study_report
from imt_etl.tables.build import analysis_tables
from imt_etl.tables.config import load_analysis_config

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def built(reference_project):
    from pathlib import Path

    from imt_etl.fhir.mappings import load_study_mapping
    from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments

    meta = ProjectMeta.from_definition(reference_project)
    rows = [{"record_id": r.record, "redcap_event_name": r.event,
             "redcap_repeat_instrument": r.repeat_instrument,
             "redcap_repeat_instance": "" if r.repeat_instance is None
             else str(r.repeat_instance), **r.values} for r in reference_project.rows]
    mapping = load_study_mapping(Path(__file__).parents[2] / "mappings" / "imt", meta.dictionary)
    return meta, mapping, analysis_tables(tidy_instruments(rows, meta).tables, meta, mapping)


def test_report_page_and_figures(built, tmp_path):
    _, _, tables = built
    page = write_study_report(tables, imt_config(), tmp_path / "report", title="IMT")
    text = page.read_text(encoding="utf-8")
    assert 'href="../quality/index.html"' in text
    for png in ("enrolment.png", "mip_over_time.png", "change.png", "adherence.png"):
        assert f'src="{png}"' in text
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "33 participants" in text


def test_change_summary_numbers(built):
    _, _, tables = built
    change = tables["change_from_baseline"].frame
    summary = change_summary(change).set_index(["measure_id", "period"])
    row = summary.loc[("mip_kh2_best", "training")]
    values = change[(change["measure_id"] == "mip_kh2_best") & (change["period"] == "training")]
    values = values["change"].dropna().astype(float)
    assert row["n"] == len(values)
    assert row["median"] == pytest.approx(values.median())
    assert (row["q1"], row["q3"]) == pytest.approx((values.quantile(0.25), values.quantile(0.75)))
    assert row["unit"] == "cm[H2O]"


def test_report_on_an_empty_project(built, tmp_path):
    meta, mapping, _ = built
    from imt_etl.redcap.tidy import tidy_instruments

    empty = analysis_tables(tidy_instruments([], meta).tables, meta, mapping)
    page = write_study_report(empty, imt_config(), tmp_path)
    assert "0 participants" in page.read_text(encoding="utf-8")
    assert change_summary(empty["change_from_baseline"].frame).empty
    assert isinstance(empty["visits_wide"].frame, pd.DataFrame)


def imt_config():
    """The reference study's analysis settings (mappings/imt/analysis.yaml)."""
    return load_analysis_config(MAPPINGS_ROOT / "imt" / "analysis.yaml")
