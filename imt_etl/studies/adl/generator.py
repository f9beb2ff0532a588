"""Seeded synthetic data for the ADL training demo project (ISRCTN35925199's broad pattern).

The published pattern (Arthritis Res Ther 2021;23:173): 57 patients, intervention 30 / control
27; over weeks 0-24 the intervention group improves (MMT-8 about +26 %, FI-2 about +135 %, HAQ
-39 %, BDI-II -26 %, posturography force vector area -11 %, basal metabolic rate +2 %) while the
control group slowly deteriorates; the effect partly fades by week 48; inflammatory markers do
not rise; 27 and 23 patients complete the programme (3 and 4 drop out). Each participant has its
own random stream, so the output is deterministic for a seed. All persons are invented.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from datetime import date, timedelta

from imt_etl.redcap.model import ProjectDefinition, RecordRow
from imt_etl.studies.adl.design import (
    ASSESSMENT_FORMS,
    CONTROL,
    FORM_DATE_FIELDS,
    INTERVENTION,
    WEEKS,
    empty_project,
    event_name,
)
from imt_etl.studies.imt.numbers import num

log = logging.getLogger(__name__)

FIRST_ENROLMENT = date(2017, 1, 9)
RECRUITMENT_DAYS = 400
# Fraction of the published week-24 effect reached at each week, per arm (1.0 = full effect).
EFFECT = {INTERVENTION: {0: 0.0, 12: 0.55, 24: 1.0, 48: 0.6},
          CONTROL: {0: 0.0, 12: -0.45, 24: -1.0, 48: -1.3}}
# Relative change at week 24 in the intervention group; the control group deteriorates by a
# quarter of it (the paper reports deterioration, not its size).
GAIN = {"mmt": 0.26, "fi2": 1.35, "haq": -0.39, "bdi": -0.26, "fis": -0.20, "fva": -0.11,
        "bmr": 0.02, "ecm_bcm": -0.03, "vas": -0.30, "health": 0.10}
CONTROL_SHARE = 0.25
DROPOUTS = {INTERVENTION: (3, 30), CONTROL: (4, 27)}  # (dropouts, arm size) in the paper
MMT_GROUPS = ("mmt_neck_flexors", "mmt_deltoid", "mmt_biceps", "mmt_wrist_ext",
              "mmt_gluteus_max", "mmt_gluteus_med", "mmt_quadriceps", "mmt_ankle_dorsi")
FI2_TASKS = (("fi2_shoulder_r", 60), ("fi2_shoulder_l", 60), ("fi2_hip_r", 60),
             ("fi2_hip_l", 60), ("fi2_step_r", 60), ("fi2_step_l", 60), ("fi2_heel_r", 120),
             ("fi2_heel_l", 120), ("fi2_toe_r", 120), ("fi2_toe_l", 120), ("fi2_head", 60))
HAQ_CATEGORIES = ("haq_dressing", "haq_arising", "haq_eating", "haq_walking", "haq_hygiene",
                  "haq_reach", "haq_grip", "haq_activities")
FIS_DOMAINS = {**{i: "cognitive" for i in (1, 4, 8, 12, 13, 15, 16, 24, 25, 31)},
               **{i: "physical" for i in (6, 7, 10, 14, 17, 20, 22, 23, 30, 35)}}
# RAND-36: (number of options, True when code 1 is the best answer) per item.
SF36_SHAPE = {
    **{i: (5, True) for i in (1, 2, 20, 22, 34, 36)}, **{i: (3, False) for i in range(3, 13)},
    **{i: (2, False) for i in range(13, 20)}, **{i: (6, True) for i in (21, 23, 26, 27, 30)},
    **{i: (6, False) for i in (24, 25, 28, 29, 31)}, **{i: (5, False) for i in (32, 33, 35)},
}


@dataclass
class Person:
    """A participant's fixed traits and visit plan."""

    record: str
    arm: int
    dropout_after: int | None  # last attended week for a dropout, else None
    sex: str
    dob: date
    week0: date
    strength: float  # mean MMT group score at week 0 (0-10)
    endurance: float  # FI-2 repetitions per task at week 0
    disability: float  # HAQ category mean at week 0 (0-3)
    mood: float  # BDI-II item mean at week 0 (0-3)
    fatigue: float  # FIS item mean at week 0 (0-4)
    health: float  # SF-36 latent health 0-1
    ck_ukat: float  # CK at week 0
    bmr: float
    ecm_bcm: float
    fva: float

    def factor(self, key: str, week: int) -> float:
        """1 + the relative change of measure `key` at `week` for this participant's arm."""
        share = 1.0 if self.arm == INTERVENTION else CONTROL_SHARE
        return 1.0 + GAIN[key] * share * EFFECT[self.arm][week]


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _person(rng: random.Random, record: str, arm: int, dropout_after: int | None) -> Person:
    week0 = FIRST_ENROLMENT + timedelta(days=rng.randint(0, RECRUITMENT_DAYS))
    age = rng.randint(28, 75)
    return Person(
        record=record, arm=arm, dropout_after=dropout_after,
        sex="1" if rng.random() < 0.7 else "2",  # myositis is about twice as common in women
        dob=week0 - timedelta(days=round(age * 365.25) + rng.randint(0, 364)),
        week0=week0, strength=rng.uniform(5.6, 7.6), endurance=rng.uniform(8, 25),
        disability=rng.uniform(0.5, 1.6), mood=rng.uniform(0.5, 1.1),
        fatigue=rng.uniform(1.0, 2.2), health=rng.uniform(0.35, 0.65),
        ck_ukat=math.exp(rng.gauss(1.0, 0.8)), bmr=rng.gauss(1350, 180),
        ecm_bcm=rng.uniform(0.95, 1.35), fva=rng.uniform(150, 600),
    )


