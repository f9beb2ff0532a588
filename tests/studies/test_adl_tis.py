"""Study-level Total Improvement Score, hand-worked, through the ADL configuration.

Source of the formula: 2016 ACR/EULAR myositis response criteria (Aggarwal R, et al. Ann Rheum Dis
2017;76:792-801), per-measure points as in terminology.md rule 6 (absolute % change of the
instrument range; enzyme range = 15 x ULN for CK); the three-measure version (MMT-8, HAQ, CK; max
50; minimal >= 10, moderate >= 20, major >= 30) from the ADL study, ISRCTN35925199 (Arthritis Res
Ther 2021;23:173). See imt_etl/scores/tis.py for the sources in full.
"""

from __future__ import annotations

import pandas as pd
import pytest

from imt_etl.config import MAPPINGS_ROOT
from imt_etl.fhir.mappings import load_study_mapping
from imt_etl.studies.adl.design import load_dictionary
from imt_etl.tables.config import load_analysis_config
from imt_etl.tables.scores import scores_tables

ADL = MAPPINGS_ROOT / "adl"


@pytest.fixture(scope="module")
def mapping():
    return load_study_mapping(ADL, load_dictionary())


@pytest.fixture(scope="module")
def config():
    return load_analysis_config(ADL / "analysis.yaml")


def _tables(arm: int, visits: dict[int, dict[str, float]]) -> dict[str, pd.DataFrame]:
    """One participant of `arm`; week -> core set values, one table per instrument."""
    forms = {"manual_muscle_testing": ("mmt_date", "mmt8_total"), "haq": ("haq_date", "haq_di"),
             "laboratory": ("lab_date", "ck_ukat"),
             "disease_activity": ("das_date", "phys_global_vas", "pat_global_vas",
                                  "extramusc_vas")}
    out = {}
    for form, (date_field, *fields) in forms.items():
        rows = [{"record_id": "1", "redcap_event_name": f"week_{week}_arm_{arm}",
                 "redcap_arm": arm, "redcap_repeat_instrument": None,
                 "redcap_repeat_instance": None,
                 date_field: pd.Timestamp(2018, 1, 1) + pd.Timedelta(weeks=week),
                 **{f: values[f] for f in fields}} for week, values in visits.items()]
        out[form] = pd.DataFrame(rows).astype({"redcap_repeat_instance": "Int64"})
    return out


# CK is recorded in ukat/L: 30 ukat/L = 1800 U/L, 5 ukat/L = 300 U/L, 27 ukat/L = 1620 U/L.
BASELINE = {"phys_global_vas": 6.0, "pat_global_vas": 5.0, "mmt8_total": 60,
            "haq_di": 1.5, "extramusc_vas": 4.0, "ck_ukat": 30.0}
# Week 24: physician 6 -> 3 = 30 % of 10 cm -> 17.5; patient 5 -> 4 = 10 % -> 2.5;
# MMT-8 60 -> 70 = 12.5 % of 80 -> 20; HAQ 1.5 -> 1.0 = 16.7 % of 3 -> 7.5;
# CK 1800 -> 300 U/L = 1500 / (15 x 200) = 50 % -> 7.5; extramuscular 4 -> 2 = 20 % -> 12.5.
# Six measures: 67.5 (major, >= 60). Three measures: 20 + 7.5 + 7.5 = 35 (major, >= 30).
WEEK_24 = {"phys_global_vas": 3.0, "pat_global_vas": 4.0, "mmt8_total": 70,
           "haq_di": 1.0, "extramusc_vas": 2.0, "ck_ukat": 5.0}
# Week 12: physician 6 -> 5.5 = 5 % (bins include the upper edge) -> 0; patient 5 -> 5 -> 0;
# MMT-8 60 -> 62 = 2.5 % -> 10; HAQ 1.5 -> 1.375 = 4.2 % -> 0; CK 1800 -> 1620 = 6 % -> 2.5;
# extramuscular 4 -> 3.5 = 5 % -> 0. Six measures: 12.5 (none, < 20). Three: 12.5 (minimal).
WEEK_12 = {"phys_global_vas": 5.5, "pat_global_vas": 5.0, "mmt8_total": 62,
           "haq_di": 1.375, "extramusc_vas": 3.5, "ck_ukat": 27.0}


@pytest.mark.parametrize("arm", [1, 2])
def test_hand_worked_tis_both_versions_per_visit(arm, mapping, config):
    scored, _ = scores_tables(_tables(arm, {0: BASELINE, 12: WEEK_12, 24: WEEK_24}), mapping,
                              config)
    by_event = scored.frame.set_index("event")
    week0, week12, week24 = (f"week_{w}_arm_{arm}" for w in (0, 12, 24))
    assert pd.isna(by_event.loc[week0, "tis_total"])  # the baseline is not scored
    assert by_event.loc[week24, "tis_total"] == pytest.approx(67.5)
    assert by_event.loc[week24, "tis_category"] == "major"
    assert by_event.loc[week24, "tis3_total"] == pytest.approx(35.0)
    assert by_event.loc[week24, "tis3_category"] == "major"
    assert by_event.loc[week12, "tis_total"] == pytest.approx(12.5)
    assert by_event.loc[week12, "tis_category"] == "none"
    assert by_event.loc[week12, "tis3_total"] == pytest.approx(12.5)
    assert by_event.loc[week12, "tis3_category"] == "minimal"
    assert set(by_event["arm"]) == {arm}


def test_three_measure_tis_needs_only_mmt_haq_and_ck(mapping, config):
    core = ("mmt8_total", "haq_di", "ck_ukat")
    only = {0: {k: v for k, v in BASELINE.items() if k in core},
            24: {k: v for k, v in WEEK_24.items() if k in core}}
    tables = _tables(1, {w: {**{k: None for k in BASELINE}, **v} for w, v in only.items()})
    scored, _ = scores_tables(tables, mapping, config)
    row = scored.frame.set_index("event").loc["week_24_arm_1"]
    assert row["tis3_total"] == pytest.approx(35.0)
    assert pd.isna(row["tis_total"])  # the six-measure score needs all six measures


def test_ck_conversion_factor_is_the_mappings(mapping):
    convert = mapping.measure("creatine_kinase").convert
    assert (convert.from_unit, convert.to_unit, convert.factor_for(None)) == ("ukat/L", "U/L",
                                                                              60.0)
