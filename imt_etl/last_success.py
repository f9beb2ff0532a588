"""What the last fully successful run wrote, kept in state/ as the base of the next comparison.

Two outputs are computed against the previous run: FHIR DELETEs (resources that vanished) and
the quality report's trend. Comparing with the live output folder is wrong after a crash (the
killed run overwrote part of it), so a run records its FHIR ids and findings here only once
everything else is written, and the next run compares with this record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from imt_etl.fhir import reuse
from imt_etl.fhir.bundles import type_rank
from imt_etl.fhir.ndjson import read_ids
from imt_etl.io import write_bytes_atomic

FOLDER = "last-success"
# "<Type>\t<id>" lines in bundle order (type rank, then id): read as a stream, never whole.
FHIR_IDS = "fhir-ids.txt"
LEGACY_FHIR_IDS = "fhir-ids.json"  # written by earlier versions
PENDING_FHIR_IDS = "fhir-ids.pending"  # this run's ids, until the run has succeeded
FINDINGS = "findings.parquet"


def folder(out_dir: Path) -> Path:
    return Path(out_dir) / "state" / FOLDER


def spool_dir(out_dir: Path) -> Path:
    """Scratch space of the FHIR writer (imt_etl.fhir.spool), private like the state folder."""
    return Path(out_dir) / "state" / "fhir-spool"


def pending_fhir_files(out_dir: Path) -> Path:
    """Where the FHIR writer leaves this run's key and NDJSON identities (imt_etl.fhir.reuse)."""
    return folder(out_dir) / reuse.PENDING_STAMPS


def pending_fhir_ids(out_dir: Path) -> Path:
    """Where the FHIR writer leaves this run's ids for `record_success`."""
    path = folder(out_dir) / PENDING_FHIR_IDS
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def discard_pending(out_dir: Path) -> list[Path]:
    """Remove what a killed run's FHIR writer left for a success that never came: the next
    `record_success` must only ever promote its own run's ids (called under the lock)."""
    gone = [p for p in (folder(out_dir) / PENDING_FHIR_IDS, folder(out_dir) / reuse.PENDING_STAMPS)
            if p.exists()]
    for path in gone:
        path.unlink()
    return gone


def previous_fhir_id_stream(out_dir: Path) -> Iterator[tuple[str, str]]:
    """(type, id) written by the last successful run, in bundle order (nothing before the
    first run)."""
    path = folder(out_dir) / FHIR_IDS
    if path.exists():
        with path.open("rb") as lines:
            for line in lines:  # "<Type>\t<id>" or, since FHIR reuse, "<Type>\t<id>\t<batch>"
                rtype, rid = line.rstrip(b"\n").split(b"\t")[:2]
                yield rtype.decode(), rid.decode()
        return
    legacy = folder(out_dir) / LEGACY_FHIR_IDS
    if legacy.exists():
        ids = {kind: set(v) for kind, v in json.loads(legacy.read_text()).items()}
    else:
        ids = read_ids(Path(out_dir) / "fhir")  # output of a version that kept no record
    yield from sorted(((t, i) for t, v in ids.items() for i in v),
                      key=lambda d: (type_rank(d[0]), d[1]))


def previous_fhir_ids(out_dir: Path) -> dict[str, set[str]]:
    """Resource ids per type written by the last successful run ({} before the first)."""
    ids: dict[str, set[str]] = {}
    for rtype, rid in previous_fhir_id_stream(out_dir):
        ids.setdefault(rtype, set()).add(rid)
    return ids


def previous_findings(out_dir: Path) -> Path:
    """The last successful run's findings (the path may not exist: then there is no trend)."""
    return folder(out_dir) / FINDINGS


def record_success(out_dir: Path) -> None:
    """Called last in a successful run: remember its FHIR ids and its findings."""
    out_dir = Path(out_dir)
    pending = folder(out_dir) / PENDING_FHIR_IDS
    stamps, pending_stamps = folder(out_dir) / reuse.STAMPS, folder(out_dir) / reuse.PENDING_STAMPS
    if pending.exists():  # the FHIR writer's list of this run's ids (already fsynced)
        # Ids and file identities of one run only: the old identities go first.
        stamps.unlink(missing_ok=True)
        os.replace(pending, folder(out_dir) / FHIR_IDS)
        if pending_stamps.exists():
            os.replace(pending_stamps, stamps)
    else:  # a run that wrote no FHIR: whatever the FHIR folder holds
        stamps.unlink(missing_ok=True)
        ids = read_ids(out_dir / "fhir")
        lines = sorted(((t, i) for t, v in ids.items() for i in v),
                       key=lambda d: (type_rank(d[0]), d[1]))
        write_bytes_atomic(folder(out_dir) / FHIR_IDS,
                           "".join(f"{t}\t{i}\n" for t, i in lines).encode())
    (folder(out_dir) / LEGACY_FHIR_IDS).unlink(missing_ok=True)
    findings = out_dir / "quality" / FINDINGS
    if findings.exists():
        write_bytes_atomic(folder(out_dir) / FINDINGS, findings.read_bytes())
    else:
        (folder(out_dir) / FINDINGS).unlink(missing_ok=True)
