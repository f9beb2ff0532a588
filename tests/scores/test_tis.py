"""2016 ACR/EULAR Total Improvement Score: bin edges, the worked example, enzymes, 3-measure TIS."""

import pytest

from imt_etl.scores import (
    CoreSet,
    TisConfig,
    measure_points,
    tis_category,
    tis_three_measure,
    total_improvement_score,
)
from imt_etl.scores.tis import JUVENILE_THRESHOLDS

# Points table (terminology.md rule 6 / PMC5577002 Table 3), levels 2-5.
POINTS = {
    "physician_global": (7.5, 15, 17.5, 20),
    "patient_global": (2.5, 5, 7.5, 10),
    "mmt": (10, 20, 27.5, 32.5),
    "haq": (5, 7.5, 7.5, 10),
    "enzyme": (2.5, 5, 7.5, 7.5),
    "extramuscular": (7.5, 12.5, 15, 20),
}


def _edges(measure):
    return (2, 10, 20, 30) if measure == "mmt" else (5, 15, 25, 40)


@pytest.mark.parametrize("measure", list(POINTS))
def test_points_at_every_bin_edge(measure):
    e1, e2, e3, e4 = _edges(measure)
    p2, p3, p4, p5 = POINTS[measure]
    expected = [
        (-50, 0),
        (0, 0),
        (e1, 0),  # "worsening to 5 % (MMT 2 %)" includes the edge
        (e1 + 0.001, p2),
        (e2, p2),
        (e2 + 0.001, p3),
        (e3, p3),
        (e3 + 0.001, p4),
        (e4, p4),
        (e4 + 0.001, p5),
        (100, p5),
    ]
    for percent, points in expected:
        assert measure_points(measure, percent) == points, (measure, percent)
    assert measure_points(measure, None) is None


def test_unknown_measure():
    with pytest.raises(ValueError, match="unknown TIS measure 'cmas'"):
        measure_points("cmas", 10)


CONFIG = TisConfig(enzyme_uln={"ck": 200.0, "ldh": 250.0, "aldolase": 7.5, "ast": 40, "alt": 40})


def _visit(pg=6.0, pt=5.0, mmt=60.0, haq=1.5, extra=4.0, **enzymes):
    return CoreSet(pg, pt, mmt, haq, extra, enzymes or {"ck": 2000.0})


def test_worked_example_from_terminology_is_67_5_major():
    baseline = _visit(6, 5, 60, 1.5, 4, ck=2000)
    followup = _visit(3, 4, 70, 1.0, 2, ck=500)
    result = total_improvement_score(baseline, followup, CONFIG)
    assert result.points_by_measure == {
        "physician_global": 17.5,  # 3 / 10 cm = 30 %
        "patient_global": 2.5,  # 1 / 10 cm = 10 %
        "mmt": 20.0,  # 10 / 80 = 12.5 %
        "haq": 7.5,  # 0.5 / 3 = 16.7 %
        "enzyme": 7.5,  # 1500 / (15 x 200) = 50 %
        "extramuscular": 12.5,  # 2 / 10 cm = 20 %
    }
    assert result.percent_by_measure["haq"] == pytest.approx(50 / 3)
    assert result.total == 67.5  # dividing by baseline instead would give 80
    assert result.category == "major"
    assert result.enzyme == "ck"
    assert result.missing == ()
    assert result.max_score == 100.0
    assert result.provisional is True


def test_edges_on_real_instrument_values():
    base = _visit()
    # physician 6 -> 5.5 = 5 % -> 0; 6 -> 5.4 = 6 % -> 7.5; 6 -> 4.5 = 15 % -> 7.5 (edge included)
    for follow_pg, points in ((5.5, 0), (5.4, 7.5), (4.5, 7.5), (4.4, 15)):
        result = total_improvement_score(base, _visit(pg=follow_pg), CONFIG)
        assert result.points_by_measure["physician_global"] == points, follow_pg
    # MMT 60 -> 61.6 of 80 = 2 % (float noise 2.0000000000000018) -> 0; 60 -> 68 = 10 % -> 10
    for follow_mmt, points in ((61.6, 0), (61.7, 10), (68, 10), (76, 20), (78, 27.5)):
        result = total_improvement_score(base, _visit(mmt=follow_mmt), CONFIG)
        assert result.points_by_measure["mmt"] == points, follow_mmt
    # HAQ 1.5 -> 1.05 = 15 % -> 5: the edge belongs to the lower bin; 2.5 -> 2.05 is also 15 % by
    # hand but 15.000000000000005 in floating point, which must not move it to the next bin
    for before, after in ((1.5, 1.05), (2.5, 2.05)):
        result = total_improvement_score(_visit(haq=before), _visit(haq=after), CONFIG)
        assert result.points_by_measure["haq"] == 5, (before, after)


