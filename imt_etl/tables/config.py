"""Study-specific analysis settings as data: visits, change periods, primary endpoint, scores.

`AnalysisConfig` is what the generic table builders need to know about a study's design. Each
study keeps it in `mappings/<study>/analysis.yaml` (keys in mappings/README.md), read by
`load_analysis_config`; no study's settings live in code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from imt_etl.errors import MappingError


@dataclass(frozen=True)
class Period:
    """A change-from-baseline period: from one visit (event) to a later one."""

    name: str
    label: str
    from_event: str
    to_event: str
    # Multi-arm projects: REDCap event names are per arm, so a period names its events per arm.
    by_arm: Mapping[int, tuple[str, str]] = field(default_factory=dict)

    def events(self, arm: int | None) -> tuple[str, str]:
        """(from, to) events of the period for a participant in `arm`."""
        return self.by_arm.get(arm, (self.from_event, self.to_event)) if arm is not None \
            else (self.from_event, self.to_event)


@dataclass(frozen=True)
class ProgressionRule:
    """A load-progression rule: start at a fraction of MIP, raise after N exertion decreases.

    A "decrease" is a session whose exertion rating is lower than the previous session's at the
    same load; after `decreases_to_raise` decreases in a row the next load is
    round_half_up(load x raise_factor), at least `min_step` more, and counting restarts.
    """

    start_fraction: float = 0.30
    raise_factor: float = 1.10
    decreases_to_raise: int = 2
    min_step: int = 1


@dataclass(frozen=True)
class TrainingConfig:
    """Where a study records its home training and how the protocol prescribes it."""

    diary_form: str
    date_field: str
    load_field: str
    exertion_field: str
    breaths_field: str
    start_form: str  # the prescription form (non-repeating)
    start_date_field: str  # first training day
    start_load_field: str
    start_mip_field: str  # the MIP the start load is a fraction of
    training_days: int = 90
    sessions_per_week: int = 7
    rule: ProgressionRule = field(default_factory=ProgressionRule)


@dataclass(frozen=True)
class ScoresConfig:
    """Fields the per-visit scores are computed from (names are REDCap fields)."""

    sex_field: str = ""
    sex_codes: Mapping[str, str] = field(default_factory=dict)  # code -> "female" | "male"
    dob_field: str = ""
    mip_date_field: str = ""  # the visit date of the scores row (age is computed at it)
    # device -> (trial fields, best field); none: no MIP columns are computed
    mip_devices: Mapping[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    fss_items: tuple[str, ...] = ()
    rand36_items: tuple[str, ...] = ()  # item 1..36 in order
    thickness_insp_field: str = ""
    thickness_exp_field: str = ""
    core_set: Mapping[str, str] = field(default_factory=dict)  # TIS measure -> field
    ck_field: str = ""
    ck_unit_measure: str = ""  # mapping measure id whose conversion gives U/L
    ck_uln: float = 200.0  # U/L; set the local laboratory's value
    mmt_max: float = 80.0  # maximum MMT score (80 for MMT-8, 150 for the bilateral version)
    tis_events: tuple[str, str] = ("", "")  # (baseline event, follow-up event)
    tis_baseline_by_arm: Mapping[int, str] = field(default_factory=dict)

    def tis_baseline(self, arm: int | None) -> str:
        """The TIS baseline event of a participant in `arm` (events are per arm)."""
        return self.tis_baseline_by_arm.get(arm, self.tis_events[0]) if arm is not None \
            else self.tis_events[0]


@dataclass(frozen=True)
class AnalysisConfig:
    """Everything study-specific the analysis tables need."""

    event_labels: Mapping[str, str]
    event_weeks: Mapping[str, float]
    visit_events: tuple[str, ...]  # non-repeating assessment visits in protocol order
    periods: tuple[Period, ...] = ()
    primary_measure: str = ""
    primary_period: str = ""
    training: TrainingConfig | None = None
    scores: ScoresConfig | None = None
    allowed_identifiers: frozenset[str] = frozenset()
    # measure id -> the periods its change is reported for (default: every period)
    measure_periods: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    arm_labels: Mapping[int, str] = field(default_factory=dict)  # REDCap arm number -> label

    def period(self, name: str) -> Period:
        for p in self.periods:
            if p.name == name:
                return p
        raise KeyError(name)

    def periods_for(self, measure_id: str) -> tuple[Period, ...]:
        """The periods a measure's change is reported for."""
        names = self.measure_periods.get(measure_id)
        return self.periods if names is None else tuple(p for p in self.periods
                                                         if p.name in names)




# --- reading analysis.yaml ----------------------------------------------------------------------

ANALYSIS_FILE = "analysis.yaml"
_TOP_KEYS = ("version", "events", "visits", "periods", "primary_endpoint", "change_periods",
             "arms", "allowed_identifiers", "training", "scores")
