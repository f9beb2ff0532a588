"""2016 ACR/EULAR myositis response: Total Improvement Score (TIS) and the 3-measure variant.

Sources (checked with the `search` tool, corpus "pages", during development):
- Points table, bins and thresholds: Aggarwal R, Rider LG, Ruperto N, et al. 2016 ACR/EULAR criteria
  for minimal, moderate, and major clinical response in adult dermatomyositis and polymyositis.
  Ann Rheum Dis 2017;76:792-801 and Arthritis Rheumatol 2017;69:898-910. The same conjoint-analysis
  table is reproduced as Table 3 of the juvenile paper (Rider LG, et al. Arthritis Rheumatol
  2017;69:911-923, PMC5577002, pmc.ncbi.nlm.nih.gov/articles/PMC5577002/table/T3), read here: levels
  "worsening to 5 % improvement" = 0, ">5 % to 15 %", ">15 % to 25 %", ">25 % to 40 %", ">40 %"
  (MMT: worsening to 2 %, >2-10, >10-20, >20-30, >30 %); points physician 0/7.5/15/17.5/20, patient
  0/2.5/5/7.5/10, MMT 0/10/20/27.5/32.5, HAQ 0/5/7.5/7.5/10, enzyme 0/2.5/5/7.5/7.5, extramuscular
  0/7.5/12.5/15/20; adult thresholds minimal >= 20, moderate >= 40, major >= 60 (juvenile 30/45/70).
  "Enzyme" = the most abnormal serum muscle enzyme among CK, aldolase, ALT, AST and LD.
- "Absolute percent change": every abstract (Ann Rheum Dis 2017;76:792; PubMed 28382778) says the
  model uses the *absolute* percent change in the core set measures, and the IMACS calculator page
  (niehs.nih.gov/research/resources/imacs/response_criteria/) asks for "the maximum potential manual
  muscle testing score and the upper limit of the serum muscle enzymes", which is only needed when
  change is scaled by the instrument range, not by the baseline. The paper's Table 3 footnote that
  defines the formula was NOT retrievable, so the range formula (terminology.md rule 6) is
  implemented as: improvement % = (baseline - follow-up) / range x 100 for measures where lower
  is better (VAS / 10 cm, HAQ / 3, extramuscular VAS / 10 cm), (follow-up - baseline) / MMT
  maximum x 100 for MMT, and for the enzyme (baseline - follow-up) / (k x ULN) x 100, where the
  enzyme is the one with the highest baseline/ULN ratio. The adult k values (CK 15, LD 3, AST 3,
  ALT 3, aldolase 6) are weakly sourced (terminology.md) and are configurable. Results therefore
  carry provisional=True.
- Three-measure variant (MMT-8, HAQ, CK; maximum 50; minimal >= 10, moderate >= 20, major >= 30):
  the supervised ADL training study, ISRCTN35925199 (studies.md section 2).
Bins include their upper edge (">5-15" means 5 < x <= 15); worsening scores 0, never negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from imt_etl.scores._common import as_number, as_optional_number, check_range, edge_round

ENZYMES = ("ck", "aldolase", "ldh", "ast", "alt")
# Adult enzyme range multipliers (range = k x ULN): terminology.md rule 6, weakly sourced.
DEFAULT_ENZYME_K: Mapping[str, float] = MappingProxyType(
    {"ck": 15.0, "ldh": 3.0, "ast": 3.0, "alt": 3.0, "aldolase": 6.0}
)
ADULT_THRESHOLDS = (20.0, 40.0, 60.0)  # Aggarwal et al. 2017
JUVENILE_THRESHOLDS = (30.0, 45.0, 70.0)  # Rider et al. 2017
THREE_MEASURE_THRESHOLDS = (10.0, 20.0, 30.0)  # ISRCTN35925199: adult thresholds halved

# Upper edges of the four lowest levels (Aggarwal et al. 2017 / PMC5577002 Table 3).
_EDGES = (5.0, 15.0, 25.0, 40.0)
_MMT_EDGES = (2.0, 10.0, 20.0, 30.0)
# Points for levels 2-5 (level 1, worsening to the first edge, always scores 0).
POINTS: Mapping[str, tuple[float, float, float, float]] = MappingProxyType(
    {
        "physician_global": (7.5, 15.0, 17.5, 20.0),
        "patient_global": (2.5, 5.0, 7.5, 10.0),
        "mmt": (10.0, 20.0, 27.5, 32.5),
        "haq": (5.0, 7.5, 7.5, 10.0),
        "enzyme": (2.5, 5.0, 7.5, 7.5),
        "extramuscular": (7.5, 12.5, 15.0, 20.0),
    }
)
MEASURES = tuple(POINTS)
THREE_MEASURES = ("mmt", "haq", "enzyme")


@dataclass(frozen=True)
class CoreSet:
    """IMACS core set activity measures at one visit; enzymes in the same unit as their ULN."""

    physician_global: float | None = None  # VAS, 0..vas_max cm
    patient_global: float | None = None  # VAS, 0..vas_max cm
    mmt: float | None = None  # MMT-8 total, 0..mmt_max
    haq: float | None = None  # HAQ-DI, 0..haq_max
    extramuscular: float | None = None  # extramuscular global activity VAS, 0..vas_max cm
    enzymes: Mapping[str, float | None] = field(default_factory=dict)  # keys from ENZYMES


@dataclass(frozen=True)
class TisConfig:
    """Instrument ranges, enzyme ULNs (required for the enzyme measure) and k multipliers."""

    enzyme_uln: Mapping[str, float] = field(default_factory=dict)
    enzyme_k: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ENZYME_K))
    mmt_max: float = 80.0  # MMT-8 0-80; use 150 for the bilateral 0-150 version
    vas_max: float = 10.0  # 10 cm VAS
    haq_max: float = 3.0
    thresholds: tuple[float, float, float] = ADULT_THRESHOLDS

    def __post_init__(self) -> None:
        for name in ("mmt_max", "vas_max", "haq_max"):
            if as_number(getattr(self, name), name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for label, table in (("enzyme_uln", self.enzyme_uln), ("enzyme_k", self.enzyme_k)):
            for key, value in table.items():
                if key not in ENZYMES:
                    raise ValueError(f"{label} has unknown enzyme {key!r} (expected {ENZYMES})")
                if as_number(value, f"{label}[{key!r}]") <= 0:
                    raise ValueError(f"{label}[{key!r}] must be > 0, got {value!r}")
        low, mid, high = self.thresholds
        if not 0 < low < mid < high:
            raise ValueError(f"thresholds must be increasing and > 0, got {self.thresholds!r}")


@dataclass(frozen=True)
class TisResult:
    """TIS total (None if a required measure is missing), per-measure points and % improvement."""

    total: float | None
    points_by_measure: dict[str, float | None]
    percent_by_measure: dict[str, float | None]
    category: str | None  # "none" | "minimal" | "moderate" | "major"; None when total is None
    enzyme: str | None  # which enzyme was scored
    missing: tuple[str, ...]
    max_score: float
    provisional: bool = True


def measure_points(measure: str, percent_improvement: float | None) -> float | None:
    """Points for one measure's absolute % improvement (bins include the upper edge)."""
    if measure not in POINTS:
        raise ValueError(f"unknown TIS measure {measure!r} (expected one of {MEASURES})")
    if percent_improvement is None:
        return None
    pct = edge_round(as_number(percent_improvement, f"{measure} percent improvement"))
    edges = _MMT_EDGES if measure == "mmt" else _EDGES
    if pct <= edges[0]:
        return 0.0  # "worsening to 5 % (MMT 2 %) improvement"
    for edge, points in zip(edges[1:], POINTS[measure][:3], strict=True):
        if pct <= edge:
            return points
    return POINTS[measure][3]


