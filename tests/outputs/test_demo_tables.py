"""The demo's parquet tables open in DuckDB and pandas without options; the README query works."""

import duckdb
import pandas as pd


def test_every_table_reads_with_duckdb_and_pandas(demo_out):
    paths = sorted((demo_out / "parquet").rglob("*.parquet"))
    assert len(paths) >= 13 + 8  # one per instrument plus the analysis tables
    for path in paths:
        frame = pd.read_parquet(path)
        count = duckdb.sql(f"select count(*) from '{path}'").fetchall()[0][0]
        assert count == len(frame), path


def test_readme_primary_endpoint_query(demo_out):
    table = demo_out / "parquet" / "change_from_baseline.parquet"
    rows = duckdb.sql(
        "select participant, from_value, to_value, change, percent_change, change_category "
        f"from '{table}' where is_primary_endpoint"
    ).df()
    assert 25 <= len(rows) <= 33 and rows["participant"].is_unique
    assert (rows["change"] > 0).mean() > 0.8  # MIP rises with training in the reference data


def test_quality_report_and_study_report_exist(demo_out):
    assert "quarantine" in (demo_out / "quality" / "index.html").read_text().lower()
    report = (demo_out / "report" / "index.html").read_text()
    assert "../quality/index.html" in report and ".png" in report
