"""Transaction Bundles (PUT by id, DELETE for removed records) and their manifest."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from imt_etl.fhir.ids import NAMESPACE
from imt_etl.fhir.ndjson import dumps, group_by_type, read_ids
from imt_etl.io import write_bytes_atomic

log = logging.getLogger(__name__)

# Referenced resources come before the resources that reference them, so a server that checks
# references finds every target in this bundle or an earlier one. Other types follow, by name.
TYPE_ORDER = (
    "CodeSystem",
    "ResearchStudy",
    "Patient",
    "ResearchSubject",
    "Encounter",
    "Questionnaire",
    "QuestionnaireResponse",
    "Observation",
)
MANIFEST = "manifest.json"
DEFAULT_BUNDLE_SIZE = 500
_BUNDLE_NAME = re.compile(r"^bundle-\d{4,}\.json$")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class BundleInfo:
    """One written bundle: file name, entry counts and the sha256 of its bytes."""

    file: str
    entries: int
    puts: int
    deletes: int
    sha256: str


@dataclass(frozen=True)
class BundleManifest:
    """What `write_bundles` wrote, in publishing order."""

    bundles: tuple[BundleInfo, ...]
    resources: dict[str, int]
    deletions: dict[str, int]
    sha256: str

    @property
    def entries(self) -> int:
        return sum(b.entries for b in self.bundles)


@cache  # a handful of types, asked once per resource id by the writers
def type_rank(rtype: str) -> tuple[int, str]:
    """Sort key putting types in dependency order (TYPE_ORDER first, then the rest by name)."""
    try:
        return TYPE_ORDER.index(rtype), rtype
    except ValueError:
        return len(TYPE_ORDER), rtype


def full_url(rtype: str, rid: str, base: str | None = None) -> str:
    """Bundle.entry.fullUrl: `<base>/<Type>/<id>` if the server base is known, else a urn:uuid.

    A uuid id is used as is; any other id (e.g. the CodeSystem's) gets a uuid5 of "Type/id",
    so the fullUrl is stable and unique without knowing where the bundle will be sent.
    """
    if base:
        return f"{base.rstrip('/')}/{rtype}/{rid}"
    if _CANONICAL_UUID.fullmatch(rid):  # what str(uuid.UUID(rid)) == rid tests, faster
        return f"urn:uuid:{rid}"
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{rtype}/{rid}')}"


def put_entry(resource: Mapping[str, Any], base: str | None = None) -> dict[str, Any]:
    rtype, rid = resource["resourceType"], resource["id"]
    return {
        "fullUrl": full_url(rtype, rid, base),
        "resource": resource,
        "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
    }


def delete_entry(rtype: str, rid: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": f"{rtype}/{rid}"}}


def transaction(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    # No id, timestamp or meta: the same entries give byte-identical files on every run.
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def plan_entries(
    resources: Iterable[Mapping[str, Any]],
    deletions: Iterable[tuple[str, str]] = (),
    *,
    full_url_base: str | None = None,
) -> list[dict[str, Any]]:
    """All entries in publishing order: PUTs by type order then id, then DELETEs.

    DELETEs come last and in reverse type order (Observations before their Patient), so a
    server that refuses to delete a referenced resource sees the referrers go first.
    """
    groups = group_by_type(resources)
    entries = [
        put_entry(r, full_url_base)
        for rtype in sorted(groups, key=type_rank)
        for r in groups[rtype]
    ]
    gone = sorted(set(deletions), key=lambda d: d[1])
    gone.sort(key=lambda d: type_rank(d[0]), reverse=True)  # stable: ids stay ascending
    live = {(t, str(r["id"])) for t, rs in groups.items() for r in rs}
    clash = [d for d in gone if d in live]
    if clash:
        raise ValueError(f"asked to both write and delete {clash[0][0]}/{clash[0][1]}")
    entries.extend(delete_entry(t, i) for t, i in gone)
    return entries


def write_bundles(
    resources: Iterable[Mapping[str, Any]],
    out_dir: Path,
    *,
    bundle_size: int = DEFAULT_BUNDLE_SIZE,
    deletions: Iterable[tuple[str, str]] = (),
    full_url_base: str | None = None,
) -> BundleManifest:
    """Write `out_dir/bundle-0001.json`... and `out_dir/manifest.json`; return the manifest.

    Bundles from an earlier run that this run does not write again are removed.
    """
    if bundle_size < 1:
        raise ValueError(f"bundle size must be at least 1 (got {bundle_size})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deletions = list(deletions)
    entries = plan_entries(resources, deletions, full_url_base=full_url_base)
    infos = []
    for n, start in enumerate(range(0, len(entries), bundle_size), start=1):
        chunk = entries[start : start + bundle_size]
        data = dumps(transaction(chunk)) + b"\n"
        name = f"bundle-{n:04d}.json"
        write_bytes_atomic(out_dir / name, data)
        deletes = sum(1 for e in chunk if e["request"]["method"] == "DELETE")
        infos.append(BundleInfo(name, len(chunk), len(chunk) - deletes, deletes, _sha256(data)))
    _remove_stale(out_dir, {i.file for i in infos})
    manifest = BundleManifest(
        bundles=tuple(infos),
        resources=_count_types(e["resource"]["resourceType"] for e in entries if "resource" in e),
        deletions=_count_types(t for t, _ in set(deletions)),
        sha256=_sha256("".join(i.sha256 for i in infos).encode("ascii")),
    )
    write_bytes_atomic(out_dir / MANIFEST, manifest_bytes(manifest, bundle_size))
    log.info("wrote %d bundles (%d entries) to %s", len(infos), manifest.entries, out_dir)
    return manifest


def manifest_bytes(manifest: BundleManifest, bundle_size: int) -> bytes:
    doc = {
        "format": "imt-etl FHIR transaction bundles, publish in the listed order",
        "bundle_size": bundle_size,
        "bundles": [vars(b) for b in manifest.bundles],
        "entries": manifest.entries,
        "resources": manifest.resources,
        "deletions": manifest.deletions,
        "sha256": manifest.sha256,
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def read_manifest(bundle_dir: Path) -> BundleManifest:
    """The manifest written by `write_bundles` (raises OSError/KeyError/JSONDecodeError)."""
    doc = orjson.loads((Path(bundle_dir) / MANIFEST).read_bytes())
    return BundleManifest(
        bundles=tuple(BundleInfo(**b) for b in doc["bundles"]),
        resources=dict(doc["resources"]),
        deletions=dict(doc["deletions"]),
        sha256=doc["sha256"],
    )


def deletions_since(
    previous_dir: Path, current_resources: Iterable[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """(type, id) of every resource in the previous run's NDJSON folder that is gone now.

    Read the previous folder before the new NDJSON overwrites it. Sorted by type then id;
    `plan_entries` puts them in the order a server needs.
    """
    return deletions_between(read_ids(previous_dir), current_resources)


def deletions_between(
    previous: Mapping[str, set[str]], current_resources: Iterable[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """(type, id) of every previously written resource that is gone now, in server order."""
    current: dict[str, set[str]] = {}
    for r in current_resources:
        current.setdefault(str(r.get("resourceType")), set()).add(str(r.get("id")))
    gone = [
        (rtype, rid)
        for rtype, ids in previous.items()
        for rid in set(ids) - current.get(rtype, set())
    ]
    return sorted(gone, key=lambda d: (type_rank(d[0]), d[1]))


def _count_types(types: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in types:
        counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items()))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    for path in sorted(out_dir.iterdir()):
        if _BUNDLE_NAME.match(path.name) and path.name not in keep:
            log.info("removing stale bundle %s", path)
            path.unlink()
