"""Check a study's configuration before any network work, so a typo in a mapping or a rule
stops the run at once (and the sync state is not advanced by a run that cannot finish)."""

from __future__ import annotations

from pathlib import Path

from imt_etl.dateshift import max_shift_days
from imt_etl.errors import ConfigError
from imt_etl.fhir.mappings import load_study_mapping
from imt_etl.validate.rules import load_rules


def available_studies(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).iterdir()
                  if p.is_dir() and (p / "study.yaml").is_file()) if Path(root).is_dir() else []


def check_study_config(study: str, mappings_root: Path, schemas_root: Path) -> None:
    """Load the study's mappings and rules on their own (the dictionary check follows once the
    project's metadata is known); raises MappingError/ConfigError naming file and key."""
    folder = Path(mappings_root) / study
    if not (folder / "study.yaml").is_file():
        known = ", ".join(available_studies(mappings_root)) or "none"
        raise ConfigError(f"study {study!r}: no mappings in {folder} (study.yaml missing; "
                          f"studies in {mappings_root}: {known})")
    max_shift_days(load_study_mapping(folder).study.settings)  # a bad date_shifting fails now
    rules_file = Path(schemas_root) / study / "rules.yaml"
    if rules_file.is_file():
        load_rules(rules_file)
