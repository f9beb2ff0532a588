"""training_adherence (per participant and week) and training_deviations, from the training diary.

The load-progression rule is generic here (`ProgressionRule` from the study's AnalysisConfig):
start at a fraction of MIP; raise by a factor after N decreases in exertion on consecutive
training days at the same load. Sessions are replayed in entry order (repeat instance) and each
expected load uses only the sessions before it, so one deviation flags one diary entry. A
"missed week" is a gap of at least 7 calendar days without a session between two entries.
Diary dates outside the training window (a data-entry error, reported by validation) are kept
for the load replay but count in no week and no gap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from imt_etl.tables.common import (
    DATE,
    STRING,
    AnalysisTable,
    Pseudonymise,
    identity,
    natural_order,
    plain,
    plain_values,
    typed_frame,
)
from imt_etl.tables.config import ProgressionRule, TrainingConfig

log = logging.getLogger(__name__)

MISSED_WEEK_DAYS = 7
# Diary entries up to this many days after the nominal end still belong to training (the
# month-3 visit window is -0/+7 days, and training continues until that visit).
WINDOW_GRACE_DAYS = 7

WEEK_SCHEMA = {
    "participant": STRING, "arm": "Int64", "week": "Int64", "week_start": DATE, "week_end": DATE,
    "sessions_prescribed": "Int64", "sessions_done": "Int64", "adherence_pct": "Float64",
    "breaths_total": "Int64", "breaths_mean": "Float64", "load_first": "Float64",
    "load_last": "Float64", "load_max": "Float64", "load_changes": "Int64",
    "load_changes_per_rule": "Int64", "deviations_n": "Int64", "deviations": STRING,
}
DEVIATION_SCHEMA = {
    "participant": STRING, "arm": "Int64", "kind": STRING, "instance": "Int64", "field": STRING,
    "week": "Int64", "date": DATE, "load": "Float64", "expected_load": "Float64",
    "description": STRING,
}
WEEK_DESCRIPTIONS = {
    "participant": {"label": "Participant pseudonym", "source_field": "record_id"},
    "arm": {"label": "Study arm number", "source_field": "redcap_arm"},
    "week": {"label": "Training week (1 = the first 7 days from the start of training)"},
    "week_start": {"label": "First day of the training week"},
    "week_end": {"label": "Last day of the training week"},
    "sessions_prescribed": {"label": "Sessions the protocol prescribes in this week"},
    "sessions_done": {"label": "Diary entries dated in this week"},
    "adherence_pct": {"label": "sessions_done / sessions_prescribed x 100", "unit": "%"},
    "breaths_total": {"label": "Breaths recorded in the week", "unit": "{breaths}"},
    "breaths_mean": {"label": "Mean breaths per session", "unit": "{breaths}"},
    "load_first": {"label": "Load of the week's first session", "unit": "cm[H2O]"},
    "load_last": {"label": "Load of the week's last session", "unit": "cm[H2O]"},
    "load_max": {"label": "Highest load of the week", "unit": "cm[H2O]"},
    "load_changes": {"label": "Sessions whose load differs from the previous session's"},
    "load_changes_per_rule": {"label": "Load changes the progression rule called for"},
    "deviations_n": {"label": "Protocol deviations in the week"},
    "deviations": {"label": "Protocol deviations in the week, kind@diary instance, '; '-joined"},
}
DEVIATION_DESCRIPTIONS = {
    "participant": WEEK_DESCRIPTIONS["participant"],
    "arm": WEEK_DESCRIPTIONS["arm"],
    "kind": {"label": "Deviation kind", "allowed": "load_raised_without_rule | load_not_raised | "
             "load_not_per_rule | start_load_not_used | start_load_not_per_rule | missed_week"},
    "instance": {"label": "Diary repeat instance where the deviation shows"},
    "field": {"label": "REDCap field that shows the deviation"},
    "week": {"label": "Training week of that diary entry"},
    "date": {"label": "Date of that diary entry"},
    "load": {"label": "Load used", "unit": "cm[H2O]"},
    "expected_load": {"label": "Load the progression rule prescribed", "unit": "cm[H2O]"},
    "description": {"label": "What happened"},
}


# -- the rule -----------------------------------------------------------------------------------


def round_half_up(value: float) -> int:
    """Round as a clinician and REDCap's round() do (2.5 -> 3), unlike Python's round()."""
    return math.floor(value + 0.5)


def starting_load(mip: float, rule: ProgressionRule) -> int:
    return round_half_up(rule.start_fraction * mip)


def raised_load(load: int, rule: ProgressionRule) -> int:
    return max(load + rule.min_step, round_half_up(load * rule.raise_factor))


def expected_loads(start: int, loads: Sequence[float], exertions: Sequence[float | None],
                   rule: ProgressionRule) -> list[int]:
    """The load the rule prescribes for each session, replayed on the loads actually used."""
    if len(loads) != len(exertions):
        raise ValueError(f"{len(loads)} loads but {len(exertions)} exertion ratings")
    expected: list[int] = []
    last_load: float | None = None
    last_exertion: float | None = None
    streak, raise_due = 0, False
    for load, exertion in zip(loads, exertions, strict=True):
        if last_load is None:
            expected.append(start)
        else:
            expected.append(raised_load(int(last_load), rule) if raise_due else int(last_load))
        decreased = (load == last_load and exertion is not None and last_exertion is not None
                     and exertion < last_exertion)
        streak = streak + 1 if decreased else 0
        raise_due = streak >= rule.decreases_to_raise
        if raise_due:
            streak = 0
        last_load, last_exertion = load, exertion
    return expected


# -- one participant ----------------------------------------------------------------------------


@dataclass
class _Session:
    instance: int
    date: date | None  # None when outside the training window
    load: float | None
    exertion: float | None
    breaths: float | None


@dataclass
class _Start:
    participant: str
    arm: int | None
    day: date
    load: float | None
    mip: float | None


def _deviation(start: _Start, kind: str, field: str, session: _Session | None, description: str,
               expected: float | None = None) -> dict:
    week = (session.date - start.day).days // 7 + 1 if session and session.date else None
    return {
        "participant": start.participant, "arm": start.arm, "kind": kind,
        "instance": session.instance if session else None, "field": field, "week": week,
        "date": session.date if session else None,
        "load": session.load if session else start.load, "expected_load": expected,
        "description": description,
    }


def _load_deviations(start: _Start, sessions: list[_Session], cfg: TrainingConfig
                     ) -> tuple[list[dict], list[int]]:
    """Deviations from the progression rule, and the expected load of every session."""
    out: list[dict] = []
    rule = cfg.rule
    if start.mip is not None and start.load is not None \
            and start.load != starting_load(start.mip, rule):
        out.append(_deviation(
            start, "start_load_not_per_rule", cfg.start_load_field, None,
            f"start load {start.load:g} cmH2O is not {rule.start_fraction:.0%} of MIP "
            f"{start.mip:g} ({starting_load(start.mip, rule)})",
            starting_load(start.mip, rule)))
    timed = [s for s in sessions if s.load is not None]
    if not timed:
        return out, []
    first = int(start.load) if start.load is not None else int(timed[0].load)
    loads = [s.load for s in timed]
    expected = expected_loads(first, loads, [s.exertion for s in timed], rule)
    for i, (s, want) in enumerate(zip(timed, expected, strict=True)):
        if s.load == want:
            continue
        previous = loads[i - 1] if i else None
        if previous is None:
            kind, text = "start_load_not_used", f"first session at {s.load:g} cmH2O, " \
                f"prescribed {want} cmH2O"
        elif want == previous and s.load > previous:
            kind = "load_raised_without_rule"
            text = f"load raised {previous:g} -> {s.load:g} cmH2O although the rule did not apply"
        elif want > previous and s.load == previous:
            kind = "load_not_raised"
            text = f"rule called for {want} cmH2O but the load stayed at {previous:g}"
        else:
            kind = "load_not_per_rule"
            text = f"load {s.load:g} cmH2O, the rule called for {want} cmH2O"
        out.append(_deviation(start, kind, cfg.load_field, s, text, want))
    return out, expected


def _gap_deviations(start: _Start, sessions: list[_Session], cfg: TrainingConfig) -> list[dict]:
    out = []
    dated = sorted((s for s in sessions if s.date is not None), key=lambda s: (s.date, s.instance))
    for before, after in zip(dated, dated[1:], strict=False):
        missed = (after.date - before.date).days - 1
        if missed >= MISSED_WEEK_DAYS:
            first = (before.date - start.day).days + 1
            last = (after.date - start.day).days - 1
            out.append(_deviation(
                start, "missed_week", cfg.date_field, after,
                f"no training on days {first}-{last} of the training period"))
    return out


def _weeks(start: _Start, sessions: list[_Session], expected: list[int], deviations: list[dict],
           cfg: TrainingConfig) -> list[dict]:
    n_weeks = math.ceil(cfg.training_days / 7)
    rule_change = {}
    timed = [s for s in sessions if s.load is not None]
    for i, s in enumerate(timed):
        changed = i > 0 and s.load != timed[i - 1].load
        rule_change[s.instance] = (changed, changed and s.load == expected[i])
    # Sessions by week, in entry order: one pass instead of one scan of every session per week.
    by_week: dict[int, list[_Session]] = {}
    for s in sessions:
        if s.date is not None and s.date >= start.day:
            by_week.setdefault((s.date - start.day).days // 7 + 1, []).append(s)
    rows = []
    for week in range(1, n_weeks + 1):
        first_day = start.day + timedelta(days=7 * (week - 1))
        days = min(7, cfg.training_days - 7 * (week - 1))
        in_week = by_week.get(week, [])
        breaths = [s.breaths for s in in_week if s.breaths is not None]
        loads = [s.load for s in in_week if s.load is not None]
        prescribed = round_half_up(cfg.sessions_per_week * days / 7)
        found = [d for d in deviations if d["week"] == week]
        rows.append({
            "participant": start.participant, "arm": start.arm, "week": week,
            "week_start": first_day, "week_end": first_day + timedelta(days=days - 1),
            "sessions_prescribed": prescribed, "sessions_done": len(in_week),
            "adherence_pct": len(in_week) / prescribed * 100 if prescribed else None,
            "breaths_total": int(sum(breaths)) if breaths else None,
            "breaths_mean": sum(breaths) / len(breaths) if breaths else None,
            "load_first": loads[0] if loads else None, "load_last": loads[-1] if loads else None,
            "load_max": max(loads) if loads else None,
            "load_changes": sum(rule_change.get(s.instance, (False, False))[0] for s in in_week),
            "load_changes_per_rule": sum(
                rule_change.get(s.instance, (False, False))[1] for s in in_week),
            "deviations_n": len(found),
            "deviations": "; ".join(f"{d['kind']}@{d['instance']}" for d in found) or None,
        })
    return rows


# -- the tables ---------------------------------------------------------------------------------


def _rows(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as dicts of plain values (NA -> None), via one object array:
    to_dict("records") is several times slower."""
    names = list(frame.columns)
    return [dict(zip(names, values, strict=True)) for values in plain_values(frame)]


