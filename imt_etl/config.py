"""One frozen settings object for a run: where REDCap is, where output goes, batch sizes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from imt_etl.errors import ConfigError

TOKEN_ENV = "REDCAP_API_TOKEN"
# Source checkouts and editable installs keep the study configuration beside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAPPINGS_ROOT = PROJECT_ROOT / "mappings"
SCHEMAS_ROOT = PROJECT_ROOT / "schemas"


@dataclass(frozen=True)
class OutputConfig:
    """What the stages after extraction need: where outputs go and the study's configuration."""

    out_dir: Path
    study: str = "imt"
    mappings_root: Path = MAPPINGS_ROOT
    schemas_root: Path = SCHEMAS_ROOT
    pseudonym_key: bytes = field(default=b"", repr=False)
    allowed_identifiers: frozenset[str] = frozenset()
    bundle_size: int = 500
    # Per-participant date shift (imt_etl.dateshift): None follows the study's study.yaml
    # `date_shifting`, 0 turns it off, N shifts by up to N days.
    date_shift_max_days: int | None = None
    # Processes building FHIR (imt_etl.batchpool): 1 builds in this process only; more fork
    # workers that build record batches while this process writes the analysis tables.
    workers: int = 1
    fhir_batch_records: int = 50  # records per FHIR build batch (~800 resources each)


def default_workers() -> int:
    """The machine's cores, at most 4 (each worker holds a batch and its share of pages)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Settings:
    """Everything a run needs. The token is held but never printed (repr hides it)."""

    redcap_url: str
    token: str = field(repr=False)
    out_dir: Path = Path("out")
    study: str = "imt"
    project_name: str = "imt"
    batch_size: int = 50
    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 60.0
    verify_tls: bool = True
    run_time: datetime | None = None
    mappings_root: Path = MAPPINGS_ROOT
    schemas_root: Path = SCHEMAS_ROOT
    # Key of the participant pseudonyms (HMAC), never printed; None: read from the environment
    # (IMT_ETL_PSEUDONYM_KEY) when the run starts.
    pseudonym_key: bytes | None = field(default=None, repr=False)
    allowed_identifiers: frozenset[str] = frozenset()
    bundle_size: int = 500
    date_shift_max_days: int | None = None  # see OutputConfig
    workers: int = 0  # see OutputConfig; 0: default_workers()

    def __post_init__(self) -> None:
        if not self.redcap_url.endswith("/api/"):
            raise ConfigError(f"REDCap URL must end in '/api/' (got {self.redcap_url!r})")
        if len(self.token) != 32 or not self.token.isalnum():
            raise ConfigError(
                f"the REDCap API token (from {TOKEN_ENV}) must be 32 letters or digits"
            )
        if Path(self.out_dir).exists() and not Path(self.out_dir).is_dir():
            raise ConfigError(f"output folder {self.out_dir}: exists and is not a folder")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1 (got {self.batch_size})")
        if self.bundle_size < 1:
            raise ConfigError(f"bundle size must be at least 1 (got {self.bundle_size})")
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 (one per core) or more (got {self.workers})")
        if self.pseudonym_key is not None and len(self.pseudonym_key) < 16:
            raise ConfigError(
                "the pseudonym key must be at least 16 bytes: set IMT_ETL_PSEUDONYM_KEY"
            )

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    def outputs(self) -> OutputConfig:
        if self.pseudonym_key is None:
            raise ConfigError("no pseudonym key: set IMT_ETL_PSEUDONYM_KEY")
        return OutputConfig(
            out_dir=Path(self.out_dir), study=self.study, mappings_root=self.mappings_root,
            schemas_root=self.schemas_root, pseudonym_key=self.pseudonym_key,
            allowed_identifiers=self.allowed_identifiers, bundle_size=self.bundle_size,
            date_shift_max_days=self.date_shift_max_days,
            workers=self.workers or default_workers(),
        )


def token_from_env(env: dict[str, str] | None = None) -> str:
    """The REDCap token from the environment; a clear error when it is missing."""
    value = (env if env is not None else os.environ).get(TOKEN_ENV, "").strip()
    if not value:
        raise ConfigError(f"set the REDCap API token in the environment variable {TOKEN_ENV}")
    return value
