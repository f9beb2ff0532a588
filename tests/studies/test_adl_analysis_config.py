"""analysis.yaml as data: the loader's checks, per-arm events, and the IMT settings it replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from imt_etl.config import MAPPINGS_ROOT
from imt_etl.errors import MappingError
from imt_etl.tables.config import load_analysis_config, study_analysis_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "analysis.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
events:
  a_arm_1: {label: A, week: 0}
  b_arm_1: {label: B, week: 12}
visits: [a_arm_1, b_arm_1]
"""


def test_imt_settings_are_the_protocols():
    config = load_analysis_config(MAPPINGS_ROOT / "imt" / "analysis.yaml")
    assert config.visit_events == ("screening_arm_1", "baseline_arm_1", "month_3_arm_1",
                                   "month_6_arm_1", "month_12_arm_1")
    assert config.event_weeks["month_3_arm_1"] == 12.9
    assert config.period("training").events(1) == ("baseline_arm_1", "month_3_arm_1")
    assert (config.primary_measure, config.primary_period) == ("mip_kh2_best", "training")
    assert config.training.rule.raise_factor == 1.10 and config.training.training_days == 90
    assert config.scores.rand36_items[0] == "sf36_01" and len(config.scores.rand36_items) == 36
    assert config.scores.fss_items == tuple(f"fss_{i}" for i in range(1, 10))
    assert config.scores.tis_baseline(1) == "baseline_arm_1"
    assert config.periods_for("mip_kh2_best") == config.periods


def test_adl_periods_and_tis_baseline_are_per_arm():
    config = load_analysis_config(MAPPINGS_ROOT / "adl" / "analysis.yaml")
    period = config.period("weeks_0_24")
    assert period.events(1) == ("week_0_arm_1", "week_24_arm_1")
    assert period.events(2) == ("week_0_arm_2", "week_24_arm_2")
    assert config.scores.tis_baseline(2) == "week_0_arm_2"
    assert [p.name for p in config.periods_for("ecm_bcm_ratio")] == ["weeks_0_12"]
    assert config.arm_labels[2] == "Control: home exercise"


def test_a_folder_without_analysis_yaml_has_none(tmp_path):
    assert study_analysis_config(tmp_path) is None
    _write(tmp_path, MINIMAL)
    assert study_analysis_config(tmp_path).visit_events == ("a_arm_1", "b_arm_1")


@pytest.mark.parametrize(("extra", "key"), [
    ("colour: blue\n", "colour"),
    ("periods:\n  - {name: p, label: P, from: a_arm_1, to: nowhere}\n", "periods[0].to"),
    ("periods:\n  - {name: p, label: P, from: {1: a_arm_1}, to: {2: b_arm_1}}\n", "periods[0]"),
    ("primary_endpoint: {measure: m, period: none}\n", "primary_endpoint.period"),
    ("change_periods: {m: [none]}\n", "change_periods.m"),
    ("scores:\n  tis: {core_set: {elbow: x}, baseline: a_arm_1}\n", "scores.tis.core_set.elbow"),
])
def test_problems_name_the_file_and_key(tmp_path, extra, key):
    with pytest.raises(MappingError) as caught:
        load_analysis_config(_write(tmp_path, MINIMAL + extra))
    assert caught.value.file == "analysis.yaml" and caught.value.key == key
