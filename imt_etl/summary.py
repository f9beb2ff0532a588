"""The machine-readable record of one run (`out/run-summary.json`); each stage adds its counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imt_etl.io import write_json_atomic

SUMMARY_FILE = "run-summary.json"


@dataclass
class InstrumentCounts:
    rows_extracted: int = 0
    rows_valid: int | None = None
    rows_quarantined: int | None = None
    warnings: int | None = None


@dataclass
class RunSummary:
    project: str
    study: str
    mode: str  # "full" or "incremental"
    started_at: str
    finished_at: str | None = None
    status: str = "running"
    records: int = 0
    records_changed: int = 0
    records_deleted: int = 0
    batches: int = 0
    instruments: dict[str, InstrumentCounts] = field(default_factory=dict)
    files_written: list[str] = field(default_factory=list)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)

    def add_file(self, path: Path, out_dir: Path) -> None:
        self.files_written.append(Path(path).relative_to(out_dir).as_posix())

    def finish(self, status: str = "success") -> None:
        self.status = status
        self.finished_at = now_iso()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files_written"] = sorted(self.files_written)
        return data

    def write(self, out_dir: Path) -> Path:
        return write_json_atomic(Path(out_dir) / SUMMARY_FILE, self.to_dict())


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