def _starts(prescription: pd.DataFrame, cfg: TrainingConfig,
            pseudonymise: Pseudonymise) -> dict[str, _Start]:
    starts: dict[str, _Start] = {}
    for row in _rows(prescription):
        day = plain(row.get(cfg.start_date_field))
        if day is None:
            log.warning("record %s: no %s, training adherence not computed",
                        row["record_id"], cfg.start_date_field)
            continue
        load, mip = plain(row.get(cfg.start_load_field)), plain(row.get(cfg.start_mip_field))
        starts[row["record_id"]] = _Start(
            pseudonymise(row["record_id"]), plain(row.get("redcap_arm")), day,
            None if load is None else float(load), None if mip is None else float(mip))
    return starts


def _sessions(diary: pd.DataFrame, cfg: TrainingConfig,
              starts: Mapping[str, _Start]) -> dict[str, list[_Session]]:
    found: dict[str, list[_Session]] = {}
    if diary.empty:
        return found
    # Only the columns a session needs become Python values (the diary is the largest table).
    wanted = (cfg.date_field, cfg.load_field, cfg.exertion_field, cfg.breaths_field)
    names = list(dict.fromkeys(["record_id", "redcap_repeat_instance",
                                *(f for f in wanted if f in diary.columns)]))
    at = [names.index(f) if f in names else None for f in wanted]
    date_at, value_at = at[0], at[1:]
    limit = cfg.training_days + WINDOW_GRACE_DAYS
    for row in plain_values(diary[names]):
        record = row[0]
        start = starts.get(record)
        if start is None:
            continue
        day = None if date_at is None else row[date_at]
        offset = (day - start.day).days if day is not None else None
        if offset is None or not 0 <= offset <= limit:
            log.warning("record %s, diary instance %s: date %s outside the training window",
                        record, row[1], day)
            day = None
        values = [None if i is None else row[i] for i in value_at]
        found.setdefault(record, []).append(_Session(
            int(row[1] or 0), day, *(None if v is None else float(v) for v in values)))
    for sessions in found.values():
        sessions.sort(key=lambda s: s.instance)
    return found


