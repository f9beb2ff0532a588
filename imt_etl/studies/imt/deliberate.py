"""Deliberate data-entry errors planted in the synthetic IMT data, each with the rule to catch it.

The validation layer is tested against this manifest: every planted value must be caught by the
rule named in `intended_rule` (other rules may flag it too, e.g. SpO2 150 also breaks the
dictionary's max of 100), and clean data must pass.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from imt_etl.redcap.model import ProjectDefinition, RecordRow
from imt_etl.studies.imt.numbers import num


@dataclass(frozen=True)
class DeliberateError:
    record: str
    event: str
    instrument: str
    repeat_instance: int | None  # None on non-repeating forms
    field: str
    value: str  # the wrong value as stored
    intended_rule: str  # stable id of the validation rule that must catch it
    description: str


RowKey = tuple[str, str, str, int | None]
Index = dict[RowKey, RecordRow]


def _set(index: Index, key: RowKey, instrument: str, field: str, value: str, rule: str,
         description: str) -> DeliberateError:
    index[key].values[field] = value
    return DeliberateError(key[0], key[1], instrument, key[3], field, value, rule, description)




def _best_mip(index: Index, record: str, rng: random.Random) -> list[DeliberateError]:
    row = index[(record, "screening_arm_1", "", None)].values
    trials = [int(row[f"mip_kh2_{t}"]) for t in (1, 2, 3)]
    wrong = str(max(trials) - rng.randint(3, 8))
    return [_set(index, (record, "screening_arm_1", "", None), "respiratory_muscle_strength",
                 "mip_kh2_best", wrong, "imt.best_mip_equals_max_trial",
                 f"best MIP {wrong} typed although the trials were {trials}")]


def _fev1_gt_fvc(index: Index, record: str, rng: random.Random) -> list[DeliberateError]:
    key = (record, "baseline_arm_1", "", None)
    row = index[key].values
    fev1, fvc = row["fev1_l"], row["fvc_l"]
    row["fvc_l"] = fev1  # the two values were typed into each other's boxes
    row["fev1_fvc"] = num(float(fvc) / float(fev1) * 100)  # REDCap recalculates
    return [_set(index, key, "spirometry", "fev1_l", fvc, "imt.fev1_le_fvc",
                 f"FEV1 and FVC swapped: FEV1 {fvc} L > FVC {fev1} L")]


def _thickness_swapped(index: Index, record: str, rng: random.Random) -> list[DeliberateError]:
    key = (record, "month_3_arm_1", "", None)
    row = index[key].values
    exp, insp = row["thick_exp_mm"], row["thick_insp_mm"]
    row["thick_exp_mm"] = insp
    row["thickening_fraction"] = num((float(exp) - float(insp)) / float(insp) * 100)
    return [_set(index, key, "diaphragm_ultrasound", "thick_insp_mm", exp,
                 "imt.thickness_insp_ge_exp",
                 f"end-inspiration {exp} mm < end-expiration {insp} mm (values swapped)")]


def _simple(event: str, instrument: str, field: str, value: str | Callable[[str], str],
            rule: str, description: str) -> Callable[[Index, str, random.Random], list]:
    """An error that overwrites one value of a non-repeating form."""

    def plant(index: Index, record: str, rng: random.Random) -> list[DeliberateError]:
        key = (record, event, "", None)
        old = index[key].values[field]
        new = value(old) if callable(value) else value
        return [_set(index, key, instrument, field, new, rule, description.format(old=old))]

    return plant


def _diary_instance(index: Index, record: str, rng: random.Random) -> RowKey:
    count = sum(1 for k in index if k[0] == record and k[2] == "training_diary")
    return (record, "training_arm_1", "training_diary", rng.randint(2, count - 1))


def _diary_breaths(index: Index, record: str, rng: random.Random) -> list[DeliberateError]:
    key = _diary_instance(index, record, rng)
    return [_set(index, key, "training_diary", "diary_breaths", "300",
                 "imt.diary_breaths_range", "300 breaths in one session (extra zero typed)")]


def _diary_date(index: Index, record: str, rng: random.Random) -> list[DeliberateError]:
    key = _diary_instance(index, record, rng)
    real = date.fromisoformat(index[key].values["diary_date"])
    wrong = (real - timedelta(days=365)).isoformat()
    return [_set(index, key, "training_diary", "diary_date", wrong, "imt.diary_date_in_training",
                 f"diary dated {wrong}, a year before the training period (was {real})")]


def _visit_order(index: Index, record: str, rng: random.Random) -> list[DeliberateError]:
    baseline = date.fromisoformat(index[(record, "baseline_arm_1", "", None)].values["rms_date"])
    wrong = (baseline - timedelta(days=rng.randint(5, 20))).isoformat()
    return [_set(index, (record, "month_3_arm_1", "", None), "respiratory_muscle_strength",
                 "rms_date", wrong, "imt.visit_order",
                 f"month-3 MIP dated {wrong}, before the baseline visit {baseline}")]


PLANTERS: tuple[Callable[[Index, str, random.Random], list[DeliberateError]], ...] = (
    _best_mip,
    _fev1_gt_fvc,
    _thickness_swapped,
    _simple("baseline_arm_1", "six_minute_walk", "spo2_post", "150", "imt.spo2_range",
            "SpO2 after the walk 150 % (was {old})"),
    _simple("month_6_arm_1", "six_minute_walk", "mwt_distance_m", "1500", "imt.6mwd_range",
            "six-minute walk distance 1500 m (was {old})"),
    _simple("screening_arm_1", "six_minute_walk", "borg_dysp_post", "-1", "imt.borg_cr10_range",
            "Borg dyspnoea -1 after the walk (was {old})"),
    _diary_breaths,
    _diary_date,
    _visit_order,
    _simple("month_3_arm_1", "six_minute_walk", "hr_pre", lambda old: old[:-1] + "O",
            "dict.integer", "heart rate typed with a letter O for the last digit (was {old})"),
    _simple("month_6_arm_1", "diaphragm_ultrasound", "dus_date",
            lambda old: old[:4] + "-02-30", "dict.date", "impossible date (was {old})"),
    _simple("baseline_arm_1", "myositis_core_set", "ck_unit", "3", "dict.choice",
            "CK unit code 3 is not a choice (was {old})"),
)


def inject_errors(project: ProjectDefinition, seed: int) -> list[DeliberateError]:
    """Plant one error of each kind, on participants who completed the study, and list them."""
    index: Index = {row.key: row for row in project.rows}
    completers = [r for r in project.record_ids() if (r, "month_6_arm_1", "", None) in index]
    if not completers:
        return []
    rng = random.Random(f"imt:{seed}:errors")
    # Distinct participants while there are enough; small projects reuse them (other fields).
    chosen = rng.sample(completers, min(len(completers), len(PLANTERS)))
    errors: list[DeliberateError] = []
    for i, plant in enumerate(PLANTERS):
        errors.extend(plant(index, chosen[i % len(chosen)], rng))
    return errors