def _mmt(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    mean = p.strength * p.factor("mmt", week)
    scores = [int(clamp(round(rng.gauss(mean, 0.8)), 0, 10)) for _ in MMT_GROUPS]
    values = {name: str(s) for name, s in zip(MMT_GROUPS, scores, strict=True)}
    values["mmt8_total"] = str(sum(scores))
    return values


def _fi2(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    reps = {name: int(clamp(round(rng.gauss(p.endurance * p.factor("fi2", week), 3)
                                  * top / 60), 0, top)) for name, top in FI2_TASKS}
    return {**{k: str(v) for k, v in reps.items()}, "fi2_total": str(sum(reps.values()))}


def _haq(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    level = p.disability * p.factor("haq", week)
    cats = [int(clamp(round(rng.gauss(level, 0.45)), 0, 3)) for _ in HAQ_CATEGORIES]
    values = {name: str(c) for name, c in zip(HAQ_CATEGORIES, cats, strict=True)}
    values["haq_di"] = num(sum(cats) / len(cats), 3)
    return values


def _sf36(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    health = clamp(p.health * p.factor("health", week), 0, 1)
    values: dict[str, str] = {}
    for item, (options, one_is_best) in SF36_SHAPE.items():
        step = round(clamp(rng.gauss(health, 0.18), 0, 1) * (options - 1))
        values[f"sf36_{item:02d}"] = str(options - step if one_is_best else step + 1)
    return values


def _fis(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    level = p.fatigue * p.factor("fis", week)
    items = {i: int(clamp(round(rng.gauss(level, 0.7)), 0, 4)) for i in range(1, 41)}
    values = {f"fis_{i:02d}": str(v) for i, v in items.items()}
    for domain in ("cognitive", "physical", "psychosocial"):
        values[f"fis_{domain}"] = str(sum(v for i, v in items.items()
                                          if FIS_DOMAINS.get(i, "psychosocial") == domain))
    values["fis_total"] = str(sum(items.values()))
    return values


def _bdi(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    level = p.mood * p.factor("bdi", week)
    items = [int(clamp(round(rng.gauss(level, 0.4)), 0, 3)) for _ in range(21)]
    values = {f"bdi_{i:02d}": str(v) for i, v in enumerate(items, 1)}
    values["bdi2_total"] = str(sum(items))
    return values


def _exertion(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    return {"borg_cr10": num(clamp(rng.gauss(4.0, 1.2), 0, 10), 1)}


def _labs(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    # No systematic change: the paper found no rise in inflammatory markers.
    def lognormal(median: float, sd: float) -> float:
        return median * math.exp(rng.gauss(0, sd))

    return {
        "esr": str(max(2, round(lognormal(14, 0.5)))), "crp": num(lognormal(3.0, 0.8), 1),
        "ck_ukat": num(p.ck_ukat * math.exp(rng.gauss(0, 0.25)), 2),
        "ld_ukat": num(lognormal(3.4, 0.25), 2), "myoglobin": num(lognormal(70, 0.6), 0),
        "il1b": num(lognormal(0.8, 0.5), 2), "il6": num(lognormal(3.5, 0.6), 1),
        "tnf": num(lognormal(8.0, 0.4), 1), "il8": num(lognormal(14, 0.5), 1),
        "mcp1": num(lognormal(320, 0.35), 0),
    }


def _body(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    ecm = rng.uniform(18, 30)
    ratio = p.ecm_bcm * p.factor("ecm_bcm", week) * math.exp(rng.gauss(0, 0.01))
    bcm = ecm / ratio
    return {"bmr_kcal": str(round(p.bmr * p.factor("bmr", week) + rng.gauss(0, 8))),
            "ecm_kg": num(ecm, 1), "bcm_kg": num(bcm, 1),
            "ecm_bcm": num(float(num(ecm, 1)) / float(num(bcm, 1)), 2)}


def _posturography(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    eyes_open = p.fva * p.factor("fva", week) * math.exp(rng.gauss(0, 0.08))
    return {"fva_eo": num(eyes_open, 1), "fva_ec": num(eyes_open * rng.uniform(1.3, 2.0), 1)}


def _activity(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    f = p.factor("vas", week)
    return {"phys_global_vas": num(clamp(rng.gauss(3.0, 1.0) * f, 0, 10), 1),
            "pat_global_vas": num(clamp(rng.gauss(4.0, 1.3) * f, 0, 10), 1),
            "extramusc_vas": num(clamp(rng.gauss(1.5, 0.8) * f, 0, 10), 1)}


BUILDERS = dict(zip(ASSESSMENT_FORMS, (_mmt, _fi2, _haq, _sf36, _fis, _bdi, _exertion, _labs,
                                       _body, _posturography, _activity), strict=True))


def _enrollment(rng: random.Random, p: Person) -> dict[str, str]:
    return {
        "consent_date": p.week0.isoformat(), "dob": p.dob.isoformat(), "sex": p.sex,
        "diagnosis": str(rng.choice((1, 1, 2, 2, 3, 4, 5))),
        "disease_duration_y": num(rng.uniform(0.5, 15), 1),
        "inc_iim": "1", "inc_age18": "1", "inc_mmt64": "1", "inc_stable": "1",
        "exc_contraindication": "0", "eligible": "1", "enrollment_complete": "2",
    }


def _visit(rng: random.Random, p: Person, week: int) -> dict[str, str]:
    day = (p.week0 + timedelta(days=week * 7 + (rng.randint(-5, 5) if week else 0))).isoformat()
    values: dict[str, str] = {}
    for form, build in BUILDERS.items():
        values[FORM_DATE_FIELDS[form]] = day
        values.update(build(rng, p, week))
        values[f"{form}_complete"] = "2"
    return values


def _participant(p: Person, rng: random.Random) -> list[RecordRow]:
    rows = []
    last_week = WEEKS[-1][0]
    for week, _ in WEEKS:
        if p.dropout_after is not None and week > p.dropout_after:
            continue
        values = _visit(rng, p, week)
        if week == 0:
            values = {**_enrollment(rng, p), **values}
        rows.append((week, values))
    end = {"withdrawn": "0", "completion_date": rows[-1][1]["mmt_date"],
           "study_completion_complete": "2"}
    if p.dropout_after is not None:
        left = p.week0 + timedelta(days=p.dropout_after * 7 + rng.randint(14, 60))
        end = {"withdrawn": "1", "withdrawal_date": left.isoformat(),
               "withdrawal_reason": rng.choice(("1", "3", "4")), "completion_date":
               left.isoformat(), "study_completion_complete": "2"}
    if rows[-1][0] == last_week:
        rows[-1][1].update(end)
    else:
        rows.append((last_week, end))
    return [RecordRow(p.record, event_name(week, p.arm), values=values) for week, values in rows]


def _plan(n: int, seed: int) -> list[tuple[str, int, int | None]]:
    """(record, arm, dropout week) per participant: the paper's 30/27 split and dropout rates."""
    n_intervention = round(n * 30 / 57)
    rng = random.Random(f"adl:{seed}:plan")
    arms = [INTERVENTION] * n_intervention + [CONTROL] * (n - n_intervention)
    rng.shuffle(arms)  # consecutive, non-randomised enrolment: arms interleave over time
    width = max(3, len(str(n)))
    plan: list[tuple[str, int, int | None]] = [
        (str(i + 1).zfill(width), arm, None) for i, arm in enumerate(arms)]
    for arm, (dropped, size) in DROPOUTS.items():
        members = [i for i, (_, a, _) in enumerate(plan) if a == arm]
        for i in rng.sample(members, min(len(members), round(len(members) * dropped / size))):
            plan[i] = (plan[i][0], arm, rng.choice((0, 12)))
    return plan


def generate_project(n_participants: int = 57, seed: int = 2017) -> ProjectDefinition:
    """The ADL demo project with `n_participants` synthetic participants (30/27 split at 57)."""
    if n_participants < 2:
        raise ValueError(f"n_participants must be at least 2 (got {n_participants})")
    project = empty_project()
    for record, arm, dropout in _plan(n_participants, seed):
        rng = random.Random(f"adl:{seed}:{record}")
        project.rows.extend(_participant(_person(rng, record, arm, dropout), rng))
    log.info("generated %d participants, %d rows", n_participants, len(project.rows))
    return project
