"""Acceptance: the primary endpoint recomputed from the raw REDCap strings matches the table."""

from __future__ import annotations

import math

import duckdb
import pandas as pd

from imt_etl.scores import ChangeCategory


def raw_best_mip(project, event: str) -> dict[str, float]:
    """Best KH2 MIP per record at an event, straight from the flat rows' strings."""
    found = {}
    for row in project.rows:
        if row.event == event and row.values.get("mip_kh2_best", "") != "":
            found[row.record] = float(row.values["mip_kh2_best"])
    return found


def test_training_change_in_best_mip_matches_raw_rows(reference_project, imt_tables):
    before = raw_best_mip(reference_project, "baseline_arm_1")
    after = raw_best_mip(reference_project, "month_3_arm_1")
    change = imt_tables["change_from_baseline"].frame
    primary = change[change["is_primary_endpoint"]].set_index("participant")
    assert set(primary["measure_id"]) == {"mip_kh2_best"}
    assert set(primary["period"]) == {"training"}
    records = sorted({r.record for r in reference_project.rows})
    assert sorted(primary.index) == records  # every participant has a row, none twice
    both = [r for r in records if r in before and r in after]
    assert len(both) >= 30  # all but the withdrawn participant(s)
    for record in records:
        row = primary.loc[record]
        if record not in both:
            assert pd.isna(row["change"])
            continue
        expected = after[record] - before[record]
        assert row["from_value"] == before[record]
        assert row["to_value"] == after[record]
        assert row["change"] == expected
        assert math.isclose(row["percent_change"], expected / before[record] * 100)
        pct = expected / before[record] * 100
        wanted = (ChangeCategory.IMPROVED_MAJOR if pct > 20 else ChangeCategory.IMPROVED_MINOR
                  if pct > 0 else ChangeCategory.UNCHANGED if pct == 0
                  else ChangeCategory.DETERIORATED_MINOR if pct >= -20
                  else ChangeCategory.DETERIORATED_MAJOR)
        assert row["change_category"] == wanted.value


def test_primary_endpoint_is_one_duckdb_query_away(imt_parquet, reference_project):
    path = imt_parquet["change_from_baseline"]
    rows = duckdb.sql(
        f"select participant, change from '{path}' where is_primary_endpoint "
        "and change is not null order by participant"
    ).fetchall()
    before = raw_best_mip(reference_project, "baseline_arm_1")
    after = raw_best_mip(reference_project, "month_3_arm_1")
    assert rows == [(r, after[r] - before[r]) for r in sorted(before) if r in after]
    median = duckdb.sql(
        f"select median(change) from '{path}' where measure_id = 'mip_kh2_best' "
        "and period = 'training'").fetchall()[0][0]
    assert median > 0  # the synthetic training effect is +15-35 %
