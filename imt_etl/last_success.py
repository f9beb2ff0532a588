"""What the last fully successful run wrote, kept in state/ as the base of the next comparison.

Two outputs are computed against the previous run: FHIR DELETEs (resources that vanished) and
the quality report's trend. Comparing with the live output folder is wrong after a crash (the
killed run overwrote part of it), so a run records its FHIR ids and findings here only once
everything else is written, and the next run compares with this record.
"""

from __future__ import annotations

import json
from pathlib import Path

from imt_etl.fhir.ndjson import read_ids
from imt_etl.io import write_bytes_atomic, write_json_atomic

FOLDER = "last-success"
FHIR_IDS = "fhir-ids.json"
FINDINGS = "findings.parquet"


def folder(out_dir: Path) -> Path:
    return Path(out_dir) / "state" / FOLDER


def previous_fhir_ids(out_dir: Path) -> dict[str, set[str]]:
    """Resource ids per type written by the last successful run ({} before the first)."""
    path = folder(out_dir) / FHIR_IDS
    if path.exists():
        return {kind: set(ids) for kind, ids in json.loads(path.read_text()).items()}
    return read_ids(Path(out_dir) / "fhir")  # output of a version that kept no record


def previous_findings(out_dir: Path) -> Path:
    """The last successful run's findings (the path may not exist: then there is no trend)."""
    return folder(out_dir) / FINDINGS


def record_success(out_dir: Path) -> None:
    """Called last in a successful run: remember its FHIR ids and its findings."""
    out_dir = Path(out_dir)
    ids = read_ids(out_dir / "fhir")
    write_json_atomic(folder(out_dir) / FHIR_IDS, {k: sorted(v) for k, v in ids.items()})
    findings = out_dir / "quality" / FINDINGS
    if findings.exists():
        write_bytes_atomic(folder(out_dir) / FINDINGS, findings.read_bytes())
    else:
        (folder(out_dir) / FINDINGS).unlink(missing_ok=True)