def training_tables(tables: Mapping[str, pd.DataFrame], cfg: TrainingConfig, *,
                    pseudonymise: Pseudonymise = identity
                    ) -> tuple[AnalysisTable, AnalysisTable]:
    """(training_adherence, training_deviations) from the prescription and diary tables."""
    empty = pd.DataFrame({"record_id": pd.Series(dtype=STRING)})
    starts = _starts(tables.get(cfg.start_form, empty), cfg, pseudonymise)
    sessions = _sessions(tables.get(cfg.diary_form, empty), cfg, starts)
    weeks: list[dict] = []
    deviations: list[dict] = []
    for record in sorted(starts, key=natural_order):
        start, done = starts[record], sessions.get(record, [])
        found, expected = _load_deviations(start, done, cfg)
        found += _gap_deviations(start, done, cfg)
        found.sort(key=lambda d: (d["instance"] or 0, d["kind"]))
        deviations += found
        weeks += _weeks(start, done, expected, found, cfg)
    return (
        AnalysisTable("training_adherence", typed_frame(weeks, WEEK_SCHEMA),
                      {k: dict(v) for k, v in WEEK_DESCRIPTIONS.items()},
                      "Per participant and training week: sessions, breaths, loads, deviations"),
        AnalysisTable("training_deviations", typed_frame(deviations, DEVIATION_SCHEMA),
                      {k: dict(v) for k, v in DEVIATION_DESCRIPTIONS.items()},
                      "Protocol deviations of the home training, one row each"),
    )
