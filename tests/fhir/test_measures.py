"""The long measurement table: shape, values, conversions, derived measures, determinism."""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pytest

from imt_etl.measures import COLUMNS, measurements
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.studies.imt.design import EVENTS
from tests.fhir.reference_data import flat_rows, reference_mapping, reference_tidy


@pytest.fixture(scope="module")
def tidy():
    return reference_tidy()


EVENT_ORDER = [e.unique_event_name for e in EVENTS]


@pytest.fixture(scope="module")
def table(tidy):
    return measurements(tidy.tables, reference_mapping(), event_order=EVENT_ORDER)


@pytest.fixture(scope="module")
def small(tidy):
    """The tables of the first three records: enough for order and determinism checks."""
    keep = {"001", "002", "003"}
    return {form: df[df.record_id.isin(keep)] for form, df in tidy.tables.items()}


def _one(table: pd.DataFrame, record: str, event: str, measure: str) -> pd.Series:
    hit = table[(table.record_id == record) & (table.redcap_event_name == event)
                & (table.measure_id == measure)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_columns_and_types(table):
    assert list(table.columns) == list(COLUMNS)
    assert str(table["value"].dtype) == "Float64"
    assert str(table["effective_date"].dtype) == "date32[day][pyarrow]"
    assert len(table) > 20000


def test_only_observation_measures_and_components(table):
    mapping = reference_mapping()
    targets = {mapping.measure(m).target for m in table.measure_id.unique()}
    assert targets == {"observation", "component"}
    components = table[table.parent_measure_id.notna()]
    assert set(components.measure_id) >= {"mip_kh2_trial_1", "mwt_spo2_pre", "mwt_hr_post"}
    for mid, parent in components[["measure_id", "parent_measure_id"]].drop_duplicates().values:
        assert mapping.measure(mid).parent == parent
    # no field of the questionnaire-only or excluded kind leaks into the table
    assert not set(table.field.dropna()) & {"sex", "dob", "first_name", "mwt_date", "ck_unit"}


def test_hand_checked_values(table):
    mip = _one(table, "001", "screening_arm_1", "mip_kh2_best")
    assert (mip.value, mip.unit, mip.code) == (61.0, "cm[H2O]", "mip-kh2-best")
    assert mip.category == "exam"
    assert mip.code_system == "https://imt-etl.org/fhir/CodeSystem/imt"
    assert mip.effective_date == date(2024, 8, 12) and pd.isna(mip.effective_datetime)
    # Evans & Whitelaw, male aged 62 (sex and age come from the screening enrolment form)
    pct = _one(table, "001", "screening_arm_1", "mip_kh2_pct_predicted")
    assert pct.value == pytest.approx(61 / (120 - 0.41 * 62) * 100)
    assert pd.isna(pct.field) and pct.unit == "%"
    walk = _one(table, "001", "screening_arm_1", "six_minute_walk_distance")
    assert (walk.value, walk.unit, walk.code_system) == (480.0, "m", "http://loinc.org")
    stopped = _one(table, "001", "screening_arm_1", "mwt_stopped")
    assert (stopped.value, stopped.value_type, stopped.category) == (0.0, "boolean", "activity")
    subtype = _one(table, "001", "screening_arm_1", "iim_subtype")
    assert (subtype.value_code, subtype.value_display) == ("iim-subtype-ibm",
                                                           "Inclusion body myositis")
    assert pd.isna(subtype.value)
    fss = _one(table, "001", "screening_arm_1", "fss_total")
    assert fss.value == pytest.approx((6 + 6 + 3 + 4 + 5 + 4 + 5 + 5 + 4) / 9)
    item = _one(table, "001", "screening_arm_1", "fss_item_1")
    assert (item.value, item.value_type) == (6.0, "integer")


def test_ck_in_ukat_is_converted_to_u_per_l(tidy, table):
    core = tidy.tables["myositis_core_set"]
    ukat = core[core.ck_unit == "2"]
    assert len(ukat) > 0, "the reference data records some CK values in ukat/L"
    for _, row in ukat.head(5).iterrows():
        ck = _one(table, row.record_id, row.redcap_event_name, "creatine_kinase")
        assert ck.value == pytest.approx(row.ck_value * 60)
        assert ck.unit == "U/L"
    per_l = core[(core.ck_unit == "1") & core.ck_value.notna()].iloc[0]
    ck = _one(table, per_l.record_id, per_l.redcap_event_name, "creatine_kinase")
    assert ck.value == pytest.approx(per_l.ck_value)


def test_repeating_rows_keep_their_instance(table):
    diary = table[table.measure_id == "diary_load"]
    assert diary.redcap_repeat_instrument.eq("training_diary").all()
    assert diary.redcap_repeat_instance.notna().all()
    assert diary.effective_date.notna().all()


def test_sorted_and_deterministic(small, table):
    again = measurements(small, reference_mapping(), event_order=EVENT_ORDER)
    pd.testing.assert_frame_equal(table[table.record_id.isin({"001", "002", "003"})], again)
    records = table.record_id.astype(int).tolist()
    assert records == sorted(records)
    order = EVENT_ORDER
    first = table[table.record_id == "001"].drop_duplicates("redcap_event_name")
    events = first.redcap_event_name.tolist()
    assert events == sorted(events, key=order.index)
    one_visit = table[(table.record_id == "001") & (table.redcap_event_name == "baseline_arm_1")]
    ids = one_visit.measure_id.tolist()
    assert ids.index("mip_kh2_best") + 1 == ids.index("mip_kh2_trial_1")


def test_event_order_without_project_order_is_still_deterministic(small):
    shuffled = dict(reversed(list(small.items())))
    a = measurements(small, reference_mapping())
    assert a.equals(measurements(small, reference_mapping()))
    # given the order, the order of the tables does not matter
    c = measurements(shuffled, reference_mapping(), event_order=EVENT_ORDER)
    assert c.equals(measurements(small, reference_mapping(), event_order=EVENT_ORDER))


def test_event_labels_and_weeks(small):
    labels = {e.unique_event_name: e.custom_event_label for e in EVENTS}
    weeks = {e.unique_event_name: e.day_offset / 7 for e in EVENTS}
    out = measurements(small, reference_mapping(), event_labels=labels, event_weeks=weeks)
    events = out.drop_duplicates("redcap_event_name").redcap_event_name.tolist()
    assert events[:3] == EVENT_ORDER[:3]
    base = out[out.redcap_event_name == "month_3_arm_1"]
    assert base.event_label.eq("T3m").all()
    assert base.event_week.eq(90 / 7).all()


def test_derived_input_missing_is_skipped_with_a_warning(reference_project, caplog):
    rows = [r for r in flat_rows(reference_project) if r["record_id"] == "001"]
    for row in rows:
        row.pop("sex", None)
    tidy = tidy_instruments(rows, ProjectMeta.from_definition(reference_project))
    with caplog.at_level(logging.WARNING, logger="imt_etl.measures"):
        out = measurements(tidy.tables, reference_mapping())
    assert "mip_kh2_pct_predicted" not in set(out.measure_id)
    assert "mip_kh2_best" in set(out.measure_id)
    assert any("mip_kh2_pct_predicted" in r.getMessage() and "001" in r.getMessage()
               for r in caplog.records)


def test_empty_tables_give_an_empty_typed_table(tidy):
    empty = {form: df.iloc[0:0] for form, df in tidy.tables.items()}
    out = measurements(empty, reference_mapping())
    assert out.empty and list(out.columns) == list(COLUMNS)
    assert str(out["redcap_arm"].dtype) == "Int64"
