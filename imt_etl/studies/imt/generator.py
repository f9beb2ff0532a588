"""Seeded synthetic data for the IMT reference project: realistic participants, known flaws.

Every participant gets its own random stream (seeded from the study seed and its index), so the
output is deterministic for a seed and cheap to make for thousands of participants (plain dicts,
no pandas). Protocol deviations are simulated while the diary is written; deliberate data-entry
errors are injected afterwards (see deliberate.py) and both are returned as manifests.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from imt_etl.redcap.model import ProjectDefinition, RecordRow
from imt_etl.studies.imt.deliberate import DeliberateError, inject_errors
from imt_etl.studies.imt.design import ASSESSMENT_EVENTS, empty_project
from imt_etl.studies.imt.numbers import num
from imt_etl.studies.imt.progression import LoadProgression, round_half_up, starting_load

log = logging.getLogger(__name__)

FIRST_SCREENING = date(2024, 8, 12)  # study start on ClinicalTrials.gov
RECRUITMENT_DAYS = 380
TRAINING_DAYS = 90
MISSED_DAY_RATE = 0.10
CALL_EVERY_DAYS = 14
DEVIATION_KINDS = ("load_raised_without_rule", "load_not_raised", "missed_week")

FEMALE_NAMES = ("Anna", "Maria", "Katarzyna", "Małgorzata", "Agnieszka", "Barbara", "Ewa",
                "Krystyna", "Elżbieta", "Zofia", "Joanna", "Łucja")
MALE_NAMES = ("Piotr", "Krzysztof", "Andrzej", "Tomasz", "Paweł", "Jan", "Michał", "Marek",
              "Grzegorz", "Józef", "Łukasz", "Adam")
SURNAMES = (("Nowak", "Nowak"), ("Kowalska", "Kowalski"), ("Wiśniewska", "Wiśniewski"),
            ("Wójcik", "Wójcik"), ("Kamińska", "Kamiński"), ("Lewandowska", "Lewandowski"),
            ("Zielińska", "Zieliński"), ("Szymańska", "Szymański"), ("Dąbrowska", "Dąbrowski"),
            ("Kozłowska", "Kozłowski"), ("Mazur", "Mazur"), ("Krawczyk", "Krawczyk"))
ASCII = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "acelnoszzACELNOSZZ")
AE_TERMS = (("Dizziness during training", 1, 4), ("Chest tightness", 1, 3),
            ("Upper respiratory tract infection", 2, 1), ("Ear discomfort", 1, 3),
            ("Headache", 1, 2), ("Myositis flare", 2, 1), ("Fall at home", 2, 1))
OTHER_SYMPTOMS = ("Headache", "Dry mouth", "Ear pressure", "Sore throat")


@dataclass(frozen=True)
class ProtocolDeviation:
    """A deliberate departure from the training protocol, at a diary entry of one participant."""

    record: str
    kind: str  # one of DEVIATION_KINDS
    repeat_instance: int  # the training_diary instance where the deviation shows
    field: str
    description: str
    event: str = "training_arm_1"
    instrument: str = "training_diary"


@dataclass
class GeneratedStudy:
    project: ProjectDefinition
    errors: list[DeliberateError] = field(default_factory=list)
    deviations: list[ProtocolDeviation] = field(default_factory=list)


def iso(day: date) -> str:
    return day.isoformat()


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass
class Plan:
    """What is decided for a participant before the simulation runs."""

    index: int
    record: str
    dropout: bool = False
    deviation: str = ""


@dataclass
class Person:
    """The latent state a participant's visits are drawn from."""

    female: bool
    age: int
    mip: float  # true MIP at screening, cmH2O
    fvc: float
    fss_level: float
    health: float  # 0..1, drives SF-36 answers
    dates: dict[str, date]
    mip_at: dict[str, float]
    improvement: dict[str, float]  # 0 at screening, ~1 at month 3
    gain: float  # relative MIP gain over the training period


