"""Incremental FHIR: the resources of a record whose inputs did not change since the last
successful run are not built again; their lines are copied from that run's NDJSON.

- A record's fingerprint hashes its input rows (valid rows, their raw strings, measurement rows:
  everything `record_fhir` reads for it) under the run key: this package's source, the study's
  mappings and rules, the project design, the tables' columns and types, the Questionnaires,
  the pseudonym key (as an HMAC, never the key), the context's settings and the study-zone date
  (a ResearchSubject's status depends on it). A change in the key rebuilds every record; so does
  the first run of a day.
- Every record-level resource refers to its Patient (Patient.id, ResearchSubject.individual,
  `subject` of the others), which tells whose it is; a resource that does not is an error.
- The last successful run lists each resource with its record's fingerprint
  (state/last-success/fhir-ids.txt) and records the identity of each NDJSON file it wrote
  (size, modification time, inode). Lines are reused only from those very files: after a crash
  or a hand edit the files differ and every record is built again.
- Only the changed records are built, in full batches: a 1 % change builds 1 % of the study.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import islice, takewhile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imt_etl.errors import ImtEtlError
from imt_etl.fhir.spool import NO_TAG

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
STAMPS = "fhir-files.json"  # beside last_success.FHIR_IDS: run key and NDJSON identities
PENDING_STAMPS = "fhir-files.pending"


@lru_cache(maxsize=1)
def source_digest() -> bytes:
    """This package's Python source: a new version may build different resources."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.digest()


def folder_digest(*folders: Path) -> bytes:
    """Every file under the folders (mappings, terminology, rules), names and bytes."""
    digest = hashlib.sha256()
    for root in folders:
        root = Path(root)
        for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else ():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.digest()


def run_key(*, config_folders: Iterable[Path], design: Any, pseudonym_key: bytes,
            context: Mapping[str, Any], questionnaires: Any) -> str:
    """What every resource of the run depends on besides its own records' rows."""
    digest = hashlib.sha256(source_digest())
    digest.update(folder_digest(*config_folders))
    digest.update(hmac.new(pseudonym_key, b"imt-etl fhir reuse", "sha256").digest())
    for part in (design, dict(context), questionnaires):
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def columns_digest(frames: Iterable[tuple[str, pd.DataFrame | None]]) -> list[Any]:
    """Names, columns and types of the input tables (part of the run key)."""
    return [(name, None if frame is None else [(str(c), str(t)) for c, t in frame.dtypes.items()])
            for name, frame in frames]


