"""NDJSON, transaction bundles and manifest from a `Spool`, without holding the resources.

The files are the same bytes as `ndjson.write_ndjson` + `bundles.write_bundles` over the same
resources (tests/fhir/test_writer.py), built from the spooled lines instead of dicts:
1. per type, in bundle order: merge the sorted runs into `<Type>.ndjson` (one atomic write),
   mark amended Observations against the previous file, and note the ids (for the next run and
   for pass 2); previous ids that no longer occur become DELETEs;
2. bundles: the NDJSON lines wrapped as PUT entries, `bundle_size` per file, then the DELETEs.
At most one temp output file of this writer exists at any time (a bundle is synced and renamed
on a thread while the next is assembled, `_BundleFiles`).
"""

from __future__ import annotations

import logging
import os
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import orjson

from imt_etl.fhir.amend import AmendStream
from imt_etl.fhir.bundles import (
    MANIFEST,
    BundleInfo,
    BundleManifest,
    _remove_stale,
    _sha256,
    full_url,
    manifest_bytes,
    type_rank,
)
from imt_etl.fhir.ndjson import _ndjson_files
from imt_etl.fhir.reuse import PreviousFhir
from imt_etl.fhir.spool import Spool
from imt_etl.io import atomic_writer, stage_bytes, write_bytes_atomic

log = logging.getLogger(__name__)

_BUNDLE_TAIL = b'],"resourceType":"Bundle","type":"transaction"}\n'
_UUID_BYTES = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class SpooledWrite:
    counts: dict[str, int]
    manifest: BundleManifest
    deletions: int
    amended: int


def write_spooled(
    spool: Spool,
    fhir_dir: Path,
    *,
    bundle_size: int,
    previous_ids: Iterable[tuple[str, str]] = (),
    ids_out: Path | None = None,
    full_url_base: str | None = None,
    reuse: PreviousFhir | None = None,
    reused: set[bytes] = frozenset(),
) -> SpooledWrite:
    """Write `fhir_dir/<Type>.ndjson` and `fhir_dir/bundles/`; remove files of earlier runs
    that this run does not write. `previous_ids` must come in bundle order (type rank, then id);
    `ids_out` receives this run's ids in that order ("<Type>\\t<id>\\t<batch>" lines).
    `reuse`: the previous run's lines of the batches `reused` join the spooled ones."""
    if bundle_size < 1:
        raise ValueError(f"bundle size must be at least 1 (got {bundle_size})")
    fhir_dir = Path(fhir_dir)
    reused_types = set(reuse.types) if reuse is not None and reused else set()
    types = sorted(set(spool.types) | reused_types, key=type_rank)
    gone = _Gone(previous_ids)
    amend = AmendStream(fhir_dir / "Observation.ndjson")
    counts: dict[str, int] = {}
    id_files: dict[str, Path] = {}
    ids_path = ids_out or spool.folder / "ids.txt"
    with open(ids_path, "wb", buffering=1 << 20) as all_ids:
        for rtype in types:
            id_files[rtype] = spool.folder / f"{rtype}.ids"
            extra = [reuse.lines(rtype, reused)] if rtype in reused_types else []
            counts[rtype] = _write_type(spool.merged(rtype, extra), rtype, fhir_dir, amend, gone,
                                        all_ids, id_files[rtype])
        all_ids.flush()
        os.fsync(all_ids.fileno())
    for stale in _ndjson_files(fhir_dir):
        if stale.stem not in counts:
            log.info("removing %s: no %s resources in this run", stale, stale.stem)
            stale.unlink()
    deletions = gone.finish()
    manifest = _write_bundles(types, fhir_dir, id_files, counts, deletions, bundle_size,
                              full_url_base)
    log.info("wrote NDJSON and %d bundles to %s: %s", len(manifest.bundles), fhir_dir, counts)
    return SpooledWrite(dict(sorted(counts.items())), manifest, len(deletions), amend.count)


_CHUNK = 1024  # lines handled together: one write per file per chunk, not one per line


def _write_type(merged: Iterator[tuple[bytes, bytes, bytes]], rtype: str, fhir_dir: Path,
                amend: AmendStream, gone: _Gone, all_ids, id_file: Path) -> int:
    count = 0
    prefix = rtype.encode() + b"\t"
    rank = type_rank(rtype)
    with atomic_writer(fhir_dir / f"{rtype}.ndjson") as ndjson, \
            open(id_file, "wb", buffering=1 << 20) as ids:
        while chunk := list(islice(merged, _CHUNK)):
            rids = [rid for rid, _, _ in chunk]
            lines = [line for _, _, line in chunk]
            if rtype == "Observation":
                lines = amend.chunk(rids, lines)
            ndjson.write(b"".join(lines))
            gone.seen(rank, rids)
            ids.write(b"\n".join(rids) + b"\n")
            all_ids.write(b"".join([prefix + rid + b"\t" + tag + b"\n" for rid, tag, _ in chunk]))
            count += len(chunk)
    return count