def absolute_percent_improvement(
    baseline: float, followup: float, scale_range: float, higher_is_better: bool = False
) -> float:
    """Improvement as % of the instrument range (positive = better), per terminology.md rule 6."""
    change = followup - baseline if higher_is_better else baseline - followup
    return change / scale_range * 100.0


def tis_category(total: float | None, thresholds: tuple[float, float, float]) -> str | None:
    """'none' / 'minimal' / 'moderate' / 'major' for a total (thresholds are inclusive)."""
    if total is None:
        return None
    minimal, moderate, major = thresholds
    value = edge_round(total)
    if value >= major:
        return "major"
    if value >= moderate:
        return "moderate"
    return "minimal" if value >= minimal else "none"


def total_improvement_score(baseline: CoreSet, followup: CoreSet, config: TisConfig) -> TisResult:
    """The six-measure 2016 ACR/EULAR TIS (0-100); provisional (see the module docstring)."""
    percents, enzyme = _percent_improvements(baseline, followup, config, MEASURES, ENZYMES)
    return _result(percents, enzyme, config.thresholds, max_score=100.0)


def tis_three_measure(
    baseline: CoreSet,
    followup: CoreSet,
    config: TisConfig,
    thresholds: tuple[float, float, float] = THREE_MEASURE_THRESHOLDS,
) -> TisResult:
    """Modified TIS from MMT-8, HAQ and CK only (max 50; thresholds 10/20/30), ISRCTN35925199."""
    percents, enzyme = _percent_improvements(baseline, followup, config, THREE_MEASURES, ("ck",))
    return _result(percents, enzyme, thresholds, max_score=50.0)


