"""Observation status across re-syncs: `amended` once a published value has changed.

FHIR R4 Observation.status `amended` means "subsequent to being final, the Observation has been
modified". The previous run's NDJSON is the record of what was published: an Observation whose
content (status aside) differs from the previous version becomes amended, and stays amended on
later runs, so re-running unchanged data still rewrites identical files.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from imt_etl.errors import ImtEtlError

AMENDED = "amended"


def _content(resource: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in resource.items() if k != "status"},
                        option=orjson.OPT_SORT_KEYS)


def previous_observations(fhir_dir: Path) -> dict[str, tuple[str, bytes]]:
    """id -> (status, content without status) from the previous run's Observation.ndjson."""
    path = Path(fhir_dir) / "Observation.ndjson"
    if not path.exists():
        return {}
    previous = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            resource = orjson.loads(line)
            previous[resource["id"]] = (resource.get("status", ""), _content(resource))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ImtEtlError(f"{path}, line {number}: not a FHIR Observation ({exc})") from exc
    return previous


def mark_amended(observations: Iterable[dict[str, Any]],
                 previous: dict[str, tuple[str, bytes]]) -> int:
    """Set status `amended` on changed (or already amended) Observations; returns how many."""
    count = 0
    for resource in observations:
        before = previous.get(resource["id"])
        if before is None:
            continue
        status, content = before
        if status == AMENDED or content != _content(resource):
            resource["status"] = AMENDED
            count += 1
    return count


class AmendStream:
    """`mark_amended` for Observations streamed in id order, against the previous
    Observation.ndjson (also in id order), read line by line instead of loaded whole.

    Call it with each (id, serialised line); it returns the line to write. An unchanged
    Observation is recognised by its bytes, so only changed ones are parsed.
    """

    def __init__(self, previous_file: Path):
        path = Path(previous_file)
        self.count = 0
        self._path = path
        self._lines = iter(path.open("rb")) if path.exists() else iter(())
        self._number = 0
        self._pushed_back: list[bytes] = []  # lines read ahead by `chunk`, last first
        self._line: bytes | None = None
        self._resource: dict[str, Any] | None = None
        self._next()

    def _next(self) -> None:
        self._resource = None
        while self._pushed_back or (line := next(self._lines, None)) is not None:
            if self._pushed_back:
                line = self._pushed_back.pop()
            self._number += 1
            if line.strip():
                self._line = line if line.endswith(b"\n") else line + b"\n"
                return
        self._line = None

    def chunk(self, rids: list[bytes], lines: list[bytes]) -> list[bytes]:
        """`self(rid, line)` for each; a run of lines equal to the previous file's next ones
        (unchanged Observations, nearly all of an incremental sync's) is compared at once."""
        if lines and not self._pushed_back and self._line == lines[0]:
            ahead = list(islice(self._lines, len(lines) - 1))
            if ahead == lines[1:]:
                self._number += len(ahead)
                self._next()
                return lines
            self._pushed_back = ahead[::-1]
        return [self(rid, line) for rid, line in zip(rids, lines, strict=True)]

    def _parsed(self) -> dict[str, Any]:
        if self._resource is None:
            try:
                self._resource = orjson.loads(self._line or b"")
                str(self._resource["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ImtEtlError(f"{self._path}, line {self._number}: not a FHIR Observation "
                                  f"({exc})") from exc
        return self._resource

    def __call__(self, rid: bytes, line: bytes) -> bytes:
        while self._line is not None:
            if self._line == line:  # same id, same content, same status
                self._next()
                return line
            before = self._parsed()
            previous_id = str(before["id"]).encode()
            if previous_id < rid:
                self._next()
                continue
            if previous_id > rid:
                return line
            self._next()
            resource = orjson.loads(line)
            if before.get("status", "") == AMENDED or _content(before) != _content(resource):
                resource["status"] = AMENDED
                self.count += 1
                return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS) + b"\n"
            return line
        return line