def _write_bundles(types: list[str], fhir_dir: Path, id_files: dict[str, Path],
                   counts: dict[str, int], deletions: list[tuple[str, str]], bundle_size: int,
                   base: str | None) -> BundleManifest:
    out_dir = fhir_dir / "bundles"
    out_dir.mkdir(parents=True, exist_ok=True)
    infos: list[BundleInfo] = []
    pending: list[bytes] = []
    puts = 0
    with _BundleFiles() as disk:

        def flush(n: int) -> None:
            nonlocal pending, puts
            entries, pending = pending[:n], pending[n:]
            in_bundle = min(n, puts)  # PUTs come before every DELETE: the first ones pending
            puts -= in_bundle
            name = f"bundle-{len(infos) + 1:04d}.json"
            data = b'{"entry":[' + b",".join(entries) + _BUNDLE_TAIL
            disk.write(out_dir / name, data)
            infos.append(BundleInfo(name, n, in_bundle, n - in_bundle, _sha256(data)))

        for entries, are_puts in _entries(types, fhir_dir, id_files, deletions, base):
            pending += entries
            puts += len(entries) if are_puts else 0
            while len(pending) >= bundle_size:
                flush(bundle_size)
        if pending:
            flush(len(pending))
    _remove_stale(out_dir, {i.file for i in infos})
    deleted: dict[str, int] = {}
    for rtype, _ in deletions:
        deleted[rtype] = deleted.get(rtype, 0) + 1
    manifest = BundleManifest(
        bundles=tuple(infos),
        resources={k: v for k, v in sorted(counts.items()) if v},
        deletions=dict(sorted(deleted.items())),
        sha256=_sha256("".join(i.sha256 for i in infos).encode("ascii")),
    )
    write_bytes_atomic(out_dir / MANIFEST, manifest_bytes(manifest, bundle_size))
    return manifest


class _BundleFiles:
    """Atomic writes of the bundle files, one after the other, whose fsync and rename happen on
    a thread while this one assembles the next bundle: the fsync waits for the disk, which the
    merge need not do. The data is written (and its writeback started) here, so the thread
    only makes system calls that release the GIL. One temp file at a time: a bundle's is
    created once the one before is renamed."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-sync")
        self._syncing: Future[Path] | None = None

    def write(self, path: Path, data: bytes) -> None:
        self._wait()  # the previous file is renamed before this one's temp file exists
        self._syncing = self._thread.submit(stage_bytes(path, data).commit)

    def _wait(self) -> None:
        if self._syncing is not None:
            syncing, self._syncing = self._syncing, None
            syncing.result()  # a failed sync or rename is raised here

    def __enter__(self) -> _BundleFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()
        finally:
            self._thread.shutdown()


def _entries(types: list[str], fhir_dir: Path, id_files: dict[str, Path],
             deletions: list[tuple[str, str]], base: str | None
             ) -> Iterator[tuple[list[bytes], bool]]:
    """Bundle entries as JSON bytes (keys sorted, as `ndjson.dumps` would write them), a chunk
    at a time, each with whether its entries are PUTs (else DELETEs)."""
    for rtype in types:
        # Most ids are canonical uuids: their entry head is plain bytes (nothing to escape, and
        # the fullUrl is urn:uuid:<id>, as full_url gives); any other id takes the general path.
        uuid_head = b'{"fullUrl":"urn:uuid:'
        url_head = b'","request":{"method":"PUT","url":"' + rtype.encode() + b"/"
        uuids = base is None
        with open(fhir_dir / f"{rtype}.ndjson", "rb") as ndjson, \
                open(id_files[rtype], "rb") as id_lines:
            while rids := [rid[:-1] for rid in islice(id_lines, _CHUNK)]:
                lines = list(islice(ndjson, len(rids)))
                if len(lines) != len(rids):
                    raise ValueError(f"{rtype}: the NDJSON file and its id list differ in length")
                yield [uuid_head + rid + url_head + rid + b'"},"resource":' + line[:-1] + b"}"
                       if uuids and _UUID_BYTES.fullmatch(rid) else _put(rtype, rid, line, base)
                       for rid, line in zip(rids, lines, strict=True)], True
            if ndjson.readline():
                raise ValueError(f"{rtype}: the NDJSON file and its id list differ in length")
    yield [b'{"request":{"method":"DELETE","url":' + orjson.dumps(f"{rtype}/{rid}") + b"}}"
           for rtype, rid in deletions], False


def _put(rtype: str, rid: bytes, line: bytes, base: str | None) -> bytes:
    """A PUT entry of any id (escaped as JSON) and fullUrl base."""
    text = rid.decode()
    return (b'{"fullUrl":' + orjson.dumps(full_url(rtype, text, base))
            + b',"request":{"method":"PUT","url":' + orjson.dumps(f"{rtype}/{text}")
            + b'},"resource":' + line[:-1] + b"}")


class _Gone:
    """Previous ids (in bundle order) not seen in this run, as DELETEs in server order."""

    def __init__(self, previous: Iterable[tuple[str, str]]):
        self._previous = iter(previous)
        self._ahead: list[tuple[tuple[int, str], bytes, tuple[str, str]]] = []  # read, unmatched
        self._gone: list[tuple[str, str]] = []

    def _read_ahead(self) -> bool:
        self._ahead = [(type_rank(t), i.encode(), (t, i))
                       for t, i in islice(self._previous, _CHUNK)]
        return bool(self._ahead)

    def seen(self, rank: tuple[int, str], rids: list[bytes]) -> None:
        """This run's next ids of one type, ascending (after every id seen before). A previous
        id up to the last of them is gone unless it is one of them."""
        if not rids:
            return
        bound = (rank, rids[-1])
        window = []
        while self._ahead or self._read_ahead():
            cut = bisect_right(self._ahead, bound, key=lambda e: (e[0], e[1]))
            window += self._ahead[:cut]
            del self._ahead[:cut]
            if self._ahead:  # the rest is past the bound
                break
        if window:
            present = set(rids)
            self._gone += [item for r, rid, item in window if r != rank or rid not in present]

    def finish(self) -> list[tuple[str, str]]:
        while self._ahead or self._read_ahead():
            self._gone += [item for _, _, item in self._ahead]
            self._ahead = []
        # DELETEs: referrers first (reverse type order), ids ascending (as bundles.plan_entries)
        gone = sorted(set(self._gone), key=lambda d: d[1])
        gone.sort(key=lambda d: type_rank(d[0]), reverse=True)
        return gone