def test_worsening_scores_zero_never_negative():
    baseline = _visit(3, 4, 70, 1.0, 2, ck=500)
    followup = _visit(6, 5, 60, 1.5, 4, ck=2000)
    result = total_improvement_score(baseline, followup, CONFIG)
    assert set(result.points_by_measure.values()) == {0.0}
    assert result.total == 0.0
    assert result.category == "none"
    assert result.percent_by_measure["mmt"] == -12.5


def test_most_abnormal_enzyme_relative_to_uln_is_scored():
    # CK 400/200 = 2 x ULN, LDH 750/250 = 3 x ULN -> LDH; (750 - 500) / (3 x 250) = 33.3 % -> 7.5
    base = _visit(ck=400.0, ldh=750.0)
    follow = _visit(ck=100.0, ldh=500.0)
    result = total_improvement_score(base, follow, CONFIG)
    assert result.enzyme == "ldh"
    assert result.percent_by_measure["enzyme"] == pytest.approx(100 / 3)
    assert result.points_by_measure["enzyme"] == 7.5


def test_enzyme_missing_at_followup_falls_back_to_next_paired_enzyme():
    base = _visit(ck=400.0, ldh=750.0)
    follow = _visit(ck=300.0, ldh=None)
    result = total_improvement_score(base, follow, CONFIG)
    # only CK is measured at both visits: 100 / 3000 = 3.3 % -> 0
    assert result.enzyme == "ck"
    assert result.points_by_measure["enzyme"] == 0


def test_enzyme_k_is_configurable():
    base, follow = _visit(ck=1000.0), _visit(ck=800.0)
    default = total_improvement_score(base, follow, CONFIG)
    assert default.percent_by_measure["enzyme"] == pytest.approx(200 / 3000 * 100)
    assert default.points_by_measure["enzyme"] == 2.5
    narrow = TisConfig(enzyme_uln={"ck": 200.0}, enzyme_k={"ck": 5.0})
    assert total_improvement_score(base, follow, narrow).points_by_measure["enzyme"] == 5


def test_mmt_150_version_uses_its_own_range():
    config = TisConfig(enzyme_uln={"ck": 200.0}, mmt_max=150.0)
    result = total_improvement_score(_visit(mmt=100), _visit(mmt=115), config)
    assert result.percent_by_measure["mmt"] == pytest.approx(10.0)
    assert result.points_by_measure["mmt"] == 10


def test_missing_measure_leaves_no_total():
    baseline = _visit(extra=None)
    result = total_improvement_score(baseline, _visit(pg=3.0), CONFIG)
    assert result.total is None
    assert result.category is None
    assert result.missing == ("extramuscular",)
    assert result.points_by_measure["physician_global"] == 17.5
    no_enzyme = total_improvement_score(_visit(ck=None), _visit(), CONFIG)
    assert no_enzyme.missing == ("enzyme",)
    assert no_enzyme.enzyme is None


def test_input_errors_name_the_input():
    with pytest.raises(ValueError, match="baseline physician_global must be between 0 and 10"):
        total_improvement_score(_visit(pg=11), _visit(), CONFIG)
    with pytest.raises(ValueError, match="followup mmt must be between 0 and 80"):
        total_improvement_score(_visit(), _visit(mmt=81), CONFIG)
    with pytest.raises(ValueError, match="unknown enzyme 'cpk'"):
        total_improvement_score(_visit(cpk=100.0), _visit(), CONFIG)
    with pytest.raises(ValueError, match="no upper limit of normal configured for enzyme 'ck'"):
        total_improvement_score(_visit(), _visit(), TisConfig())
    with pytest.raises(ValueError, match="followup ck must be between 0"):
        total_improvement_score(_visit(), _visit(ck=-1.0), CONFIG)


