"""Validation: pandera schemas from the data dictionary, study rules, quarantine and report."""

from imt_etl.validate.dictionary_schema import InstrumentSchema, build_schema, build_schemas
from imt_etl.validate.quarantine import FINDING_COLUMNS, Finding, InvariantError
from imt_etl.validate.rules import StudyRules, load_rules, register_check, study_rules
from imt_etl.validate.run import ValidationResult, validate_project, write_quality_report

__all__ = [
    "FINDING_COLUMNS", "Finding", "InstrumentSchema", "InvariantError", "StudyRules",
    "ValidationResult", "build_schema", "build_schemas", "load_rules", "register_check",
    "study_rules", "validate_project", "write_quality_report",
]