def record_fingerprints(key: str, frames: Iterable[tuple[str, pd.DataFrame | None]],
                        records: Iterable[str]) -> dict[str, bytes]:
    """record -> hex fingerprint of its rows in every frame (in row order) under the run key."""
    hashers = {str(r): hashlib.sha256(key.encode()) for r in records}
    for name, frame in frames:
        if frame is None or frame.empty:
            continue
        rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        owners = frame["record_id"].astype(str).to_numpy()
        order = np.argsort(owners, kind="stable")  # each record's rows together, in row order
        owners, rows = owners[order], rows[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        label = name.encode() + b"\0"
        for begin, stop in zip(starts, [*starts[1:], len(owners)], strict=True):
            hasher = hashers.get(owners[begin])
            if hasher is not None:  # rows of records without valid rows build nothing
                hasher.update(label + rows[begin:stop].tobytes())
    return {record: hasher.hexdigest()[:32].encode() for record, hasher in hashers.items()}


def tagger(patient_refs: Mapping[str, bytes]) -> Callable[[Mapping[str, Any]], bytes]:
    """resource -> its record's fingerprint, given "Patient/<id>" -> fingerprint."""
    def tag_of(resource: Mapping[str, Any]) -> bytes:
        if resource["resourceType"] == "Patient":
            ref = f"Patient/{resource['id']}"
        else:
            ref = (resource.get("subject") or resource.get("individual") or {}).get("reference")
        tag = patient_refs.get(ref)
        if tag is None:  # a builder that forgot its Patient: reuse would lose the resource
            raise ImtEtlError(f"FHIR build: {resource['resourceType']}/{resource['id']} "
                              "refers to none of its batch's Patients, so the next run could "
                              "not tell whose it is (a builder must set subject)")
        return tag
    return tag_of


@dataclass(frozen=True)
class FileIdentity:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def write_pending_stamps(path: Path, key: str, fhir_dir: Path, types: Iterable[str]) -> None:
    """The run key and the identity of each NDJSON file just written (`PreviousFhir.open`)."""
    from imt_etl.io import write_bytes_atomic

    stamps = {t: list(vars(FileIdentity.of(fhir_dir / f"{t}.ndjson")).values()) for t in types}
    write_bytes_atomic(path, json.dumps({"key": key, "files": stamps}, sort_keys=True).encode())


class PreviousFhir:
    """The last successful run's NDJSON lines, by record fingerprint, when they can be trusted."""

    def __init__(self, fhir_dir: Path, ids_file: Path, types: list[str]):
        self.fhir_dir, self.ids_file, self.types = Path(fhir_dir), Path(ids_file), types

    @classmethod
    def open(cls, fhir_dir: Path, last_success: Path, key: str) -> PreviousFhir | None:
        """None when nothing can be reused (first run, other key, files changed since)."""
        stamps_file, ids_file = last_success / STAMPS, last_success / "fhir-ids.txt"
        if not stamps_file.exists() or not ids_file.exists():
            return None
        try:
            recorded = json.loads(stamps_file.read_text())
            if recorded.get("key") != key:
                log.info("FHIR: study configuration, code or date changed: every record is built")
                return None
            for rtype, identity in recorded["files"].items():
                if list(vars(FileIdentity.of(Path(fhir_dir) / f"{rtype}.ndjson")).values()) \
                        != identity:
                    log.info("FHIR: %s.ndjson is not the last successful run's: every record "
                             "is built", rtype)
                    return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return cls(fhir_dir, ids_file, list(recorded["files"]))

    def fingerprints(self) -> set[bytes]:
        """The record fingerprints the last run listed (study-level resources have none)."""
        return self._index[0]

    @cached_property
    def _index(self) -> tuple[set[bytes], dict[bytes, int]]:
        """One pass over the ids file: its fingerprints, and where each type's ids start."""
        tags: set[bytes] = set()
        starts: dict[bytes, int] = {}
        offset = 0
        with self.ids_file.open("rb") as lines:
            for line in lines:
                parts = line.rstrip(b"\n").split(b"\t")
                starts.setdefault(parts[0], offset)
                offset += len(line)
                if len(parts) == 3:
                    tags.add(parts[2])
        tags.discard(NO_TAG)
        return tags, starts

    def lines(self, rtype: str, keep: set[bytes]) -> Iterator[bytes]:
        """`<id>\t<fingerprint>\t<json>` lines (a spool run's format, imt_etl.fhir.spool) of
        the type's resources whose fingerprint is in `keep`, in id order: the ids file lists
        each type's ids in the order of its NDJSON lines. Read 1,024 lines at a time."""
        if rtype not in self.types or not keep:
            return
        start = self._index[1].get(rtype.encode(), 0)
        prefix = rtype.encode() + b"\t"
        skip = len(prefix)
        with self.ids_file.open("rb") as ids, \
                (self.fhir_dir / f"{rtype}.ndjson").open("rb") as ndjson:
            # Types are contiguous (bundle order): start at this one, stop after it.
            ids.seek(start)
            mine = takewhile(lambda line: line.startswith(prefix), ids)
            while id_lines := list(islice(mine, 1024)):
                lines = list(islice(ndjson, len(id_lines)))
                if len(lines) != len(id_lines):
                    raise ValueError(f"{self.ids_file}: more {rtype} ids than NDJSON lines")
                # "<Type>\t<id>\t<tag>\n": the tag is what follows the last TAB
                yield from [id_line[skip:-1] + b"\t" + line
                            for id_line, line in zip(id_lines, lines, strict=True)
                            if id_line[id_line.rindex(b"\t") + 1:-1] in keep]
            if ndjson.readline():
                raise ValueError(f"{self.ids_file}: fewer {rtype} ids than NDJSON lines")
