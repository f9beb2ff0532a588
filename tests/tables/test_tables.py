"""Every table: DuckDB and pandas read it, stable schema, keys, identifiers, codebook, scores."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from imt_etl.redcap.tidy import tidy_instruments
from imt_etl.scores import bland_altman, percent_predicted_mip, rand36_scales
from imt_etl.tables.build import analysis_tables, build_analysis_tables

EXPECTED = {
    "observations_long", "visits_wide", "change_from_baseline", "training_adherence",
    "training_deviations", "scores", "mip_device_agreement", "codebook",
}


def schema_of(path) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in pq.read_schema(path)]


def test_all_tables_are_written(imt_parquet, imt_meta):
    assert EXPECTED <= set(imt_parquet)
    assert {f"instruments/{form}" for form in imt_meta.dictionary.forms} <= set(imt_parquet)


def test_every_table_reads_with_duckdb_and_pandas_without_options(imt_parquet, imt_tables):
    for name, path in imt_parquet.items():
        frame = pd.read_parquet(path)
        assert list(frame.columns) == list(imt_tables[name].frame.columns), name
        count = duckdb.sql(f"select count(*) from '{path}'").fetchall()[0][0]
        assert count == len(frame) == len(imt_tables[name].frame), name


def test_dates_are_parquet_dates_and_descriptions_are_in_the_schema(imt_parquet):
    schema = pq.read_schema(imt_parquet["change_from_baseline"])
    assert str(schema.field("from_date").type) == "date32[day]"
    assert schema.field("change").metadata[b"description"].startswith(b"Absolute change")
    wide = pq.read_schema(imt_parquet["visits_wide"])
    assert wide.field("mip_kh2_best").metadata[b"unit"] == b"cm[H2O]"
    assert wide.metadata[b"imt_etl.table"] == b"visits_wide"


def test_schema_is_stable_on_a_second_run_and_on_an_empty_project(
        imt_parquet, imt_tidy, imt_meta, imt_mapping, tmp_path):
    again = build_analysis_tables(imt_tidy.tables, imt_meta, imt_mapping, out_dir=tmp_path / "a")
    empty_tables = tidy_instruments([], imt_meta).tables
    empty = build_analysis_tables(empty_tables, imt_meta, imt_mapping, out_dir=tmp_path / "e")
    assert set(again) == set(empty) == set(imt_parquet)
    for name, path in imt_parquet.items():
        assert schema_of(again[name]) == schema_of(path), name
        assert schema_of(empty[name]) == schema_of(path), name
        assert again[name].read_bytes() == path.read_bytes(), name  # deterministic output
    empty_change = empty["change_from_baseline"]
    assert duckdb.sql(f"select count(*) from '{empty_change}'").fetchall() == [(0,)]


def test_pseudonyms_replace_record_ids_and_identifiers_are_dropped(imt_tidy, imt_meta,
                                                                   imt_mapping):
    built = analysis_tables(imt_tidy.tables, imt_meta, imt_mapping,
                            pseudonymise=lambda r: f"P-{r}")
    enrollment = built["instruments/enrollment"].frame
    for column in ("first_name", "last_name", "mrn", "phone", "email", "dob", "record_id",
                   "dob_missing"):
        assert column not in enrollment.columns
    for table in built.values():
        if "participant" in table.frame.columns and len(table.frame):
            assert table.frame["participant"].str.startswith("P-").all(), table.name
    names = set(imt_tidy.tables["enrollment"]["last_name"])
    codebook = built["codebook"].frame
    assert not set(codebook.astype(str).to_numpy().ravel()) & names


def test_instrument_tables_have_the_composite_key(imt_tables, imt_tidy):
    diary = imt_tables["instruments/training_diary"].frame
    assert list(diary.columns[:5]) == ["participant", "arm", "event", "visit", "instance"]
    assert not diary.duplicated(["participant", "event", "instance"]).any()
    assert len(diary) == len(imt_tidy.tables["training_diary"])
    assert diary["visit"].iloc[0] == "Training period (training)"


def test_long_agrees_with_wide_and_the_source(imt_tables, imt_tidy):
    long = imt_tables["observations_long"].frame
    wide = imt_tables["visits_wide"].frame
    assert len(wide) == len(imt_tidy.tables["respiratory_muscle_strength"])
    mip = long[long["measure_id"] == "mip_kh2_best"].set_index(["participant", "event"])["value"]
    pivot = wide.set_index(["participant", "event"])["mip_kh2_best"].dropna()
    pd.testing.assert_series_equal(pivot.sort_index(), mip.sort_index(), check_names=False)
    screening = wide[wide["event"] == "screening_arm_1"]
    assert set(screening["week"]) == {-12.9}


def test_change_rows_cover_every_participant_measure_and_period(imt_tables):
    change = imt_tables["change_from_baseline"].frame
    n = change["participant"].nunique() * change["measure_id"].nunique() * 4
    assert len(change) == n
    assert set(change["period"]) == {"run_in", "training", "retention_6m", "retention_12m"}
    fss = change[(change["measure_id"] == "fss_total") & change["change"].notna()]
    worse = fss[fss["change"] > 0]  # FSS: higher is worse
    assert worse["change_category"].str.startswith("deteriorated").all()


def test_scores_match_the_score_functions(imt_tables, imt_tidy):
    scores = imt_tables["scores"].frame
    row = scores[(scores["participant"] == "001") & (scores["event"] == "baseline_arm_1")].iloc[0]
    sf36 = imt_tidy.tables["sf36"]
    items = sf36[(sf36["record_id"] == "001") & (sf36["redcap_event_name"] == "baseline_arm_1")]
    expected = rand36_scales({i: int(items.iloc[0][f"sf36_{i:02d}"]) for i in range(1, 37)})
    for scale, value in expected.items():
        assert row[f"rand36_{scale}"] == pytest.approx(value)
    enrollment = imt_tidy.tables["enrollment"].set_index("record_id").loc["001"]
    age = (row["date"] - enrollment["dob"]).days / 365.25
    sex = {"1": "female", "2": "male"}[enrollment["sex"]]
    assert row["mip_kh2_pct_predicted"] == pytest.approx(
        percent_predicted_mip(row["mip_kh2_best"], sex, age))
    assert row["tis_provisional"] is pd.NA or pd.isna(row["tis_total"])
    month3 = scores[scores["event"] == "month_3_arm_1"]
    assert month3["tis_provisional"].all() and month3["tis3_total"].notna().all()
    agreement = imt_tables["mip_device_agreement"].frame.set_index("event")
    base = scores[scores["event"] == "baseline_arm_1"]
    ba = bland_altman(list(base["mip_kh2_best"]), list(base["mip_rpc_best"]))
    assert agreement.loc["baseline_arm_1", "bias"] == pytest.approx(ba.bias)
    assert agreement.loc["baseline_arm_1", "n"] == ba.n


def test_codebook_describes_every_column(imt_tables):
    book = imt_tables["codebook"].frame
    for name, table in imt_tables.items():
        described = book[book["table"] == name]
        assert list(described["column"]) == list(table.frame.columns), name
    assert book["label"].notna().all()
    mip = book[(book["table"] == "visits_wide") & (book["column"] == "mip_kh2_best")].iloc[0]
    assert (mip["unit"], mip["code_system"], mip["code"]) == ("cm[H2O]", "local", "mip-kh2-best")
    sex = book[(book["table"] == "instruments/enrollment") & (book["column"] == "sex")].iloc[0]
    assert sex["allowed_values"] == "1, Female | 2, Male"
    assert sex["source_field"] == "sex"
