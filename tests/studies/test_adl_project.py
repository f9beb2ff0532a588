"""The ADL demo project: shipped XML up to date, two arms, 30/27 split, dropouts, the pattern."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

import pytest

from imt_etl.redcap.logic import evaluate, parse_logic
from imt_etl.redcap.project_xml import read_project_xml
from imt_etl.studies import BUNDLED_PROJECTS, bundled_project_path
from imt_etl.studies.adl import project_path
from imt_etl.studies.adl.build import DEMO_N, DEMO_SEED, project_xml_bytes
from imt_etl.studies.adl.design import CONTROL, INTERVENTION, event_name
from imt_etl.studies.adl.generator import generate_project


@pytest.fixture(scope="module")
def project():
    return generate_project(DEMO_N, DEMO_SEED)


def _by_record(project):
    out: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in project.rows:
        out[row.record][row.event] = row.values
    return out


def _arm(events: dict) -> int:
    return int(next(iter(events)).rsplit("_", 1)[1])


def test_shipped_xml_is_up_to_date():
    assert project_xml_bytes() == project_path().read_bytes(), (
        "run python -m imt_etl.studies.adl.build")


def test_registry_serves_both_bundled_studies():
    assert bundled_project_path("adl") == project_path()
    assert set(BUNDLED_PROJECTS) == {"imt", "adl"}
    assert all(p.is_file() for p in BUNDLED_PROJECTS.values())


def test_design_has_two_arms_with_weeks_0_12_24_48():
    loaded = read_project_xml(project_path())
    assert [a.arm_num for a in loaded.arms] == [INTERVENTION, CONTROL]
    for arm in (INTERVENTION, CONTROL):
        events = [e for e in loaded.events if e.arm_num == arm]
        assert [e.unique_event_name for e in events] == [
            event_name(w, arm) for w in (0, 12, 24, 48)]
        assert [e.day_offset for e in events] == [0, 84, 168, 336]


def test_split_is_30_27_and_dropouts_are_3_and_4(project):
    records = _by_record(project)
    arms = {r: _arm(ev) for r, ev in records.items()}
    assert sorted(arms.values()).count(INTERVENTION) == 30
    assert sorted(arms.values()).count(CONTROL) == 27
    withdrawn = {r for r, ev in records.items()
                 if any(v.get("withdrawn") == "1" for v in ev.values())}
    assert sum(arms[r] == INTERVENTION for r in withdrawn) == 3
    assert sum(arms[r] == CONTROL for r in withdrawn) == 4
    for record in withdrawn:  # a dropout has no week-24 assessment
        assert "mmt_date" not in records[record].get(event_name(24, arms[record]), {})


def test_intervention_improves_and_control_declines_over_weeks_0_24(project):
    values: dict[tuple[int, str, int], list[float]] = defaultdict(list)
    for events in _by_record(project).values():
        arm = _arm(events)
        start, end = events[event_name(0, arm)], events.get(event_name(24, arm), {})
        for field in ("mmt8_total", "fi2_total", "haq_di", "bdi2_total"):
            if field in end:  # completers only, as in the paper's per-protocol comparison
                values[(arm, field, 0)].append(float(start[field]))
                values[(arm, field, 24)].append(float(end[field]))

    def change(arm: int, field: str) -> float:
        return mean(values[(arm, field, 24)]) / mean(values[(arm, field, 0)]) - 1

    # Paper (Arthritis Res Ther 2021;23:173): MMT-8 +26 %, FI-2 +135 %, HAQ -39 %, BDI-II -26 %.
    for field, better_up in (("mmt8_total", True), ("fi2_total", True), ("haq_di", False),
                             ("bdi2_total", False)):
        sign = 1 if better_up else -1
        assert sign * change(INTERVENTION, field) > 0.1, field
        assert sign * change(CONTROL, field) < 0, field


def test_calculated_fields_match_redcap_logic(project):
    calcs = [f for f in project.dictionary.fields if f.field_type == "calc"]
    formulas = {f.name: parse_logic(f.choices_or_calc, field=f.name) for f in calcs}
    checked = 0
    for row in project.rows:
        for name, formula in formulas.items():
            if name in row.values:
                result = evaluate(formula, row.values, field=name)
                assert f"{result:.10g}" == row.values[name], (row.key, name)
                checked += 1
    assert checked > 57 * 7


def test_generator_is_deterministic_and_validates_its_size():
    assert generate_project(6, 1).rows == generate_project(6, 1).rows
    assert generate_project(6, 1).rows != generate_project(6, 2).rows
    with pytest.raises(ValueError, match="at least 2"):
        generate_project(1)