_TRAINING_KEYS = tuple(f.name for f in fields(TrainingConfig))
_RULE_KEYS = tuple(f.name for f in fields(ProgressionRule))
_SCORES_KEYS = ("sex_field", "sex_codes", "dob_field", "date_field", "mip_devices", "fss_items",
                "rand36_items", "thickness_insp_field", "thickness_exp_field", "tis")
_TIS_KEYS = ("core_set", "ck_field", "ck_unit_measure", "ck_uln", "mmt_max", "baseline")
_CORE_SET = ("physician_global", "patient_global", "mmt", "haq", "extramuscular")


class _Reader:
    """Typed access to one YAML mapping, raising MappingError(file, dotted key) on a problem."""

    def __init__(self, file: str, data: Any, path: str = ""):
        self.file, self.path = file, path
        if not isinstance(data, dict):
            raise self.error("must be a mapping of keys")
        self.data: dict[str, Any] = data

    def error(self, problem: str, key: str = "") -> MappingError:
        where = ".".join(p for p in (self.path, key) if p) or "<top>"
        return MappingError(self.file, where, problem)

    def child(self, key: str) -> _Reader:
        return _Reader(self.file, self.data.get(key), ".".join(p for p in (self.path, key) if p))

    def only(self, allowed: Sequence[str], required: Sequence[str] = ()) -> _Reader:
        for key in self.data:
            if key not in allowed:
                raise self.error(f"unknown key (allowed: {', '.join(allowed)})", str(key))
        for key in required:
            if key not in self.data:
                raise self.error("is required", key)
        return self

    def text(self, key: str, default: str = "") -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self.error(f"must be text, got {value!r}", key)
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"must be a number, got {value!r}", key)
        return float(value)

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error("must be a list of names", key)
        return tuple(value)


def load_analysis_config(path: Path) -> AnalysisConfig:
    """Read and check `analysis.yaml` (keys in mappings/README.md); MappingError names the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(path.name, "<file>", f"cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(path.name, "<yaml>", f"not valid YAML: {exc}") from exc
    top = _Reader(path.name, data).only(_TOP_KEYS, ("events", "visits"))
    labels, weeks = _events(top.child("events"))
    visits = top.texts("visits")
    for i, event in enumerate(visits):
        if event not in labels:
            raise top.error(f"{event!r} is not in events", f"visits[{i}]")
    periods = _periods(top, set(labels))
    primary = top.child("primary_endpoint").only(("measure", "period"), ("measure", "period")) \
        if "primary_endpoint" in top.data else None
    if primary is not None and primary.text("period") not in {p.name for p in periods}:
        raise primary.error("is not a configured period", "period")
    return AnalysisConfig(
        event_labels=labels, event_weeks=weeks, visit_events=visits, periods=periods,
        primary_measure=primary.text("measure") if primary else "",
        primary_period=primary.text("period") if primary else "",
        training=_training(top.child("training")) if "training" in top.data else None,
        scores=_scores(top.child("scores"), set(labels)) if "scores" in top.data else None,
        allowed_identifiers=frozenset(top.texts("allowed_identifiers")),
        measure_periods=_measure_periods(top, {p.name for p in periods}),
        arm_labels=_arm_map(top, "arms", None) if "arms" in top.data else {},
    )


def study_analysis_config(mapping_folder: Path) -> AnalysisConfig | None:
    """The study's `analysis.yaml` beside its mappings, or None when it has none."""
    path = Path(mapping_folder) / ANALYSIS_FILE
    return load_analysis_config(path) if path.is_file() else None


def _events(r: _Reader) -> tuple[dict[str, str], dict[str, float]]:
    labels: dict[str, str] = {}
    weeks: dict[str, float] = {}
    for event in r.data:
        spec = r.child(str(event)).only(("label", "week"), ("label",))
        labels[str(event)] = spec.text("label")
        if "week" in spec.data:
            weeks[str(event)] = spec.number("week", 0.0)
    if not labels:
        raise r.error("needs at least one event")
    return labels, weeks


def _arm_map(r: _Reader, key: str, events: set[str] | None) -> dict[int, str]:
    """{arm number: text}; with `events`, every text must be a configured event."""
    value = r.data.get(key)
    if not isinstance(value, dict) or not value:
        raise r.error("must map arm numbers to names", key)
    out: dict[int, str] = {}
    for arm, text in value.items():
        if isinstance(arm, bool) or not isinstance(arm, int) or not isinstance(text, str):
            raise r.error(f"{arm!r}: {text!r} is not arm number: name", key)
        if events is not None and text not in events:
            raise r.error(f"{text!r} is not in events", f"{key}.{arm}")
        out[arm] = text
    return out


