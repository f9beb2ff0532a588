"""Top-level validation API: dictionary schemas + study rules -> findings, valid and quarantine."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from imt_etl.redcap.tidy import ProjectMeta, TidyResult, TypeIssue
from imt_etl.validate.branching import EventContext, branching_findings
from imt_etl.validate.design import design_findings
from imt_etl.validate.dictionary_schema import InstrumentSchema, build_schemas, run_schema
from imt_etl.validate.quarantine import (
    ERROR,
    WARNING,
    Finding,
    check_invariant,
    findings_frame,
    split_table,
)
from imt_etl.validate.rules import RuleContext, StudyRules, run_rules

log = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    valid: dict[str, pd.DataFrame]
    quarantined: dict[str, pd.DataFrame]
    findings: pd.DataFrame  # FINDING_COLUMNS, sorted by record, event, instrument, instance
    counts: dict[str, dict[str, int]]  # form -> extracted, valid, quarantined, warnings, errors
    raw: dict[str, pd.DataFrame] = field(default_factory=dict)  # REDCap strings, same rows
    identifiers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # form -> fields
    seconds: float = 0.0

    @property
    def errors(self) -> pd.DataFrame:
        return self.findings[self.findings["severity"] == ERROR]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.findings[self.findings["severity"] == WARNING]

    @property
    def has_errors(self) -> bool:
        return bool((self.findings["severity"] == ERROR).any())


def _issue_finding(issue: TypeIssue) -> Finding:
    return Finding(issue.rule, ERROR, issue.instrument, issue.record, issue.event,
                   issue.repeat_instrument, issue.repeat_instance, issue.field, issue.value,
                   issue.message)


def dictionary_findings(tidy: TidyResult, meta: ProjectMeta,
                        schemas: dict[str, InstrumentSchema]) -> list[Finding]:
    """Type issues from tidying, pandera failures, required fields and branching logic."""
    found = [_issue_finding(i) for i in tidy.issues if i.instrument in tidy.tables]
    context = EventContext(tidy.raw)
    for form, table in tidy.tables.items():
        spec = schemas[form]
        found += run_schema(spec, table, tidy.raw.get(form))
        found += branching_findings(form, spec.fields, tidy.raw[form], meta, context)
    return found


def _counts(form: str, table: pd.DataFrame, valid: pd.DataFrame, quarantined: pd.DataFrame,
            findings: pd.DataFrame) -> dict[str, int]:
    mine = findings[findings["instrument"] == form]
    return {"extracted": len(table), "valid": len(valid), "quarantined": len(quarantined),
            "warnings": int((mine["severity"] == WARNING).sum()),
            "errors": int((mine["severity"] == ERROR).sum())}


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    view = table.copy(deep=False)
    view.attrs = {}
    return view


def validate_project(tidy_result: TidyResult, meta: ProjectMeta,
                     rules: StudyRules | None = None) -> ValidationResult:
    """Validate every instrument table of a tidy result (dictionary checks + study rules).

    A row with at least one error finding is quarantined whole; warnings flow on. Raises
    InvariantError if extracted != valid + quarantined for any instrument.
    """
    started = time.perf_counter()
    original = tidy_result
    # pandas deep-copies `attrs` (tidy's column descriptions) into every derived frame, which
    # made validation several times slower: work on attr-less views, restore attrs at the end.
    tidy_result = TidyResult({f: _plain(t) for f, t in tidy_result.tables.items()},
                             tidy_result.raw, tidy_result.issues)
    attrs = {f: t.attrs for f, t in original.tables.items()}
    schemas = {form: spec for form, spec in build_schemas(meta).items()
               if form in tidy_result.tables}
    found = design_findings(meta.dictionary, set(tidy_result.tables))
    found += dictionary_findings(tidy_result, meta, schemas)
    if rules is not None:
        replaced = rules.superseded_ranges()
        found = [f for f in found
                 if not (f.rule_id == "dict.range" and (f.instrument, f.field) in replaced)]
        found += run_rules(rules, RuleContext(tidy_result.tables, tidy_result.raw, meta))
    findings = findings_frame(found, {e: i for i, e in enumerate(meta.event_arms)})
    valid: dict[str, pd.DataFrame] = {}
    quarantined: dict[str, pd.DataFrame] = {}
    counts: dict[str, dict[str, int]] = {}
    for form, table in tidy_result.tables.items():
        valid[form], quarantined[form] = split_table(form, table, findings)
        check_invariant(form, table, valid[form], quarantined[form])
        counts[form] = _counts(form, table, valid[form], quarantined[form], findings)
        valid[form].attrs = dict(attrs[form])
        quarantined[form].attrs = dict(attrs[form])
    seconds = time.perf_counter() - started
    log.info("validated %d instruments in %.3f s: %d error(s), %d warning(s)", len(counts),
             seconds, int((findings["severity"] == ERROR).sum()),
             int((findings["severity"] == WARNING).sum()))
    return ValidationResult(valid, quarantined, findings, counts, dict(tidy_result.raw),
                            {f: s.identifiers for f, s in schemas.items()}, seconds)


def write_quality_report(result: ValidationResult, out_dir: Path,
                         previous_findings_path: Path | None = None) -> list[Path]:
    """Write out_dir/quality/{findings.parquet, quarantine.parquet, index.html}; return paths.

    Without `previous_findings_path`, an existing out_dir/quality/findings.parquet (the last
    run's) is used for the trend before it is replaced.
    """
    from imt_etl.validate.report import write_report

    return write_report(result, Path(out_dir) / "quality", previous_findings_path)