def test_config_validation():
    with pytest.raises(ValueError, match="mmt_max must be > 0"):
        TisConfig(mmt_max=0)
    with pytest.raises(ValueError, match=r"enzyme_uln\['ck'\] must be > 0"):
        TisConfig(enzyme_uln={"ck": 0})
    with pytest.raises(ValueError, match="thresholds must be increasing"):
        TisConfig(thresholds=(40, 20, 60))


@pytest.mark.parametrize(
    ("total", "category"),
    [
        (0, "none"),
        (17.5, "none"),
        (20, "minimal"),
        (37.5, "minimal"),
        (40, "moderate"),
        (57.5, "moderate"),
        (60, "major"),
        (100, "major"),
        (None, None),
    ],
)
def test_adult_categories(total, category):
    assert tis_category(total, (20, 40, 60)) == category


def test_juvenile_thresholds():
    assert tis_category(40, JUVENILE_THRESHOLDS) == "minimal"
    assert tis_category(45, JUVENILE_THRESHOLDS) == "moderate"
    assert tis_category(70, JUVENILE_THRESHOLDS) == "major"


CK_ONLY = TisConfig(enzyme_uln={"ck": 200.0})


def _three(mmt, haq, ck):
    return CoreSet(mmt=mmt, haq=haq, enzymes={"ck": ck})


@pytest.mark.parametrize(
    ("follow", "total", "category"),
    [
        # MMT 60->61 = 1.25 % -> 0; HAQ 1.5->1.3 = 6.7 % -> 5; CK 2000->1800 = 6.7 % -> 2.5
        (_three(61, 1.3, 1800), 7.5, "none"),
        # MMT 60->68 = 10 % -> 10; HAQ unchanged; CK unchanged
        (_three(68, 1.5, 2000), 10.0, "minimal"),
        # MMT 60->70 = 12.5 % -> 20; HAQ unchanged; CK unchanged
        (_three(70, 1.5, 2000), 20.0, "moderate"),
        # MMT -> 20; HAQ 1.5->1.2 = 10 % -> 5; CK 2000->1700 = 10 % -> 2.5
        (_three(70, 1.2, 1700), 27.5, "moderate"),
        # MMT -> 20; HAQ -> 5; CK 2000->1400 = 20 % -> 5
        (_three(70, 1.2, 1400), 30.0, "major"),
    ],
)
def test_three_measure_thresholds(follow, total, category):
    result = tis_three_measure(_three(60, 1.5, 2000), follow, CK_ONLY)
    assert result.total == total
    assert result.category == category
    assert set(result.points_by_measure) == {"mmt", "haq", "enzyme"}
    assert result.max_score == 50.0
    assert result.provisional is True


def test_three_measure_maximum_is_50():
    # MMT 40->70 = 37.5 % -> 32.5; HAQ 2->0.5 = 50 % -> 10; CK 2000->200 = 60 % -> 7.5
    result = tis_three_measure(_three(40, 2.0, 2000), _three(70, 0.5, 200), CK_ONLY)
    assert result.total == 50.0
    assert result.category == "major"


def test_three_measure_uses_ck_even_when_another_enzyme_is_more_abnormal():
    base = CoreSet(mmt=60, haq=1.5, enzymes={"ck": 400.0, "ldh": 750.0})
    follow = CoreSet(mmt=60, haq=1.5, enzymes={"ck": 100.0, "ldh": 250.0})
    result = tis_three_measure(base, follow, CONFIG)
    assert result.enzyme == "ck"
    assert result.percent_by_measure["enzyme"] == pytest.approx(10.0)  # 300 / 3000
    # the six-measure score on the same enzymes would pick LDH
    six = total_improvement_score(_visit(ck=400.0, ldh=750.0), _visit(ck=100.0, ldh=250.0), CONFIG)
    assert six.enzyme == "ldh"