def _event_or_arms(r: _Reader, key: str, events: set[str]) -> tuple[str, dict[int, str]]:
    """An event name, or {arm: event} (the first arm's event is the default)."""
    if isinstance(r.data.get(key), dict):
        by_arm = _arm_map(r, key, events)
        return by_arm[min(by_arm)], by_arm
    name = r.text(key)
    if name not in events:
        raise r.error(f"{name!r} is not in events", key)
    return name, {}


def _periods(top: _Reader, events: set[str]) -> tuple[Period, ...]:
    items = top.data.get("periods", [])
    if not isinstance(items, list):
        raise top.error("must be a list", "periods")
    out: list[Period] = []
    for i, item in enumerate(items):
        r = _Reader(top.file, item, f"periods[{i}]").only(
            ("name", "label", "from", "to"), ("name", "label", "from", "to"))
        start, start_arms = _event_or_arms(r, "from", events)
        end, end_arms = _event_or_arms(r, "to", events)
        if set(start_arms) != set(end_arms):
            raise r.error("from and to must name the same arms")
        by_arm = {a: (start_arms[a], end_arms[a]) for a in start_arms}
        if r.text("name") in {p.name for p in out}:
            raise r.error("duplicate period name", "name")
        out.append(Period(r.text("name"), r.text("label"), start, end, by_arm))
    return tuple(out)


def _measure_periods(top: _Reader, names: set[str]) -> dict[str, tuple[str, ...]]:
    if "change_periods" not in top.data:
        return {}
    r = top.child("change_periods")
    out = {str(m): r.texts(str(m)) for m in r.data}
    for measure, chosen in out.items():
        for name in chosen:
            if name not in names:
                raise r.error(f"{name!r} is not a configured period", measure)
    return out


def _training(r: _Reader) -> TrainingConfig:
    r.only(_TRAINING_KEYS, [k for k in _TRAINING_KEYS
                            if k not in ("training_days", "sessions_per_week", "rule")])
    rule = ProgressionRule()
    if "rule" in r.data:
        rr = r.child("rule").only(_RULE_KEYS)
        rule = ProgressionRule(**{
            k: (int if isinstance(getattr(rule, k), int) else float)(rr.number(k, getattr(rule, k)))
            for k in _RULE_KEYS})
    strings = {k: r.text(k) for k in _TRAINING_KEYS
               if k not in ("training_days", "sessions_per_week", "rule")}
    return TrainingConfig(**strings, training_days=int(r.number("training_days", 90)),
                          sessions_per_week=int(r.number("sessions_per_week", 7)), rule=rule)


def _items(r: _Reader, key: str) -> tuple[str, ...]:
    """A list of field names, or {prefix, from, to, width}: prefix + zero-padded numbers."""
    if isinstance(r.data.get(key), dict):
        spec = r.child(key).only(("prefix", "from", "to", "width"), ("prefix", "from", "to"))
        first, last = int(spec.number("from", 1)), int(spec.number("to", 1))
        width = int(spec.number("width", 0))
        return tuple(f"{spec.text('prefix')}{i:0{width}d}" for i in range(first, last + 1))
    return r.texts(key)


def _scores(r: _Reader, events: set[str]) -> ScoresConfig:
    r.only(_SCORES_KEYS)
    devices: dict[str, tuple[tuple[str, ...], str]] = {}
    if "mip_devices" in r.data:
        dr = r.child("mip_devices")
        for device in dr.data:
            spec = dr.child(str(device)).only(("trials", "best"), ("trials", "best"))
            devices[str(device)] = (spec.texts("trials"), spec.text("best"))
    codes = r.child("sex_codes").data if "sex_codes" in r.data else {}
    tis: dict[str, Any] = {}
    if "tis" in r.data:
        t = r.child("tis").only(_TIS_KEYS, ("core_set", "baseline"))
        core = t.child("core_set").only(_CORE_SET)
        baseline, by_arm = _event_or_arms(t, "baseline", events)
        tis = {"core_set": {k: core.text(k) for k in core.data}, "ck_field": t.text("ck_field"),
               "ck_unit_measure": t.text("ck_unit_measure"),
               "ck_uln": t.number("ck_uln", 200.0), "mmt_max": t.number("mmt_max", 80.0),
               "tis_events": (baseline, ""), "tis_baseline_by_arm": by_arm}
    return ScoresConfig(
        sex_field=r.text("sex_field"), sex_codes={str(k): str(v) for k, v in codes.items()},
        dob_field=r.text("dob_field"), mip_date_field=r.text("date_field"), mip_devices=devices,
        fss_items=_items(r, "fss_items"), rand36_items=_items(r, "rand36_items"),
        thickness_insp_field=r.text("thickness_insp_field"),
        thickness_exp_field=r.text("thickness_exp_field"), **tis,
    )
