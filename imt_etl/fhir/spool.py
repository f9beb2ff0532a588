"""FHIR resources serialised batch by batch into sorted runs on disk, merged per type at the end.

A run builds its resources a batch of records at a time and never holds them all: each batch is
serialised at once (one `dumps` per resource, reused by NDJSON and bundles) and written as one
run file per type, sorted by id, of `<id>\t<tag>\t<json>` lines (the tag: the fingerprint of
the resource's record, imt_etl.fhir.reuse). `merged(type)` yields them all in id order:
the order `ndjson.write_ndjson` and `bundles.write_bundles` use, so the files are the same bytes.
The spool folder is scratch: cleared when opened and removed when closed.
"""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from imt_etl.fhir.ndjson import dumps

NO_TAG = b"-"  # a resource of the study, not of a record: built every run


class Spool:
    """Sorted runs of `id<TAB>tag<TAB>json<LF>` lines per resource type in a scratch folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)  # a killed run's leftovers
        self.folder.mkdir(parents=True, mode=0o700)
        self._runs: dict[str, list[Path]] = {}
        self._added = 0

    def add(self, resources: Iterable[Mapping[str, Any]]) -> int:
        """Serialise one batch; a missing type/id or an id twice in the batch raises ValueError."""
        self._added += 1
        runs = self.write_runs(resources, f"a{self._added:05d}")
        self.adopt(runs)
        return sum(count for _, count in runs.values())

    def write_runs(self, resources: Iterable[Mapping[str, Any]], name: str,
                   tag_of: Callable[[Mapping[str, Any]], bytes] | None = None
                   ) -> dict[str, tuple[Path, int]]:
        """Serialise one batch into run files named by `name` (unique per batch) without
        registering them: a worker process writes, the owner `adopt`s. {type: (file, count)}.
        `tag_of` gives each resource's tag (its record's fingerprint, imt_etl.fhir.reuse)."""
        # Each resource becomes its whole line at once, and the lines are sorted as bytes: the
        # order of (id, tag, json) since ids and tags hold no byte below TAB (uuids, hex, "-").
        groups: dict[str, list[bytes]] = {}
        kind, lines = None, []
        for resource in resources:
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if not isinstance(rtype, str) or not rtype or not isinstance(rid, str) or not rid:
                raise ValueError(f"resource without resourceType/id: {str(resource)[:120]}")
            tag = tag_of(resource) if tag_of else NO_TAG
            if rtype != kind:  # a batch's resources come type by type
                kind, lines = rtype, groups.setdefault(rtype, [])
            lines.append(b"%b\t%b\t%b\n" % (rid.encode(), tag, dumps(resource)))
        written = {}
        for rtype, items in groups.items():
            items.sort()
            path = self.folder / f"{rtype}.{name}.run"
            with open(path, "wb") as handle:
                handle.write(b"".join(items))
            written[rtype] = (path, len(items))
        return written

    def adopt(self, runs: Mapping[str, tuple[Path, int]]) -> None:
        """Register run files written by `write_runs` (here or in a worker)."""
        for rtype, (path, _) in runs.items():
            self._runs.setdefault(rtype, []).append(path)

    @property
    def types(self) -> list[str]:
        return sorted(self._runs)

    def merged(self, rtype: str, extra: Iterable[Iterator[bytes]] = ()
               ) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(id, batch tag, line ending in LF) of every resource of a type, ascending id; `extra`
        adds sources of `<id>\t<tag>\t<json>` lines already in id order (the lines a run
        reuses from the previous one).

        The same id in two batches is a builder bug (it would overwrite data on the server).
        """
        handles = [open(p, "rb", buffering=1 << 16) for p in self._runs.get(rtype, [])]  # noqa: SIM115
        try:
            previous = None
            # Whole lines are merged as bytes, split once on the way out: the same order as
            # (id, tag, json) tuples, because ids and tags hold no byte below TAB (FHIR ids are
            # [A-Za-z0-9.-]), and much cheaper than a tuple per line in a 200-way merge.
            for raw in heapq.merge(*handles, *extra):
                rid, tag, line = raw.split(b"\t", 2)
                if rid == previous:
                    raise ValueError(f"duplicate resource id {rtype}/{rid.decode()}")
                previous = rid
                yield rid, tag, line
        finally:
            for handle in handles:
                handle.close()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