def _dates(rng: random.Random, plan: Plan, n: int) -> dict[str, date]:
    screening = FIRST_SCREENING + timedelta(plan.index * RECRUITMENT_DAYS // max(n, 1))
    screening += timedelta(rng.randint(0, 4))
    baseline = screening + timedelta(90 + rng.randint(-6, 6))
    return {
        "screening_arm_1": screening,
        "baseline_arm_1": baseline,
        "month_3_arm_1": baseline + timedelta(TRAINING_DAYS + rng.randint(0, 7)),
        "month_6_arm_1": baseline + timedelta(180 + rng.randint(-14, 14)),
        "month_12_arm_1": baseline + timedelta(365 + rng.randint(-21, 21)),
    }


def _person(rng: random.Random, plan: Plan, n: int) -> Person:
    female = rng.random() < 0.62  # IIM is more common in women
    mip = clamp(rng.gauss(70, 11), 48, 95)
    run_in = clamp(rng.gauss(0, 0.02), -0.05, 0.05)
    gain = rng.uniform(0.15, 0.35)
    base = mip * (1 + run_in)
    return Person(
        female=female,
        age=rng.randint(25, 75),
        mip=mip,
        fvc=(3.2 if female else 4.3) * rng.uniform(0.72, 1.0),
        fss_level=clamp(rng.gauss(4.6, 0.9), 2.0, 6.5),
        health=clamp(rng.gauss(0.5, 0.15), 0.15, 0.85),
        dates=_dates(rng, plan, n),
        mip_at={"screening_arm_1": mip, "baseline_arm_1": base,
                "month_3_arm_1": base * (1 + gain), "month_6_arm_1": base * (1 + 0.65 * gain),
                "month_12_arm_1": base * (1 + 0.4 * gain)},
        improvement={"screening_arm_1": 0.0, "baseline_arm_1": rng.uniform(-0.1, 0.1),
                     "month_3_arm_1": 1.0, "month_6_arm_1": 0.7, "month_12_arm_1": 0.45},
        gain=gain,
    )


def _enrollment(rng: random.Random, plan: Plan, p: Person) -> dict[str, str]:
    consent = p.dates["screening_arm_1"]
    dob = consent - timedelta(days=int(p.age * 365.25) + rng.randint(1, 300))
    first = rng.choice(FEMALE_NAMES if p.female else MALE_NAMES)
    last = rng.choice(SURNAMES)[0 if p.female else 1]
    height = rng.gauss(163, 6) if p.female else rng.gauss(177, 7)
    weight = clamp(rng.gauss(24.5, 3.5), 18.5, 34) * (height / 100) ** 2
    height, weight = round(height), round(weight, 1)
    values = {
        "record_id": plan.record,
        "enr_datetime": f"{iso(consent)} {rng.randint(8, 13):02d}:{rng.randint(0, 59):02d}",
        "inc_iim": "1", "inc_age18": "1", "inc_stable": "1", "inc_instructions": "1",
        "inc_consent": "1", "exc_cognitive": "0", "exc_resp_infection": "0", "exc_rmt_12m": "0",
        "exc_pneumothorax": "0", "exc_pulm_htn": "0", "exc_ear": "0", "eligible": "1",
        "first_name": first, "last_name": last,
        "mrn": f"S{rng.randint(1_000_000, 9_999_999)}",
        "phone": f"+48 5{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
        "email": f"{first}.{last}.{plan.record}@example.org".translate(ASCII).lower(),
        "sex": "1" if p.female else "2",
        "dob": iso(dob),
        "age": str(math.floor((consent - dob).days / 365.2425)),
        "height_cm": str(height), "weight_kg": num(weight),
        "bmi": num(weight / (height / 100) ** 2),
        "iim_subtype": rng.choices(("1", "2", "3", "4", "5", "6"), (30, 15, 15, 20, 12, 8))[0],
        "diagnosis_date": iso(consent - timedelta(days=rng.randint(200, 3650))),
        "consent_date": iso(consent),
        "enrollment_complete": "2",
    }
    if rng.random() < 0.2:
        values["enrollment_notes"] = "Referred from the rheumatology outpatient clinic."
    return values


def _mip_values(rng: random.Random, true_mip: float) -> dict[str, str]:
    values: dict[str, str] = {}
    for device, bias in (("kh2", 0.0), ("rpc", rng.gauss(0, 1.5))):  # devices agree closely
        trials = [round(true_mip + bias - abs(rng.gauss(0, 3))) for _ in range(3)]
        for t, value in enumerate(trials, 1):
            values[f"mip_{device}_{t}"] = str(value)
        values[f"mip_{device}_best"] = str(max(trials))
    if rng.random() < 0.7:
        mep_trials = [round(true_mip * 1.35 - abs(rng.gauss(0, 4))) for _ in range(3)]
        values["mep_done"] = "1"
        values.update({f"mep_{t}": str(v) for t, v in enumerate(mep_trials, 1)})
        values["mep_best"] = str(max(mep_trials))
    else:
        values["mep_done"] = "0"
    return values


def _spirometry(rng: random.Random, p: Person, event: str) -> dict[str, str]:
    fvc = p.fvc * (1 + 0.03 * p.improvement[event]) * rng.uniform(0.98, 1.02)
    fev1 = fvc * rng.uniform(0.72, 0.86)
    fvc_s, fev1_s = round(fvc, 2), round(fev1, 2)
    values = {
        "fev1_l": f"{fev1_s:.2f}", "fvc_l": f"{fvc_s:.2f}",
        "fev1_fvc": num(fev1_s / fvc_s * 100),
        "fivc_l": f"{fvc * rng.uniform(0.95, 1.03):.2f}",
        "irv_l": f"{fvc * rng.uniform(0.42, 0.55):.2f}",
        "pred_available": "1" if rng.random() < 0.85 else "0",
    }
    if values["pred_available"] == "1":
        predicted = 3.4 if p.female else 4.6
        values["fvc_pct_pred"] = num(fvc / predicted * 100, 0)
        values["fev1_pct_pred"] = num(fev1 / (predicted * 0.8) * 100, 0)
    return values


def _ultrasound(rng: random.Random, p: Person, event: str) -> dict[str, str]:
    exp = round(rng.uniform(1.5, 2.6), 1)
    fraction = rng.uniform(0.25, 0.55) + 0.12 * p.improvement[event]
    insp = round(max(exp * (1 + fraction), exp + 0.3), 1)
    return {
        "excursion_quiet_cm": num(rng.uniform(1.3, 2.4)),
        "excursion_deep_cm": num(rng.uniform(3.5, 6.0) + 0.4 * p.improvement[event]),
        "thick_exp_mm": num(exp), "thick_insp_mm": num(insp),
        "thickening_fraction": num((insp - exp) / exp * 100),
    }


def _walk(rng: random.Random, p: Person, event: str) -> dict[str, str]:
    spo2 = rng.randint(94, 99)
    hr = rng.randint(62, 92)
    dysp = rng.choice((0.0, 0.5, 1.0))
    fatigue = rng.choice((0.5, 1.0, 1.5, 2.0))
    stops = rng.random() < 0.1
    values = {
        "mwt_distance_m": str(round(rng.gauss(450, 50) + 30 * p.improvement[event])),
        "spo2_pre": str(spo2), "spo2_post": str(spo2 - rng.randint(0, 4)),
        "hr_pre": str(hr), "hr_post": str(hr + rng.randint(18, 45)),
        "borg_dysp_pre": num(dysp), "borg_dysp_post": num(dysp + rng.choice((2, 2.5, 3, 4))),
        "borg_fat_pre": num(fatigue), "borg_fat_post": num(fatigue + rng.choice((1, 2, 3))),
        "mwt_stops": "1" if stops else "0",
        "mwt_effort": str(rng.randint(30, 80)),
    }
    if stops:
        values["mwt_n_stops"] = str(rng.randint(1, 2))
    return values


def _fss(rng: random.Random, p: Person, event: str) -> dict[str, str]:
    level = p.fss_level - 0.6 * p.improvement[event]
    items = [int(clamp(round(rng.gauss(level, 0.8)), 1, 7)) for _ in range(9)]
    values = {f"fss_{i}": str(v) for i, v in enumerate(items, 1)}
    values["fss_score"] = num(sum(items) / 9, 2)
    return values


# RAND-36: (number of options, True when code 1 is the best answer) per item.
SF36_SHAPE = dict(sorted({
    **{i: (5, True) for i in (1, 2, 20, 22, 34, 36)}, **{i: (3, False) for i in range(3, 13)},
    **{i: (2, False) for i in range(13, 20)}, **{i: (6, True) for i in (21, 23, 26, 27, 30)},
    **{i: (6, False) for i in (24, 25, 28, 29, 31)}, **{i: (5, False) for i in (32, 33, 35)},
}.items()))


def _sf36(rng: random.Random, p: Person, event: str) -> dict[str, str]:
    health = p.health + 0.06 * p.improvement[event]
    values: dict[str, str] = {}
    for item, (options, one_is_best) in SF36_SHAPE.items():
        if item == 2:  # health change: better after training, else about the same
            code = 2 if event == "month_3_arm_1" and rng.random() < 0.6 else 3
        else:
            step = round(clamp(rng.gauss(health, 0.18), 0, 1) * (options - 1))
            code = options - step if one_is_best else step + 1
        values[f"sf36_{item:02d}"] = str(code)
    return values


def _core_set(rng: random.Random, p: Person, event: str) -> dict[str, str]:
    better = p.improvement[event]
    ck = math.exp(rng.gauss(5.6, 0.9))
    in_ukat = rng.random() < 0.15
    return {
        "mmt8_total": str(int(clamp(round(rng.gauss(68, 6) + 2 * better), 40, 80))),
        "phys_global_vas": num(clamp(rng.gauss(3.0, 1.2) - 0.4 * better, 0, 10)),
        "pat_global_vas": num(clamp(rng.gauss(4.0, 1.5) - 0.5 * better, 0, 10)),
        "haq_di": num(clamp(round(rng.gauss(0.9, 0.4) * 8) / 8 - 0.125 * round(better), 0, 3), 3),
        "ck_value": num(ck / 60, 2) if in_ukat else str(round(ck)),
        "ck_unit": "2" if in_ukat else "1",
        "extramusc_vas": num(clamp(rng.gauss(1.2, 0.8), 0, 10)),
    }


FORM_BUILDERS = (
    ("respiratory_muscle_strength", "rms_date", lambda rng, p, ev: _mip_values(rng, p.mip_at[ev])),
    ("spirometry", "spiro_date", _spirometry),
    ("diaphragm_ultrasound", "dus_date", _ultrasound),
    ("six_minute_walk", "mwt_date", _walk),
    ("fatigue_severity_scale", "fss_date", _fss),
    ("sf36", "sf36_date", _sf36),
    ("myositis_core_set", "mcs_date", _core_set),
)


def _assessments(rng: random.Random, p: Person, event: str) -> dict[str, str]:
    """All assessment forms of one visit, dated the visit day."""
    day = iso(p.dates[event])
    values: dict[str, str] = {}
    for form, date_field, build in FORM_BUILDERS:
        values[date_field] = day
        values.update(build(rng, p, event))
        # A few forms are left "unverified" rather than "complete", as in real projects.
        values[f"{form}_complete"] = "1" if rng.random() < 0.03 else "2"
    return values


def _prescription(rng: random.Random, p: Person, baseline: dict[str, str]) -> dict[str, str]:
    mip = int(baseline["mip_kh2_best"])
    load = starting_load(mip)
    return {
        "rx_date": iso(p.dates["baseline_arm_1"]), "rx_mip_source": "1", "rx_mip": str(mip),
        "rx_load_30pct": str(round_half_up(0.3 * mip)), "rx_start_load": str(load),
        "rx_device": "1", "rx_device_setting": f"{load} cmH2O", "rx_instructed": "1",
        "imt_prescription_complete": "2",
    }


@dataclass
class Session:
    day: int
    load: int
    borg: float


# Borg ratings are in 0.5 steps: format them once, not for every diary row.
BORG_TEXT = {step / 2: num(step / 2) for step in range(0, 21)}


def _borg(rng: random.Random, load: int, capacity: float, sessions_at_load: int) -> float:
    """Exertion (CR10, in 0.5 steps): higher when the load is high for the participant's current
    strength, plus a novelty effect that fades over the first sessions at a new load."""
    target = 3 + 8 * (load / capacity - 1) + math.exp(-sessions_at_load / 8)
    return clamp(round((target + rng.gauss(0, 0.35)) * 2) / 2, 0.5, 9.0)


def _training_days(rng: random.Random, plan: Plan, last_day: int) -> tuple[list[int], int]:
    """Training days (0 = baseline day), ~10 % missed; a `missed_week` plan skips 7 in a row."""
    gap_start = rng.randint(20, 65) if plan.deviation == "missed_week" else -99
    days = [
        d for d in range(last_day)
        if not gap_start <= d < gap_start + 7 and (d == 0 or rng.random() >= MISSED_DAY_RATE)
    ]
    return days, gap_start


def _simulate_diary(
    rng: random.Random, plan: Plan, start_load: int, last_day: int, gain: float
) -> tuple[list[Session], list[ProtocolDeviation]]:
    days, gap_start = _training_days(rng, plan, last_day)
    rule = LoadProgression(start_load)
    deviations: list[ProtocolDeviation] = []
    if gap_start >= 0:
        first_after = next(i for i, d in enumerate(days) if d >= gap_start + 7)
        deviations.append(ProtocolDeviation(
            plan.record, "missed_week", first_after + 1, "diary_date",
            f"no training on days {gap_start}-{gap_start + 6} of the training period"))
    deviate_from = rng.randint(10, 40)
    sessions: list[Session] = []
    load, at_load = start_load, 0
    for i, day in enumerate(days):
        wanted = rule.next_load()
        if plan.deviation and not deviations and i >= deviate_from:
            load, note = _deviate(plan.deviation, wanted, load)
            if note:
                deviations.append(ProtocolDeviation(plan.record, plan.deviation, i + 1,
                                                    "diary_load", note))
            else:
                load = wanted
        else:
            load = wanted
        at_load = 0 if not sessions or load != sessions[-1].load else at_load + 1
        # Strength (and so the load the participant copes with) grows over the training period.
        capacity = start_load * (1 + gain * day / TRAINING_DAYS)
        borg = _borg(rng, load, capacity, at_load)
        sessions.append(Session(day, load, borg))
        rule.record(load, borg)
    return sessions, deviations


def _deviate(kind: str, wanted: int, previous: int) -> tuple[int, str]:
    """The load actually used for a deviation, and its description ("" = not applicable here)."""
    if kind == "load_raised_without_rule" and wanted == previous:
        raised = round_half_up(previous * 1.1) + 1
        return raised, f"load raised {previous} -> {raised} cmH2O although the rule did not apply"
    if kind == "load_not_raised" and wanted != previous:
        return previous, f"rule called for {wanted} cmH2O but the load stayed at {previous}"
    return wanted, ""


def _diary_rows(rng: random.Random, record: str, baseline: date,
                sessions: list[Session]) -> list[RecordRow]:
    rows = []
    dates = [iso(baseline + timedelta(d)) for d in range(TRAINING_DAYS)]
    for i, s in enumerate(sessions, 1):
        values = {
            "diary_date": dates[s.day],
            "diary_breaths": "30" if rng.random() >= 0.07 else str(rng.randint(18, 29)),
            "diary_load": str(s.load), "diary_borg": BORG_TEXT[s.borg],
            "training_diary_complete": "2",
        }
        if rng.random() < 0.05:
            for code in rng.sample(("1", "2", "3", "4", "5"), rng.randint(1, 2)):
                values[f"diary_symptoms___{code}"] = "1"
            if "diary_symptoms___5" in values:
                values["diary_symptoms_other"] = rng.choice(OTHER_SYMPTOMS)
        rows.append(RecordRow(record, "training_arm_1", "training_diary", i, values))
    return rows


def _phone_rows(rng: random.Random, record: str, baseline: date, sessions: list[Session],
                last_day: int, start_load: int) -> list[RecordRow]:
    rows: list[RecordRow] = []
    previous_load = start_load
    for instance, day in enumerate(range(CALL_EVERY_DAYS, last_day, CALL_EVERY_DAYS), 1):
        done = [s for s in sessions if day - CALL_EVERY_DAYS < s.day <= day]
        current = max((s for s in sessions if s.day <= day), key=lambda s: s.day).load
        values = {
            "pf_date": iso(baseline + timedelta(day + rng.randint(0, 2))),
            "pf_sessions": str(len(done)),
            "pf_adherence_pct": str(round_half_up(len(done) / CALL_EVERY_DAYS * 100)),
            "pf_load_adjusted": "1" if current != previous_load else "0",
            "phone_followup_complete": "2",
        }
        if current != previous_load:
            values["pf_new_load"] = str(current)
        previous_load = current
        rows.append(RecordRow(record, "training_arm_1", "phone_followup", instance, values))
    return rows


def _adverse_event_rows(rng: random.Random, record: str, baseline: date,
                        last_day: int) -> list[RecordRow]:
    if rng.random() >= 0.15:
        return []
    rows = []
    for instance in range(1, rng.randint(1, 2) + 1):
        term, severity, related = rng.choice(AE_TERMS)
        onset = baseline + timedelta(rng.randint(1, last_day - 1))
        values = {
            "ae_term": term, "ae_onset": iso(onset), "ae_severity": str(severity),
            "ae_serious": "0", "ae_related": str(related), "ae_resolved": "1",
            "ae_end_date": iso(onset + timedelta(rng.randint(1, 10))),
            "adverse_events_complete": "2",
        }
        rows.append(RecordRow(record, "training_arm_1", "adverse_events", instance, values))
    return rows


def _completion(p: Person, plan: Plan, withdrawal_day: int) -> dict[str, str]:
    if plan.dropout:
        day = iso(p.dates["baseline_arm_1"] + timedelta(withdrawal_day))
        return {"withdrawn": "1", "withdrawal_date": day, "withdrawal_reason": "1",
                "completion_date": day, "study_completion_complete": "2"}
    return {"withdrawn": "0", "completion_date": iso(p.dates["month_12_arm_1"]),
            "study_completion_complete": "2"}


def _participant(plan: Plan, seed: int, n: int) -> tuple[list[RecordRow], list[ProtocolDeviation]]:
    """All rows of one participant, in REDCap's export order, and its protocol deviations."""
    rng = random.Random(f"imt:{seed}:{plan.index}")
    p = _person(rng, plan, n)
    baseline_day = p.dates["baseline_arm_1"]
    last_day = rng.randint(25, 60) if plan.dropout else TRAINING_DAYS
    visits = ASSESSMENT_EVENTS[:2] if plan.dropout else ASSESSMENT_EVENTS
    values = {ev: _assessments(rng, p, ev) for ev in visits}
    values["screening_arm_1"] = {**_enrollment(rng, plan, p), **values["screening_arm_1"]}
    rx = _prescription(rng, p, values["baseline_arm_1"])
    values["baseline_arm_1"].update(rx)
    start_load = int(rx["rx_start_load"])
    sessions, deviations = _simulate_diary(rng, plan, start_load, last_day, p.gain)
    training = (
        _diary_rows(rng, plan.record, baseline_day, sessions)
        + _phone_rows(rng, plan.record, baseline_day, sessions, last_day, start_load)
        + _adverse_event_rows(rng, plan.record, baseline_day, last_day)
    )
    values.setdefault("month_12_arm_1", {}).update(_completion(p, plan, last_day))
    rows = [RecordRow(plan.record, ev, values=values[ev]) for ev in ASSESSMENT_EVENTS[:2]]
    rows += training
    rows += [RecordRow(plan.record, ev, values=values[ev])
             for ev in ASSESSMENT_EVENTS[2:] if ev in values]
    return rows, deviations


def _plans(n: int, seed: int) -> list[Plan]:
    """Who drops out and who deviates from the protocol (distinct participants when possible)."""
    width = max(3, len(str(n)))
    plans = [Plan(i, str(i + 1).zfill(width)) for i in range(n)]
    rng = random.Random(f"imt:{seed}:plans")
    order = rng.sample(range(n), n)
    n_dropouts = max(1, round(0.03 * n)) if n >= 4 else 0
    per_kind = max(1, round(0.03 * n)) if n >= 4 else 0
    for i in order[:n_dropouts]:
        plans[i].dropout = True
    rest = order[n_dropouts:]
    for k, kind in enumerate(DEVIATION_KINDS):
        for i in rest[k * per_kind:(k + 1) * per_kind]:
            plans[i].deviation = kind
    return plans


def generate_study(
    n_participants: int = 33, seed: int = 2024, with_errors: bool = True
) -> GeneratedStudy:
    """The reference project with synthetic data, and the manifests of its known flaws."""
    if n_participants < 1:
        raise ValueError(f"n_participants must be at least 1 (got {n_participants})")
    project = empty_project()
    deviations: list[ProtocolDeviation] = []
    for plan in _plans(n_participants, seed):
        rows, found = _participant(plan, seed, n_participants)
        project.rows.extend(rows)
        deviations.extend(found)
    errors = inject_errors(project, seed) if with_errors else []
    log.info("generated %d participants, %d rows, %d deliberate errors, %d deviations",
             n_participants, len(project.rows), len(errors), len(deviations))
    return GeneratedStudy(project, errors, deviations)


def generate_project(
    n_participants: int = 33, seed: int = 2024, with_errors: bool = True
) -> ProjectDefinition:
    """The reference project with `n_participants` synthetic participants (see generate_study)."""
    return generate_study(n_participants, seed, with_errors).project
