"""FHIR Bulk Data NDJSON output: one `<Type>.ndjson` per resource type, one resource per line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from imt_etl.errors import ImtEtlError
from imt_etl.io import write_bytes_atomic

log = logging.getLogger(__name__)

# Only files this writer could have made are ever removed as stale (a FHIR type name).
_NDJSON_NAME = re.compile(r"^[A-Z][A-Za-z]*\.ndjson$")


def _default(value: Any) -> Any:
    """orjson fallback: a Decimal keeps its exact digits (250.50 stays 250.50, not 250.5)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"FHIR decimals must be finite, got {value}")
        return orjson.Fragment(str(value).encode("ascii"))
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def dumps(resource: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the same dict always gives the same bytes.

    orjson writes a float NaN as null; builders must not produce one (the validators reject it).
    """
    return orjson.dumps(resource, default=_default, option=orjson.OPT_SORT_KEYS)


def group_by_type(resources: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Resources per type, each list sorted by id; types in name order.

    A resource without resourceType or id, or two of a type with the same id, is a builder bug:
    written out it would silently overwrite data on the server, so it raises ValueError.
    """
    groups: dict[str, dict[str, Mapping[str, Any]]] = {}
    for resource in resources:
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str) or not rtype or not isinstance(rid, str) or not rid:
            raise ValueError(f"resource without resourceType/id: {str(resource)[:120]}")
        by_id = groups.setdefault(rtype, {})
        if rid in by_id:
            raise ValueError(f"duplicate resource id {rtype}/{rid}")
        by_id[rid] = resource
    return {t: [by_id[i] for i in sorted(by_id)] for t, by_id in sorted(groups.items())}


def write_ndjson(resources: Iterable[Mapping[str, Any]], out_dir: Path) -> dict[str, int]:
    """Write `out_dir/<Type>.ndjson` for every type present; return the count per type.

    Files of types no longer present are removed, so the folder always describes exactly one
    run (call `bundles.deletions_since` on the old folder *before* writing over it).
    """
    out_dir = Path(out_dir)
    groups = group_by_type(resources)
    counts: dict[str, int] = {}
    for rtype, items in groups.items():
        data = b"".join(dumps(r) + b"\n" for r in items)
        write_bytes_atomic(out_dir / f"{rtype}.ndjson", data)
        counts[rtype] = len(items)
    for stale in _ndjson_files(out_dir):
        if stale.stem not in groups:
            log.info("removing %s: no %s resources in this run", stale, stale.stem)
            stale.unlink()
    log.info("wrote NDJSON to %s: %s", out_dir, counts)
    return counts


def _ndjson_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NDJSON_NAME.match(p.name) and p.is_file())


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """Every resource of one NDJSON file (blank lines skipped)."""
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


def read_ids(directory: Path) -> dict[str, set[str]]:
    """The resource ids per type found in a folder of `<Type>.ndjson` files ({} if none)."""
    ids: dict[str, set[str]] = {}
    for path in _ndjson_files(Path(directory)):
        try:
            found = {str(r["id"]) for r in read_ndjson(path)}
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ImtEtlError(f"{path}: not FHIR NDJSON ({exc})") from exc
        ids[path.stem] = found
    return ids