def _result(
    percents: dict[str, float | None],
    enzyme: str | None,
    thresholds: tuple[float, float, float],
    max_score: float,
) -> TisResult:
    points = {m: measure_points(m, p) for m, p in percents.items()}
    missing = tuple(m for m, p in points.items() if p is None)
    # The criteria sum the level scores of all measures; a missing measure leaves no total.
    total = None if missing else sum(p for p in points.values() if p is not None)
    return TisResult(
        total=total,
        points_by_measure=points,
        percent_by_measure=percents,
        category=tis_category(total, thresholds),
        enzyme=enzyme,
        missing=missing,
        max_score=max_score,
    )


def _percent_improvements(
    baseline: CoreSet,
    followup: CoreSet,
    config: TisConfig,
    measures: tuple[str, ...],
    enzymes: tuple[str, ...],
) -> tuple[dict[str, float | None], str | None]:
    ranges = {
        "physician_global": config.vas_max,
        "patient_global": config.vas_max,
        "extramuscular": config.vas_max,
        "haq": config.haq_max,
        "mmt": config.mmt_max,
    }
    percents: dict[str, float | None] = {}
    enzyme = None
    for measure in measures:
        if measure == "enzyme":
            enzyme, percents[measure] = _enzyme_improvement(baseline, followup, config, enzymes)
            continue
        top = ranges[measure]
        before = _visit_value(baseline, measure, top, "baseline")
        after = _visit_value(followup, measure, top, "followup")
        percents[measure] = (
            None
            if before is None or after is None
            else absolute_percent_improvement(before, after, top, higher_is_better=measure == "mmt")
        )
    return percents, enzyme


def _visit_value(visit: CoreSet, measure: str, top: float, label: str) -> float | None:
    value = as_optional_number(getattr(visit, measure), f"{label} {measure}")
    return None if value is None else check_range(value, 0.0, top, f"{label} {measure}")


def _enzyme_values(visit: CoreSet, label: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for key, raw in visit.enzymes.items():
        if key not in ENZYMES:
            raise ValueError(f"{label} enzymes has unknown enzyme {key!r} (expected {ENZYMES})")
        value = as_optional_number(raw, f"{label} {key}")
        if value is not None:
            values[key] = check_range(value, 0.0, float("inf"), f"{label} {key}")
    return values


def _enzyme_improvement(
    baseline: CoreSet, followup: CoreSet, config: TisConfig, allowed: tuple[str, ...]
) -> tuple[str | None, float | None]:
    """Most abnormal enzyme at baseline (highest value/ULN) among those measured at both visits."""
    before = _enzyme_values(baseline, "baseline")
    after = _enzyme_values(followup, "followup")
    paired = [e for e in allowed if e in before and e in after]
    for key in paired:
        if key not in config.enzyme_uln:
            raise ValueError(f"no upper limit of normal configured for enzyme {key!r} (enzyme_uln)")
        if key not in config.enzyme_k:
            raise ValueError(f"no range multiplier k configured for enzyme {key!r} (enzyme_k)")
    if not paired:
        return None, None
    chosen = max(paired, key=lambda e: before[e] / config.enzyme_uln[e])
    enzyme_range = config.enzyme_k[chosen] * config.enzyme_uln[chosen]
    return chosen, absolute_percent_improvement(before[chosen], after[chosen], enzyme_range)
