"""training_adherence / training_deviations: the generator's known deviations, the rule itself."""

from __future__ import annotations

import pandas as pd
import pytest

from imt_etl.config import MAPPINGS_ROOT
from imt_etl.studies.imt import reference_deviations
from imt_etl.studies.imt.progression import expected_loads as imt_expected_loads
from imt_etl.tables.adherence import expected_loads, training_tables
from imt_etl.tables.config import ProgressionRule, load_analysis_config


def deviation_keys(frame: pd.DataFrame) -> list[tuple]:
    return sorted(zip(frame["participant"], frame["kind"], frame["instance"].astype(int),
                      frame["field"], strict=True))


def test_deviations_are_exactly_the_generators(imt_tables):
    found = imt_tables["training_deviations"].frame
    known = reference_deviations()
    assert deviation_keys(found) == sorted(
        (d.record, d.kind, d.repeat_instance, d.field) for d in known)
    by_key = {(r.participant, r.kind): r.description for r in found.itertuples()}
    for d in known:
        if d.field == "diary_load":  # the load descriptions name the same loads
            assert by_key[(d.record, d.kind)] == d.description


def test_deviations_survive_quarantined_diary_rows(imt_tidy):
    """Validation quarantines the diary rows with planted errors: nothing spurious appears."""
    tables = dict(imt_tidy.tables)
    diary = tables["training_diary"]
    bad = ((diary["record_id"] == "014") & (diary["redcap_repeat_instance"] == 66)) | (
        (diary["record_id"] == "003") & (diary["redcap_repeat_instance"] == 28))
    assert bad.sum() == 2
    tables["training_diary"] = diary[~bad].reset_index(drop=True)
    _, deviations = training_tables(tables, imt_config().training)
    assert deviation_keys(deviations.frame) == sorted(
        (d.record, d.kind, d.repeat_instance, d.field) for d in reference_deviations())


def test_weekly_rows_and_counts(imt_tables, imt_tidy):
    weeks = imt_tables["training_adherence"].frame
    n_participants = imt_tidy.tables["imt_prescription"]["record_id"].nunique()
    assert len(weeks) == 13 * n_participants
    assert weeks["sessions_prescribed"].tolist()[:13] == [7] * 12 + [6]
    diary = imt_tidy.tables["training_diary"]
    # Every diary entry inside the training window is counted in exactly one week.
    assert weeks["sessions_done"].sum() == len(diary) - 1  # 003's entry dated a year early
    assert (weeks["sessions_done"] <= weeks["sessions_prescribed"]).all()
    assert weeks.loc[weeks["deviations_n"] > 0, "deviations"].notna().all()
    assert weeks["deviations_n"].sum() == 3
    # Loads rise over training for a participant without deviations.
    first = weeks[weeks["participant"] == "001"]
    assert first["load_last"].is_monotonic_increasing
    assert first["load_changes_per_rule"].sum() == first["load_changes"].sum() > 0


@pytest.mark.parametrize("seed", range(20))
def test_generic_rule_equals_the_reference_rule(seed):
    import random

    rng = random.Random(seed)
    loads, borgs, load = [], [], 20
    for _ in range(60):
        load += rng.random() < 0.1
        loads.append(load)
        borgs.append(rng.choice([2.0, 2.5, 3.0, 3.5, 4.0]))
    assert expected_loads(20, loads, borgs, ProgressionRule()) == imt_expected_loads(
        20, loads, borgs)


def test_rule_parameters_change_the_expectation():
    loads, borgs = [10, 10, 10, 10], [5.0, 4.0, 3.0, 3.0]
    assert expected_loads(10, loads, borgs, ProgressionRule()) == [10, 10, 10, 11]
    assert expected_loads(10, loads, borgs, ProgressionRule(decreases_to_raise=1)) == [
        10, 10, 11, 11]
    assert expected_loads(10, loads, borgs, ProgressionRule(raise_factor=1.5)) == [
        10, 10, 10, 15]
    with pytest.raises(ValueError, match="2 loads but 1"):
        expected_loads(10, [1, 2], [1.0], ProgressionRule())


def imt_config():
    """The reference study's analysis settings (mappings/imt/analysis.yaml)."""
    return load_analysis_config(MAPPINGS_ROOT / "imt" / "analysis.yaml")
