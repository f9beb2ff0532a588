"""Observation status across re-syncs: `amended` once a published value has changed.

FHIR R4 Observation.status `amended` means "subsequent to being final, the Observation has been
modified". The previous run's NDJSON is the record of what was published: an Observation whose
content (status aside) differs from the previous version becomes amended, and stays amended on
later runs, so re-running unchanged data still rewrites identical files.
"""

from __future__ import annotations

from collections.abc import Iterable
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
