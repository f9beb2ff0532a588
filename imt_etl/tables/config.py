"""Study-specific analysis settings: visits, change periods, primary endpoint, training rule.

`AnalysisConfig` is what the generic table builders need to know about a study's design. The
reference study's settings come from `imt_config()`, built from `imt_etl.studies.imt.design`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Period:
    """A change-from-baseline period: from one visit (event) to a later one."""

    name: str
    label: str
    from_event: str
    to_event: str


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

    sex_field: str
    sex_codes: Mapping[str, str]  # REDCap code -> "female" | "male"
    dob_field: str
    mip_date_field: str
    mip_devices: Mapping[str, tuple[tuple[str, ...], str]]  # device -> (trial fields, best field)
    fss_items: tuple[str, ...]
    rand36_items: tuple[str, ...]  # item 1..36 in order
    thickness_insp_field: str
    thickness_exp_field: str
    core_set: Mapping[str, str]  # TIS measure -> field (physician_global, patient_global, ...)
    ck_field: str
    ck_unit_measure: str  # mapping measure id whose conversion gives U/L
    ck_uln: float = 200.0  # U/L; set the local laboratory's value
    tis_events: tuple[str, str] = ("", "")  # (baseline event, follow-up event)


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

    def period(self, name: str) -> Period:
        for p in self.periods:
            if p.name == name:
                return p
        raise KeyError(name)


def imt_config() -> AnalysisConfig:
    """The reference IMT study (NCT07274267): visits, periods, MIP endpoint, training protocol."""
    from imt_etl.studies.imt.design import ASSESSMENT_EVENTS, EVENTS

    labels = {e.unique_event_name: f"{e.event_name} ({e.custom_event_label})" for e in EVENTS}
    weeks = {e.unique_event_name: round(e.day_offset / 7, 1)
             for e in EVENTS if e.unique_event_name in ASSESSMENT_EVENTS}
    return AnalysisConfig(
        event_labels=labels,
        event_weeks=weeks,
        visit_events=tuple(ASSESSMENT_EVENTS),
        periods=(
            Period("run_in", "Run-in (screening to baseline)", "screening_arm_1", "baseline_arm_1"),
            Period("training", "Training (baseline to month 3)", "baseline_arm_1",
                   "month_3_arm_1"),
            Period("retention_6m", "Retention (month 3 to month 6)", "month_3_arm_1",
                   "month_6_arm_1"),
            Period("retention_12m", "Retention (month 3 to month 12)", "month_3_arm_1",
                   "month_12_arm_1"),
        ),
        # The protocol's primary endpoint: change in MIP (POWERbreathe KH2, the device the
        # training load is prescribed from) over the training period.
        primary_measure="mip_kh2_best",
        primary_period="training",
        training=TrainingConfig(
            diary_form="training_diary", date_field="diary_date", load_field="diary_load",
            exertion_field="diary_borg", breaths_field="diary_breaths",
            start_form="imt_prescription", start_date_field="rx_date",
            start_load_field="rx_start_load", start_mip_field="rx_mip",
        ),
        scores=ScoresConfig(
            sex_field="sex", sex_codes={"1": "female", "2": "male"}, dob_field="dob",
            mip_date_field="rms_date",
            mip_devices={
                "kh2": (("mip_kh2_1", "mip_kh2_2", "mip_kh2_3"), "mip_kh2_best"),
                "rpc": (("mip_rpc_1", "mip_rpc_2", "mip_rpc_3"), "mip_rpc_best"),
            },
            fss_items=tuple(f"fss_{i}" for i in range(1, 10)),
            rand36_items=tuple(f"sf36_{i:02d}" for i in range(1, 37)),
            thickness_insp_field="thick_insp_mm", thickness_exp_field="thick_exp_mm",
            core_set={"physician_global": "phys_global_vas", "patient_global": "pat_global_vas",
                      "mmt": "mmt8_total", "haq": "haq_di", "extramuscular": "extramusc_vas"},
            ck_field="ck_value", ck_unit_measure="creatine_kinase",
            tis_events=("baseline_arm_1", "month_3_arm_1"),
        ),
    )
